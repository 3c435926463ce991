"""The training loop every method plugs into: :func:`train` (claims the run directory, runs the
stages) and :class:`Trainer` (one run), with its devices, optimisers, schedules, evaluation,
metrics, logs and manifest. Tools that use the engine (eval, report, compare, ...) are in
:mod:`tailcon.tools`."""

from ..rundir import RunDir, RunDirError, atomic_write_text, load_checkpoint, save_checkpoint
from .metrics import format_report, shot_accuracy, shot_groups
from .schedule import lr_at_epoch
from .stages import train
from .trainer import NonFiniteLossError, Trainer

__all__ = ["format_report", "shot_accuracy", "shot_groups", "RunDir", "RunDirError", "atomic_write_text",
           "load_checkpoint", "save_checkpoint", "lr_at_epoch", "train", "NonFiniteLossError", "Trainer"]
