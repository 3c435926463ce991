"""Host-side settings that make CPU training faster.

glibc's malloc returns freed memory above a small threshold to the OS and maps it back on the
next allocation; a CPU training step frees and re-allocates the same large activation buffers
every step, so each step pays page faults for all of them (high ``sys`` time). Raising the trim
and mmap thresholds keeps those buffers in the heap: about 15% more images/s for ResNet-32 on
2 cores (docs/benchmarks.md). Process-wide; ``TAILCON_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_host_allocator() -> bool:
    """Apply the thresholds once per process; False where not glibc/Linux or turned off."""
    global _done
    if _done or os.environ.get("TAILCON_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's maximum
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= libc.mallopt(M_TOP_PAD, 256 * 2**20)
    _done = bool(ok)
    return _done
