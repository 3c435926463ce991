"""The base of tailcon's own error types. The command line prints any of them as one line
(``tailcon: error: ...``, exit status 2): their messages name the file, key or value at fault.
Any other exception is a bug, and shows its traceback. (:class:`tailcon.rundir.RunDirError` is one
of them too; it derives from ValueError alone, so that the run directory's module imports nothing
of tailcon's.)"""


class TailconError(Exception):
    """A problem with what the user gave (a config, a file, a run directory), said in words."""
