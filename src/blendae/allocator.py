"""glibc's allocator set to keep freed memory for reuse, for processes that code many batches.

By default glibc maps blocks above a moving threshold (128 KiB at first) straight from the
system and hands freed memory at the top of its heap back once more than twice that
threshold is free. A batch of 64 images through a synthesis transform frees and asks again
for several megabytes per layer, so every batch faulted its buffers in again: 30,000–90,000
page faults per 1,000 decoded 32×32 images (the study's test blends). Fixed thresholds end
that: blocks up to 32 MiB come from the heap, and up to 128 MiB of freed memory is kept
there. On a 2-core machine coding those blends then ran 1.13–1.24× faster
(`benchmarks/allocator.py`), and the peak memory of coding a smooth 2048×2048 image
measured the same. `blendae compress` and `decompress` call it; a program
that codes many batches may call it too. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its moving threshold on 64-bit systems
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory() -> bool:
    """Set glibc's fixed thresholds (process-wide, from now on); False where the C library
    is not glibc or refuses them."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc's names
        return False
    if not libc.startswith("glibc"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (AttributeError, OSError):  # a Python that does not expose it: run as it is
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
