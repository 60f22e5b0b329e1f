"""Upstream: load_data / load_threads (src/data.c) and the data side of train_detector
(src/detector.c): batches of augmented images and truth, prepared ahead by worker threads
(as upstream's pthreads), plus the random=1 multi-scale size schedule.

Threads, not processes, by measurement (benchmarks/loader.py): OpenCV and numpy release the
GIL for the work that costs (decode, resize, warp, colour conversion), so threads load as
fast, start at once, share the image list without copies, and die with the trainer whatever
kills it (worker processes outlived a SIGKILLed trainer, orphaned to init). `kind="process"`
keeps torch DataLoader worker processes for machines where the GIL does limit loading; they
ask to die with their parent (PR_SET_PDEATHSIG), but after a SIGKILL of the trainer its
forkserver was still seen holding the trainer's output pipes, so threads are the default.
"""
from __future__ import annotations

import collections
import ctypes
import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .crand import CRandom, F32
from .detection import SHOW_IMGS_MESSAGE, AugmentOptions, ImageSource, load_batch, normalize
from .labels import Issue

# How many batches each worker keeps ready (torch's prefetch_factor).
DEFAULT_PREFETCH = 2
# Upstream's multi-scale: a new size every 10 iterations, x or / 1.4 by default.
_RESIZE_EVERY = 10
_DEFAULT_RANDOM_COEF = F32(1.4)


class Reporter:
    """Prints each data Issue once to stderr and appends upstream's bad.list /
    bad_label.list lines (relative to the current directory, as upstream)."""

    def __init__(self, bad_list: str | None = "bad.list", bad_label_list: str | None = "bad_label.list"):
        self.bad_list, self.bad_label_list = bad_list, bad_label_list
        self.seen: set = set()
        self.failed: set = set()  # bad.list / bad_label.list that could not be written

    def emit(self, issues) -> None:
        for issue in issues:
            if issue.key in self.seen:
                continue
            self.seen.add(issue.key)
            print(str(issue), file=sys.stderr, flush=True)
            _append_line(self.bad_list, issue.bad_list, self.failed)
            _append_line(self.bad_label_list, issue.bad_label_list, self.failed)


def _append_line(path: str | None, line: str | None, failed: set | None = None) -> None:
    """Append a line; a file that cannot be written is warned about once (when `failed` is
    given: the set of those already warned about) and training goes on."""
    if path and line:
        try:
            with open(path, "a", encoding="utf-8", errors="replace") as f:
                f.write(line + "\n")
        except OSError as e:  # never stop training over a log file
            if failed is None or path not in failed:
                print(f"Warning: {path}: cannot append ({e.strerror or e}); its lines are only printed, "
                      f"training goes on", file=sys.stderr)
            if failed is not None:
                failed.add(path)


class _BatchMaker:
    """What a worker process needs to build a batch (picklable)."""

    def __init__(self, paths, opt: AugmentOptions, show_dir: str | None, uint8: bool = False):
        self.source = ImageSource(paths, opt.channels)
        self.opt, self.show_dir, self.uint8 = opt, show_dir, uint8

    def __call__(self, n: int, w: int, h: int, seed):
        x, truth, issues = load_batch(self.source, self.opt, n, w, h, seed, self.show_dir, self.uint8)
        return torch.from_numpy(x), torch.from_numpy(truth), issues


class _BatchDataset(Dataset):
    """Map-style dataset whose 'index' is a batch request (n, w, h, seed)."""

    def __init__(self, maker: _BatchMaker):
        self.maker = maker

    def __getitem__(self, request):
        return self.maker(*request)


class _Requests:
    """The sampler: an endless stream of batch requests, sizes from sizes_fn (called in
    the main process, in batch order, as batches are queued)."""

    def __init__(self, loader: "BatchLoader", n: int, sizes_fn):
        self.loader, self.n, self.sizes_fn = loader, n, sizes_fn

    def __iter__(self):
        while True:
            yield self.loader._request(self.n, self.sizes_fn)


def _worker_context(method: str):
    """The multiprocessing context for workers. The default, forkserver, forks them from
    a clean server process that has only imported this module: a plain fork would copy
    the parent's OpenCV / OpenMP thread pools in whatever locked state they are in, and
    OpenCV then hangs in the worker."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it dies, however it
    dies (prctl PR_SET_PDEATHSIG). Elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _init_worker(_worker_id: int) -> None:
    # One thread per worker: the workers themselves are the parallelism. The forkserver they
    # are forked from exits when the trainer's end of its pipe closes; they then follow it.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    die_with_parent()


class _ThreadStream:
    """Batches made by `workers` threads, `depth` requests ahead, handed out in request order;
    pin: the images in pinned memory (for one non-blocking copy to a GPU), pinned by the worker
    that made them. The truth stays where it is: the host reads it."""

    def __init__(self, maker, requests, workers: int, depth: int, pin: bool = False):
        self.maker, self.requests, self.pin = maker, iter(requests), pin
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="darknet-loader")
        self.pending: collections.deque = collections.deque()
        self.depth = max(1, depth)

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.pending) < self.depth:
            self.pending.append(self.pool.submit(self._make, *next(self.requests)))
        return self.pending.popleft().result()

    def _make(self, *request):
        x, truth, issues = self.maker(*request)
        return (x.pin_memory() if self.pin else x), truth, issues

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _as_is(batch):
    return batch


class BatchLoader:
    """Batches made by `maker(n, w, h, seed) -> (x, truth, issues)` (picklable), in this thread
    or prepared ahead by worker threads (or processes); issues reported once. The machinery
    DetectionLoader and ClassifierLoader share."""

    def __init__(self, maker, width: int, height: int, *, channels: int = 3, show_imgs: bool = False,
                 show_message: str = SHOW_IMGS_MESSAGE, seed=None, workers: int | None = None,
                 prefetch: int = DEFAULT_PREFETCH, bad_list: str | None = "bad.list",
                 bad_label_list: str | None = "bad_label.list", start_method: str = "forkserver",
                 pin_memory: bool = False, kind: str = "thread"):
        self.width, self.height, self.channels = int(width), int(height), int(channels)
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.start_method, self.pin_memory = start_method, bool(pin_memory)
        if kind not in ("thread", "process"):
            raise ValueError(f"loader kind must be 'thread' or 'process', not {kind!r}")
        self.kind = kind
        self.show_imgs = bool(show_imgs)
        self._show_message = show_message
        self._told_show_imgs = False
        self._maker = maker
        self._seeds = np.random.SeedSequence(seed)
        self._reporter = Reporter(bad_list, bad_label_list)
        self._streams: list = []

    # ------------------------------------------------------------------ loading
    def load(self, n: int, w: int | None = None, h: int | None = None):
        """One batch of n images at w x h (default: the network size), in this process."""
        n, w, h, seed = self._request(n, lambda: (w or self.width, h or self.height))
        x, truth, issues = self._maker(n, w, h, seed)
        self._reporter.emit(issues)
        return x, truth

    def batches(self, n: int, sizes_fn: Callable[[], tuple] | None = None) -> Iterator[tuple]:
        """Endless (x, truth) batches of n images, prepared ahead by the workers (threads, or
        processes with kind="process"; none: in this thread).

        sizes_fn() is called once per batch, in order, when the batch is queued (so a
        few batches ahead of the one being trained on); it returns (w, h), or (w, h, n)
        to change the batch size too. Default: the network size.

        Workers start when the first batch is asked for and stop with close() (or when
        the iterator is dropped). Worker processes re-import the main script as any
        multiprocessing child does, so a training script needs the `if __name__ ==
        "__main__":` guard.
        """
        if self.workers == 0:
            yield from self._batches_here(n, sizes_fn)
            return
        if self.kind == "thread":
            cv2.setNumThreads(1)  # the threads are the parallelism; OpenCV's own pool would compete
            depth = prefetch_depth(self.workers * self.prefetch, n, self.channels, self.width, self.height)
            it = _ThreadStream(self._maker, _Requests(self, n, sizes_fn), self.workers, depth, self.pin_memory)
        else:
            stream = DataLoader(_BatchDataset(self._maker), batch_size=None, sampler=_Requests(self, n, sizes_fn),
                                num_workers=self.workers, prefetch_factor=self.prefetch, collate_fn=_as_is,
                                worker_init_fn=_init_worker, persistent_workers=False, pin_memory=self.pin_memory,
                                multiprocessing_context=_worker_context(self.start_method))
            it = iter(stream)
        self._streams.append(it)
        try:
            for x, truth, issues in it:
                self._reporter.emit(issues)
                yield x, truth
        finally:
            self._shutdown(it)

    def _batches_here(self, n, sizes_fn):
        requests = iter(_Requests(self, n, sizes_fn))
        while True:
            x, truth, issues = self._maker(*next(requests))
            self._reporter.emit(issues)
            yield x, truth

    def _request(self, n: int, sizes_fn) -> tuple:
        size = tuple(sizes_fn()) if sizes_fn is not None else (self.width, self.height)
        w, h = int(size[0]), int(size[1])
        n = int(size[2]) if len(size) > 2 else int(n)
        if w < 1 or h < 1 or n < 1:
            raise ValueError(f"batch of {n} images at {w} x {h}: all must be >= 1")
        if self.show_imgs and not self._told_show_imgs:
            self._told_show_imgs = True  # upstream prints it for every image
            print(self._show_message, flush=True)
        return n, w, h, self._seeds.spawn(1)[0]

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self, it) -> None:
        if it in self._streams:
            self._streams.remove(it)
        stop = getattr(it, "close", None) or getattr(it, "_shutdown_workers", None)
        if stop is not None:
            stop()

    def close(self) -> None:
        """Stop the workers of every open batches() stream."""
        for it in list(self._streams):
            self._shutdown(it)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class DetectionLoader(BatchLoader):
    """Upstream: load_data_detection, OpenCV build: augmented detection batches.

    x: float32 torch tensor (n, channels, h, w), RGB in [0, 1], channels-last in memory (with
    uint8=True: the bytes, value * 255, unless mixup=1); truth: float32 torch tensor (n,
    max_boxes, truth_size), rows x, y, w, h, class, track_id (relative), zero rows after the
    last box. (`.numpy()` gives numpy views of both without a copy.)

    Bad data is reported once on stderr (file and line), upstream's bad.list /
    bad_label.list get a line, and loading goes on; see darknet_py.data.labels.

    Augmentation follows upstream's OpenCV path: jitter crop (and `resize`), letter_box,
    flip, HSV (hue/saturation/exposure), blur, gaussian_noise, mixup (1), mosaic (3,
    with mosaic_bound); cutmix (2, 4) is refused for detectors with upstream's message.
    mixup codes are upstream's net->mixup (see NetOptions.mixup). `track` (dict of
    augment_speed, mini_batch, chunks; loader_from_net fills it for track=1): video sequences
    as upstream's get_sequential_paths, one augmentation per chunk (detection.sequential_paths).

    Deliberate differences from upstream:
    - random numbers come from numpy (seedable), not C's rand();
    - upstream decides "mix this batch or not" once per loading thread (about n/6
      images); here each image decides on its own, with the same probability 1/2;
    - an unreadable image is replaced by another random one (upstream's OpenCV build
      leaves a hole), and bad label lines are skipped one by one (upstream stops
      reading the file); label coordinates must lie in (0, 1].
    """

    def __init__(self, paths, width: int, height: int, channels: int = 3, classes: int | None = None,
                 max_boxes: int = 200, truth_size: int = 6, jitter: float = 0.2, resize: float = 1.0,
                 hue: float = 0.0, saturation: float = 1.0, exposure: float = 1.0, flip: int = 1,
                 blur: int = 0, gaussian_noise: int = 0, mixup: int = 0, letter_box: int = 0,
                 mosaic_bound: int = 0, show_imgs: bool = False, seed=None, workers: int | None = None,
                 prefetch: int = DEFAULT_PREFETCH, bad_list: str | None = "bad.list",
                 bad_label_list: str | None = "bad_label.list", show_dir: str = ".",
                 start_method: str = "forkserver", pin_memory: bool = False, kind: str = "thread",
                 track: dict | None = None, uint8: bool = False):
        if classes is None:
            raise ValueError("DetectionLoader needs classes= (labels are checked against it)")
        opt = normalize(AugmentOptions(
            classes=classes, channels=channels, max_boxes=max_boxes, truth_size=truth_size,
            jitter=jitter, resize=resize, hue=hue, saturation=saturation, exposure=exposure,
            flip=int(flip), blur=int(blur), gaussian_noise=int(gaussian_noise), mixup=int(mixup),
            letter_box=int(letter_box), mosaic_bound=int(mosaic_bound),
            **({"track": 1, "augment_speed": int(track["augment_speed"]),
                "track_mini_batch": int(track["mini_batch"]), "track_chunks": int(track["chunks"])} if track else {})))
        self.options = opt
        super().__init__(_BatchMaker(paths, opt, show_dir if show_imgs else None, uint8), width, height,
                         channels=opt.channels,
                         show_imgs=show_imgs, seed=seed, workers=workers, prefetch=prefetch, bad_list=bad_list,
                         bad_label_list=bad_label_list, start_method=start_method, pin_memory=pin_memory,
                         kind=kind)


def prefetch_depth(wanted: int, n: int, channels: int, width: int, height: int) -> int:
    """How many batches to prepare ahead: `wanted`, but never more than an eighth of the memory
    available now can hold (a batch of 64 images at 896 x 896 is 600 MB; random=1 may make
    them twice that), and at least one."""
    batch_bytes = 2 * 4 * n * channels * width * height  # float32, room for a multi-scale size
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return max(1, wanted)
    return max(1, min(wanted, available // 8 // max(batch_bytes, 1)))


def default_workers() -> int:
    """Workers by default: one per CPU core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


# ---------------------------------------------------------------------- from a network


def last_detection_layer(net):
    """The layer train_detector takes jitter, resize, max_boxes and classes from: the
    last [yolo], [Gaussian_yolo] or [region]."""
    found = [l for l in net.layers if getattr(l, "is_detector_head", False)]
    if not found:
        raise ValueError(f"{getattr(net, 'path', 'the network')}: no [yolo], [Gaussian_yolo] or [region] "
                         "layer, so there is nothing to train a detector with")
    return found[-1]


def loader_from_net(net, paths, classes: int | None = None, show_imgs: bool = False, seed=None,
                    workers: int | None = None, **kwargs) -> DetectionLoader:
    """A DetectionLoader with the arguments train_detector gives load_data: [net] options
    and the last detection layer's jitter, resize, max (max_boxes) and classes.

    Upstream checks labels against the layer's classes, not obj.data's: a different
    `classes` is reported and the layer's value is used. kwargs go to DetectionLoader.
    """
    o, l = net.options, last_detection_layer(net)
    if o.contrastive:
        raise NotImplementedError("contrastive=1 data loading is not implemented")
    if o.track:  # train_detector: a loading thread per sequential subdivision, mini_batch timelines each
        kwargs.setdefault("track", dict(augment_speed=o.augment_speed, mini_batch=o.batch // o.subdivisions,
                                        chunks=o.sequential_subdivisions or o.subdivisions))
    if classes is not None and classes != l.classes:
        print(f"Warning: classes={classes} (data file) but the last [{l.type_name}] layer has "
              f"classes={l.classes}; labels are checked against {l.classes}, as upstream", file=sys.stderr)
    return DetectionLoader(
        paths, width=o.width, height=o.height, channels=o.channels or 3, classes=l.classes,
        max_boxes=l.max_boxes, truth_size=getattr(l, "truth_size", 6), jitter=l.jitter, resize=l.resize,
        hue=o.hue, saturation=o.saturation, exposure=o.exposure, flip=o.flip, blur=o.blur,
        gaussian_noise=o.gaussian_noise, mixup=o.mixup, letter_box=o.letter_box,
        mosaic_bound=o.mosaic_bound, show_imgs=show_imgs, seed=seed, workers=workers, **kwargs)


class MultiScale:
    """Upstream: train_detector's random=1 resizing, as a sizes_fn for batches().

    Every 10th call picks a new size: the network size scaled by rand_scale(coef)
    (coef 1.4 for random=1, else the value of random), rounded as upstream to
    round(s * size / resize_step + 1) * resize_step; a shrink that would not shrink
    keeps the network size. The first call of a run and every call after iteration
    max_batches - 100 use the largest size.
    """

    def __init__(self, width: int, height: int, random: float, resize_step: float = 32,
                 max_batches: int = 0, start_iteration: int = 0, seed=None):
        self.init_w, self.init_h = int(width), int(height)
        self.coef = _DEFAULT_RANDOM_COEF if random == 1.0 else F32(random)
        self.step = F32(resize_step)
        self.max_batches, self.iteration = int(max_batches), int(start_iteration)
        self.count = 0
        self.size = (self.init_w, self.init_h)
        self.rng = CRandom(seed)

    def __call__(self) -> tuple[int, int]:
        if self.count % _RESIZE_EVERY == 0:
            self.size = self._pick(first=self.count == 0)
        self.count += 1
        self.iteration += 1
        return self.size

    def _dims(self, scale) -> tuple[int, int]:
        return tuple(int(_c_round(F32(scale) * F32(s) / self.step + F32(1)) * float(self.step))
                     for s in (self.init_w, self.init_h))

    def _pick(self, first: bool) -> tuple[int, int]:
        scale = self.rng.scale(self.coef)
        w, h = self._dims(scale)
        if scale < 1 and (w > self.init_w or h > self.init_h):
            w, h = self.init_w, self.init_h
        if first or self.iteration > self.max_batches - 100:
            return self.largest()  # the memory check / final statistics
        step = int(self.step)
        return max(w, step), max(h, step)

    def largest(self) -> tuple[int, int]:
        """The largest size (the first iteration's: if it fits in memory, every size does)."""
        w, h = self._dims(self.coef)
        step = int(self.step)
        return max(w, step), max(h, step)


def _c_round(v) -> float:
    """C's roundl: halves away from zero."""
    v = float(v)
    return math.copysign(math.floor(abs(v) + 0.5), v)


def sizes_from_net(net, seed=None, start_iteration: int = 0):
    """MultiScale for a network whose last detection layer has random != 0, else None
    (fixed size)."""
    l = last_detection_layer(net)
    if not l.random:
        return None
    o = net.options
    return MultiScale(o.width, o.height, l.random, o.resize_step, o.max_batches, start_iteration, seed)


__all__ = ["BatchLoader", "DetectionLoader", "loader_from_net", "MultiScale", "sizes_from_net", "Reporter",
           "last_detection_layer", "default_workers", "Issue"]
