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
glibc (and OpenMP, for TRAINING_ENV) read these variables when the process starts, so the program
starts itself again with them (before anything heavy is imported). DARKNET_MALLOC=default, or either variable set by the user,
keeps the user's choice.
"""
from __future__ import annotations

import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
# Training: OpenMP threads that wait by sleeping, not spinning. The loader's threads share the
# cores with torch's, and spinning threads took their time: the near-free loop 100-108 -> 150-170
# images/s on 2 cores (compute-bound steps unchanged within noise). Inference keeps OpenMP's
# default: sleeping costs yolov4-tiny at batch 1 about 15 % (25 -> 21 images/s).
TRAINING_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
_DONE = "DARKNET_MALLOC"


def restart_with_malloc_env(training: bool | None = None) -> None:
    """On Linux, exec this process's command line again (sys.orig_argv: the interpreter's own
    options too) with MALLOC_ENV added, and TRAINING_ENV for a command that trains (training
    None: the word `train` is on the command line), once; else return. The pid stays the same.
    What the user set in the environment is kept."""
    if not sys.platform.startswith("linux") or _DONE in os.environ or any(k in os.environ for k in MALLOC_ENV):
        return
    if training is None:
        training = "train" in sys.orig_argv[1:]
    env = dict(os.environ, **MALLOC_ENV, **{_DONE: "set"})
    if training:
        env = dict(TRAINING_ENV, **env)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
    except OSError:  # cannot exec: run on with glibc's defaults
        return

