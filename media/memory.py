"""Give freed heap memory back to the system now and then.

FFmpeg (PyAV's HLS muxer, the recorder, the bridges) allocates and frees its buffers on the
worker threads, and glibc keeps what a thread's arena freed for reuse instead of returning it, so a
node that starts and ends streams for an hour grows in RSS though nothing leaks: measured in
process, ten 11 s publishes with HLS on took RSS from 58 to 83 MiB, and from 51 to 56 MiB with
`malloc_trim(0)` after each. `malloc_trim` walks every arena and releases the free pages in them.

Trimming alone still left a node growing about 0.8 MiB a publish (8 publishes of the bench stream with
HLS on, trimmed every 5 s: 150 to 156 MiB; Python's own heap flat under tracemalloc). glibc serves a
request of 128 KiB or more with its own mmap, given back when freed, but raises that threshold to
the size of each such block freed, so after a few keyframes and muxer buffers every large buffer
comes from the arenas and fragments them. A fixed threshold (`mallopt(M_MMAP_THRESHOLD)`, which
also turns that raising off) keeps them out: the same 8 publishes stay within 0.7 MiB.
"""
from __future__ import annotations

import ctypes
import ctypes.util


def _libc_function(name: str):
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def fix_mmap_threshold(size: int) -> bool:
    """Blocks of `size` bytes or more get their own mapping, returned to the system when freed
    (glibc's default threshold moves up with what is freed). 0 leaves glibc's default. False where
    the C library has no mallopt or refused the value."""
    if size <= 0 or _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, size))


def release_free_memory() -> bool:
    """Return the heap's free pages to the system (blocking for a few ms: call it off the event loop).
    False where the C library has no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
