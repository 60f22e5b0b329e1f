"""What the training loops do when the machine fails them, so that a run loses nothing.

- The backup folder is tried before the first iteration (fileio.folder_unwritable): a missing
  one is created as before; one that cannot be written stops the run with one line naming it.
- WeightsSaver: every save (NAME_last, NAME_N, NAME_best, NAME_final) is atomic (fileio); a
  failed one (disk full, a file size limit, the folder gone) is one line naming the file and the
  OS error, the previous file stays byte-identical, training goes on and the next save tries
  again. Weights holding NaN/inf are never written over an existing file, so NAME_last.weights
  keeps the last NaN-free weights. `where_good()` says where the last good weights are.
- NanWatch: a NaN/inf loss is said once, with its iteration; training goes on as upstream's does
  (its NaN/inf repairs: the detection deltas zeroed, conv updates reset and weights fixed before
  each update, train/sgd.py).
- out_of_memory_line: a host or GPU allocation failure as one line naming the cfg's batch,
  subdivisions and size and what to change (`stop_on_out_of_memory` around the loop).

Upstream (measured with its binary, README "Reliability"): an unwritable backup folder stops
the run at the first save, an hour in, with "Couldn't open file"; a full disk truncates the
weights it is writing (and the _last it replaces) without a word and exits 0.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import torch


def weights_finite(net) -> bool:
    """True when every array a weights file would hold is free of NaN and inf."""
    flags = [torch.isfinite(t).all() for layer in net.layers for t in layer.weight_arrays() if t.numel()]
    return bool(torch.stack(flags).all()) if flags else True


class WeightsSaver:
    """`saver(path) -> bool`: the trainer's network saved to path, or a line saying why not."""

    def __init__(self, trainer, main_rank: bool = True, err=sys.stderr, start_weights: str | None = None):
        self.trainer, self.main_rank, self.err = trainer, main_rank, err
        self.start_weights = start_weights
        self.good: tuple[str, int] | None = None  # the last NaN-free file written: (path, iteration)
        self._told_nan: set[str] = set()
        self.start_seen = self.done_seen = trainer.net.seen  # images seen at the last completed update

    def completed(self) -> None:
        """The loop's mark after each update: what a save after a failure goes back to."""
        self.done_seen = self.trainer.net.seen

    def after_failure(self, path: str) -> bool:
        """Save `path` after a failure inside an iteration (out of memory): the counter of the last
        completed update (the failed iteration had counted its images already); nothing when no
        iteration completed in this run."""
        if self.done_seen == self.start_seen:
            return False
        self.trainer.net.seen = self.done_seen
        return self(path)

    def __call__(self, path: str, final: bool = False) -> bool:
        """final: the run's last save (no later save will try again)."""
        if not self.main_rank:  # only rank 0 writes files
            return True
        net = self.trainer.net
        it = self.trainer.iteration
        finite = weights_finite(net)
        existed = os.path.exists(path)
        if not finite and existed:
            if path not in self._told_nan:
                self._told_nan.add(path)
                print(f"{path}: not saved at iteration {it}: the weights hold NaN/inf; the file keeps what it "
                      f"held", file=self.err, flush=True)
            return False
        try:
            net.save_weights(path)
        except OSError as e:
            kept = "the previous file is kept as it was" if existed else "no file is left"
            then = "" if final else "; training goes on and the next save tries again"
            print(f"Cannot save weights to {path}: {e.strerror or e} (errno {e.errno}); {kept}{then}",
                  file=self.err, flush=True)
            return False
        if finite:
            self.good = (path, it)
        else:
            print(f"{path}: written with NaN/inf weights (iteration {it}, a new file); {self.where_good()}",
                  file=self.err, flush=True)
        return True

    def where_good(self) -> str:
        if self.good is not None:
            return f"the last good weights are {self.good[0]} (iteration {self.good[1]})"
        if self.start_weights:
            return f"no weights were saved in this run; the last good ones are {self.start_weights}"
        return "no weights were saved in this run"


class NanWatch:
    """Says once that the loss went NaN/inf, and at which iteration."""

    def __init__(self, last: str, err=sys.stderr):
        self.last, self.err = last, err
        self.first: int | None = None

    def check(self, loss: float, iteration: int) -> None:
        if self.first is not None or math.isfinite(loss):
            return
        self.first = iteration
        print(f"\n Warning: loss is {loss} at iteration {iteration} (NaN/inf); training goes on as upstream's "
              f"does (NaN/inf deltas are zeroed, conv weights repaired at each update); weights holding "
              f"NaN/inf are never saved over an existing file, so {self.last} keeps the last NaN-free ones",
              file=self.err, flush=True)


def out_of_memory_kind(e: BaseException) -> str | None:
    """'GPU' or 'host' when `e` is an allocation failure (torch, numpy, OpenCV), else None."""
    if isinstance(e, MemoryError):  # numpy's _ArrayMemoryError too
        return "host"
    text = str(e)
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if isinstance(e, oom) or (isinstance(e, RuntimeError) and "out of memory" in text.lower()):
        return "GPU" if ("CUDA" in text or "GPU" in text or "HIP" in text) else "host"
    if isinstance(e, RuntimeError) and ("can't allocate memory" in text or "Failed to allocate" in text
                                        or "can't start new thread" in text):
        return "host"
    name = type(e).__name__
    if name == "error" and ("Insufficient memory" in text or "Failed to allocate" in text):  # cv2.error
        return "host"
    return None


def out_of_memory_line(kind: str, cfgfile: str, options, width: int, height: int, iteration: int,
                       largest: tuple[int, int] | None = None) -> str:
    """The one line for an allocation failure in `iteration`: the cfg's batch, subdivisions and size, and
    what to change. largest: random=1's largest size (the first iteration runs at it, so memory shows at once)."""
    o = options
    batch = o.mini_batch * o.subdivisions
    size = f"width={o.width} height={o.height}"
    if largest:
        size += f" random (multi-scale, the first iteration at the largest size: {largest[0]} x {largest[1]})"
    more = [f"subdivisions={min(o.subdivisions * 2, batch)}"] if o.subdivisions < batch else []
    more.append("a smaller width/height" + (" or random=0" if largest else ""))
    if kind == "host":
        more.append("fewer loader workers (-workers)")
    return (f"Out of memory ({kind}) in iteration {iteration}, training at {width} x {height}: {cfgfile} has "
            f"batch={batch} subdivisions={o.subdivisions} ({o.mini_batch} images per pass) {size}; "
            f"set {' or '.join(more)}")


@contextlib.contextmanager
def stop_on_out_of_memory(describe, stopped, err=sys.stderr, on_stop=None):
    """An allocation failure in the block: `describe(kind)`'s line on err, `on_stop()` (save what
    can be saved), stopped.code = 1; no traceback. Anything else passes."""
    try:
        yield
    except Exception as e:  # MemoryError, torch's OutOfMemoryError / RuntimeError, cv2.error
        kind = out_of_memory_kind(e)
        if kind is None:
            raise
        del e
        _release_memory()
        sys.stdout.flush()
        print(f"Error: {describe(kind)}", file=err, flush=True)
        if on_stop is not None:
            try:
                on_stop()
            except Exception as e2:
                print(f"Error: cannot save after running out of memory: {e2}", file=err)
        stopped.code = 1


def _release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def backup_problem(backup: str) -> str | None:
    """Why the weights could not be saved in the backup folder (tried before the first
    iteration), or None."""
    from ..outputs.fileio import folder_unwritable

    why = folder_unwritable(backup)
    if why:
        return (f"the backup folder {backup} cannot hold the weights: {why}; set backup= in the data file "
                f"to a folder you can write")
    return None
