"""The command line's process set-up for glibc's allocator (imports nothing heavy: it runs before
torch is loaded).

Training allocates tens of MB of activations every step. By default glibc gives buffers that
large their own mmap and returns them to the kernel when freed, so every step page-faults fresh
zeroed pages, which costs about as much as the step's arithmetic on a small network. With
MALLOC_MMAP_MAX_=0 they come from the heap and are reused, and MALLOC_TRIM_THRESHOLD_ keeps up to
256 MB of freed heap for the next step. On 2 cores: the near-free loop 97-104 -> 133-156
images/s; peak memory of yolov4-tiny batch 64/8 1577-1636 MB by default, 1516-1695 MB with it
(upstream: 1571; torch's transparent huge pages, THP_MEM_ALLOC_ENABLE=1, gave 0.13 s steps but
1990-2070 MB).
glibc reads these variables when the process starts, so the program starts itself again with them
(before anything heavy is imported). DARKNET_MALLOC=default, or either variable set by the user,
keeps the user's choice.
"""
from __future__ import annotations

import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
_DONE = "DARKNET_MALLOC"


def restart_with_malloc_env() -> None:
    """On Linux, exec this process's command line again (sys.orig_argv: the interpreter's own
    options too) with MALLOC_ENV added, once; else return. The pid stays the same."""
    if not sys.platform.startswith("linux") or _DONE in os.environ or any(k in os.environ for k in MALLOC_ENV):
        return
    env = dict(os.environ, **MALLOC_ENV, **{_DONE: "set"})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
    except OSError:  # cannot exec: run on with glibc's defaults
        return

