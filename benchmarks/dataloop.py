#!/usr/bin/env python3
"""The data-bound training loop: darknet_py and upstream's binary side by side, in one run.

    .venv/bin/python benchmarks/dataloop.py [--upstream /work/upstream/build-cv/darknet] [--iters 40]
        [--cases near_free,pool_only] [--images 256] [--workers N] [--skip-profile] [--skip-memory]
        [--memory-iters 3]

Two near-free networks (a 3x3 convolution of 8 filters, or none, a 16x16 max-pool, a 1x1
convolution of 255 filters, a yolov4-tiny [yolo]) at batch=32 416x416 with mosaic, jitter .3,
hue .1, saturation and exposure 1.5: the step costs next to nothing, so a `detector train` run
goes as fast as its data loading. On 256 generated 640x480 JPEGs (80 classes) it measures:

- `cases.*.upstream` / `cases.*.darknet_py`: whole `detector train ... -dont_show` runs; images/s
  from the moments the iteration lines arrive on the pipe (the first `--warmup` iterations are
  skipped: images between the first counted line and the last / the time between them), the
  mean printed "Loaded:" seconds and the median printed step seconds; `ratio` is
  darknet_py / upstream. Upstream is the binary given by --upstream (skipped without it); the
  OpenCV build is the one to compare with (what users train with; our augmentation follows it).
- `cases.*.loader`: darknet_py's loader alone (loader_from_net(...).batches(32), default
  workers), images/s after the first batch; `loop_of_loader` is the loop's rate over it.
- `cases.*.profile`: the same loop in this process (train_detector) with timing wrappers
  around the data and training functions: per stage, seconds per batch (thread CPU time summed
  over the threads that ran it; wall time for the main thread's stages) and its share (of the
  loader threads' CPU time, or of the loop's wall time). Functions missing from this version
  of darknet_py are listed under `not_profiled`.
- `memory`: peak resident memory (os.wait4's ru_maxrss) of a whole `detector train` of
  yolov4-tiny at 416, batch=64 subdivisions=8, a few iterations, for darknet_py and
  upstream, and darknet_py's fixed cost: a python that imports torch, cv2, numpy and
  darknet_py.network.

Prints one JSON object on stdout and a short summary on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import run_stamped  # noqa: E402
from loader import stream_rate  # noqa: E402
from train import bench_cfg, make_dataset  # noqa: E402

BATCH = 32
NET = """[net]
batch=32
subdivisions=1
width=416
height=416
channels=3
momentum=0.9
decay=0.0005
hue=.1
saturation=1.5
exposure=1.5
learning_rate=0.001
burn_in=1
max_batches={max_batches}
policy=steps
steps=100000
scales=.1
mosaic=1
"""
CONV8 = """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
"""
HEAD = """
[maxpool]
size=16
stride=16

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask = 0,1,2
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6
jitter=.3
scale_x_y = 1.05
cls_normalizer=1.0
iou_normalizer=0.07
iou_loss=ciou
ignore_thresh = .7
truth_thresh = 1
random=0
resize=1.5
nms_kind=greedynms
beta_nms=0.6
"""
CASES = {"near_free": NET + CONV8 + HEAD, "pool_only": NET + HEAD}


def _env() -> dict:
    """The children's environment without the process set-up this benchmark's own process got
    (darknet_py/hostmem.py): upstream runs with its defaults, darknet.py makes its own."""
    from darknet_py.hostmem import MALLOC_ENV, TRAINING_ENV

    ours = dict(MALLOC_ENV, DARKNET_MALLOC="set", **TRAINING_ENV)
    env = {k: v for k, v in os.environ.items() if ours.get(k) != v}
    return dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


# ------------------------------------------------------------------ whole detector train runs
def loop_rate(cmd: list[str], d: Path, cfg: str, warmup: int, extra=()) -> dict:
    """One `detector train` run of `cmd` on cfg in d: images/s from the iteration lines' arrival."""
    r = run_stamped(cmd + ["detector", "train", "obj.data", cfg, "-dont_show", *extra], d, _env())
    its = r["iterations"]
    out = {"rc": r["rc"], "iterations": len(its), "wall_s": round(r["wall_s"], 2),
           "peak_rss_mb": round(r["peak_rss_mb"], 1)}
    if r["rc"] != 0 or len(its) < 2:
        out["error"] = "\n".join(r["tail"][-12:])
        return out
    k = min(warmup, len(its) - 2)
    (_, t0, _, n0), (_, t1, _, n1) = its[k], its[-1]
    loads = r["loaded_s"][k + 1:] or r["loaded_s"]
    rate = (n1 - n0) / (t1 - t0)
    out.update({"images_per_s": round(rate, 2), "s_per_iteration": round((n1 - n0) / len(its[k + 1:]) / rate, 4),
                "counted_iterations": len(its) - 1 - k,
                "loaded_s_mean": round(statistics.mean(loads), 4) if loads else None,
                "step_s_median": round(statistics.median(s for _, _, s, _ in its[k + 1:]), 4)})
    return out


def write_cfg(d: Path, name: str, max_batches: int) -> str:
    (d / f"{name}.cfg").write_text(CASES[name].format(max_batches=max_batches))
    return f"{name}.cfg"


# ------------------------------------------------------------------ the loader alone
def loader_rate(d: Path, cfg: str, workers: int | None, batches: int = 24) -> dict:
    """The loader as `detector train` makes it (byte batches, uint8=True), alone."""
    from darknet_py.data import default_workers, loader_from_net, read_list
    from darknet_py.network import build_network

    with contextlib.redirect_stderr(open(os.devnull, "w")):
        net = build_network(str(d / cfg), train=True)
    paths = read_list(str(d / "train.txt"))
    w = default_workers() if workers is None else workers
    loader = loader_from_net(net, paths, 80, workers=w, seed=0, bad_list=None, bad_label_list=None, uint8=True)
    return {"workers": w, "batches": batches, **stream_rate(loader, BATCH, batches)}


# ------------------------------------------------------------------ profile by stage
# (stage, side, module, attribute): side "loader" stages run in the loader's threads (thread CPU
# time is what counts), "main" stages in the training thread (wall time). Times are exclusive:
# a wrapped function called inside another counts for its own stage only.
STAGES = [
    ("decode", "loader", "darknet_py.data.augment", "read_image"),
    ("decode", "loader", "darknet_py.data.augment", "read_image_bgr"),
    ("augment", "loader", "darknet_py.data.augment", "render"),
    ("augment", "loader", "darknet_py.data.augment", "crop_and_resize"),
    ("augment", "loader", "darknet_py.data.augment", "distort_color"),
    ("augment", "loader", "darknet_py.data.augment", "apply_blur"),
    ("augment", "loader", "darknet_py.data.augment", "add_gaussian_noise"),
    ("augment", "loader", "darknet_py.data.augment", "blend_images"),
    ("truth", "loader", "darknet_py.data.labels", "image_to_label_path"),
    ("truth", "loader", "darknet_py.data.labels", "read_labels"),
    ("truth", "loader", "darknet_py.data.labels", "cached_labels"),
    ("truth", "loader", "darknet_py.data.truth", "fill_truth_detection"),
    ("truth", "loader", "darknet_py.data.truth", "blend_truth"),
    ("truth", "loader", "darknet_py.data.truth", "blend_truth_mosaic"),
    ("copies", "loader", "darknet_py.data.augment", "to_planar"),
    ("copies", "loader", "darknet_py.data.augment", "to_float_into"),
    # the rest of a batch: random draws, offsets, the batch arrays, handing it over
    ("loader_other", "loader", "darknet_py.data.detection", "load_batch"),
    ("loader_other", "loader", "darknet_py.data.detection", "load_sample"),
    ("loader_other", "loader", "darknet_py.data.detection", "load_piece"),
    ("loader_other", "loader", "darknet_py.data.detection", "_sample"),
    ("loader_other", "loader", "darknet_py.data.loader", "_BatchMaker.__call__"),
    ("loader_other", "loader", "darknet_py.data.loader", "_ThreadStream._make"),
    # the training thread
    ("wait_for_batch", "main", "darknet_py.data.loader", "_ThreadStream.__next__"),
    ("forward", "main", "darknet_py.network", "Network.forward_train"),
    ("delta", "main", "darknet_py.layers.yolo.layer", "Yolo.loss"),
    ("backward", "main", "torch.autograd", "backward"),
    ("update", "main", "darknet_py.train.sgd", "UpstreamSGD.step"),
    # train_batch less the stages inside it: torch.as_tensor, the NHWC copy, counters
    ("copies_main", "main", "darknet_py.train.loop", "Trainer.train_batch"),
    ("copies_main", "main", "darknet_py.train.loop", "Trainer.network_input"),
    ("bookkeeping", "main", "darknet_py.train.loop", "forward_backward"),
    ("bookkeeping", "main", "darknet_py.train.loop", "train_detector"),
    ("save", "main", "darknet_py.train.faults", "WeightsSaver.__call__"),
]


class Profiler:
    """Exclusive wall and thread-CPU time per (stage, side), per thread stacks; reset() starts
    the count again (frames open in other threads at that moment are dropped when they end)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.local = threading.local()
        self.generation = 0
        self.totals: dict = {}
        self.calls: dict = {}

    def _stack(self) -> list:
        s = getattr(self.local, "stack", None)
        if s is None:
            s = self.local.stack = []
        return s

    def wrap(self, key, fn):
        prof = self

        def wrapper(*args, **kwargs):
            stack = prof._stack()
            frame = [time.perf_counter_ns(), time.thread_time_ns(), 0, 0, prof.generation]
            stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                wall, cpu = time.perf_counter_ns() - frame[0], time.thread_time_ns() - frame[1]
                if frame[4] == prof.generation:
                    with prof.lock:
                        t = prof.totals.setdefault(key, [0, 0])
                        t[0] += wall - frame[2]
                        t[1] += cpu - frame[3]
                        prof.calls[key] = prof.calls.get(key, 0) + 1
                    if stack:
                        stack[-1][2] += wall
                        stack[-1][3] += cpu

        wrapper.__wrapped__ = fn
        wrapper.__name__ = getattr(fn, "__name__", "wrapped")
        return wrapper

    def reset(self) -> None:
        """Called from the main thread: its open frames restart now, other threads' are dropped."""
        with self.lock:
            self.generation += 1
            self.totals.clear()
            self.calls.clear()
        now, cpu = time.perf_counter_ns(), time.thread_time_ns()
        for frame in self._stack():
            frame[:] = [now, cpu, 0, 0, self.generation]


def install(prof: Profiler, stages) -> tuple[list, list]:
    """Wrap each (stage, side, module, attribute) found: the attribute of a class, or a module
    function together with every darknet_py module's name bound to that same function (names
    imported with `from .x import f`). Returns (undo list, entries not found)."""
    undo, missing = [], []
    for stage, side, modname, attr in stages:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            missing.append(f"{modname}.{attr}")
            continue
        owner_name, _, name = attr.rpartition(".")
        owner = getattr(mod, owner_name, None) if owner_name else mod
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is None:
            missing.append(f"{modname}.{attr}")
            continue
        if owner_name:  # a method: the class attribute is where every call looks
            raw = owner.__dict__.get(name, fn)
            wrapped = prof.wrap((stage, side), raw)
            setattr(owner, name, wrapped)
            undo.append((owner, name, raw))
            continue
        wrapped = prof.wrap((stage, side), fn)
        holders = [mod] + [m for n, m in list(sys.modules.items())
                           if m is not None and m is not mod and n.startswith("darknet_py")
                           and getattr(m, name, None) is fn]
        for m in holders:
            setattr(m, name, wrapped)
            undo.append((m, name, fn))
    return undo, missing


def profile_loop(d: Path, cfg: str, workers: int | None, warmup: int) -> dict:
    """train_detector in this process with the wrappers in place; counts restart at iteration `warmup`."""
    import darknet_py.data  # noqa: F401  (every module the table names, before looking names up)
    import darknet_py.layers.yolo.layer  # noqa: F401
    import darknet_py.train.faults  # noqa: F401
    import darknet_py.train.sgd  # noqa: F401
    from darknet_py.train import loop

    prof = Profiler()
    undo, missing = install(prof, STAGES)
    state = {"batches": 0, "t0": None, "t_end": None}
    Trainer = loop.Trainer
    counted = Trainer.train_batch

    def train_batch(self, *args, **kwargs):
        if self.iteration == warmup:
            prof.reset()
            state["t0"] = time.perf_counter()
        if state["t0"] is None:
            return counted(self, *args, **kwargs)
        state["batches"] += 1
        try:
            return counted(self, *args, **kwargs)
        finally:
            state["t_end"] = time.perf_counter()

    Trainer.train_batch = train_batch
    cwd = os.getcwd()
    devnull = open(os.devnull, "w")
    try:
        os.chdir(d)
        with contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
            rc = loop.train_detector("obj.data", cfg, None, dont_show=True, workers=workers, out=devnull,
                                     err=devnull)
        # up to the end of the last step (the final save and the shutdown are not counted)
        wall = state["t_end"] - state["t0"] if state["t0"] is not None else None
    finally:
        os.chdir(cwd)
        Trainer.train_batch = counted
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)
        devnull.close()
    n = state["batches"]
    if rc != 0 or not n or wall is None:
        return {"error": f"train_detector returned {rc} after {n} counted batches", "not_profiled": missing}
    sides = {"loader": sum(v[1] for (_, side), v in prof.totals.items() if side == "loader")}
    stages = {}
    for (stage, side), (w, c) in sorted(prof.totals.items(), key=lambda kv: (kv[0][1], -kv[1][0])):
        s = {"side": side, "calls_per_batch": round(prof.calls[(stage, side)] / n, 1)}
        if side == "loader":
            s.update(cpu_s_per_batch=round(c / 1e9 / n, 4), share=round(c / max(sides["loader"], 1), 3))
        else:
            s.update(wall_s_per_batch=round(w / 1e9 / n, 4), cpu_s_per_batch=round(c / 1e9 / n, 4),
                     share=round(w / 1e9 / wall, 3))
        stages[stage] = s
    return {"counted_batches": n, "images_per_s": round(n * BATCH / wall, 2),
            "loop_wall_s_per_batch": round(wall / n, 4),
            "loader_cpu_s_per_batch": round(sides["loader"] / 1e9 / n, 4),
            "stages": stages, "not_profiled": missing,
            "note": "loader stages: thread CPU summed over the loader threads, share of their total; "
                    "main stages: wall time of the training thread, share of the loop's wall time "
                    "(with the wrappers' own cost)"}


# ------------------------------------------------------------------ memory
def memory(d: Path, upstream: str | None, iters: int) -> dict:
    cfg = bench_cfg("yolov4-tiny", 416, 64, 80, iters)
    cfg = re.sub(r"(?m)^subdivisions=.*$", "subdivisions=8", cfg, count=1)
    (d / "yolov4-tiny-mem.cfg").write_text(cfg)
    args = ["detector", "train", "obj.data", "yolov4-tiny-mem.cfg", "-dont_show"]
    out = {"cfg": "cfg/yolov4-tiny.cfg, 416x416, batch=64 subdivisions=8, classes=80", "max_batches": iters}
    fixed = run_stamped([sys.executable, "-c", "import torch, cv2, numpy; import darknet_py.network"], d, _env())
    out["darknet_py_import_mb"] = round(fixed["peak_rss_mb"], 1)
    runs = {"darknet_py": [sys.executable, str(ROOT / "darknet.py")]}
    if upstream:
        runs["upstream"] = [upstream]
    for name, cmd in runs.items():
        r = run_stamped(cmd + args, d, _env())
        out[name] = {"rc": r["rc"], "iterations": len(r["iterations"]), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                     "wall_s": round(r["wall_s"], 1)}
        if r["rc"] != 0:
            out[name]["error"] = "\n".join(r["tail"][-12:])
    ours = out["darknet_py"]["peak_rss_mb"]
    if out["darknet_py"]["rc"] == 0:
        out["darknet_py_less_import_mb"] = round(ours - out["darknet_py_import_mb"], 1)
        if upstream and out["upstream"]["rc"] == 0:
            out["difference_mb"] = round(ours - out["upstream"]["peak_rss_mb"], 1)
    return out


# ------------------------------------------------------------------ main
def main() -> None:
    # the in-process profile trains with the process set-up of the command line (darknet_py/hostmem.py)
    from darknet_py.hostmem import restart_with_malloc_env

    restart_with_malloc_env(training=True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", help="upstream's darknet binary (the OpenCV build: /work/upstream/build-cv/darknet)")
    ap.add_argument("--iters", type=int, default=40, help="iterations of each whole run (max_batches)")
    ap.add_argument("--warmup", type=int, default=5, help="iterations not counted at the start of each run")
    ap.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    ap.add_argument("--images", type=int, default=256, help="generated 640x480 JPEGs")
    ap.add_argument("--workers", type=int, default=None,
                    help="darknet_py's loader threads (-workers; default: its own, one per core up to 8)")
    ap.add_argument("--skip-profile", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-iters", type=int, default=3, help="max_batches of the memory runs")
    a = ap.parse_args()
    cases = [c for c in a.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {', '.join(bad)}; known: {', '.join(CASES)}")
    upstream, note = None, None
    if a.upstream and Path(a.upstream).is_file() and os.access(a.upstream, os.X_OK):
        upstream = str(Path(a.upstream).resolve())
    else:
        note = f"upstream skipped: {a.upstream} is not an executable file" if a.upstream else \
            "upstream skipped: no --upstream given"
    import cv2
    import torch

    result = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__,
              "batch": BATCH, "size": 416, "images": a.images, "iters": a.iters, "warmup": a.warmup,
              "upstream": upstream, "cases": {}}
    if note:
        result["note"] = note
    ours = [sys.executable, str(ROOT / "darknet.py")]
    flags = ["-workers", str(a.workers)] if a.workers is not None else []
    with tempfile.TemporaryDirectory(prefix="dataloop-") as tmp:
        d = Path(tmp)
        make_dataset(d, CASES["near_free"].format(max_batches=a.iters), 80, a.images)
        for case in cases:
            cfg = write_cfg(d, case, a.iters)
            r = {}
            if upstream:
                r["upstream"] = loop_rate([upstream], d, cfg, a.warmup)
            r["darknet_py"] = loop_rate(ours, d, cfg, a.warmup, flags)
            up_rate, our_rate = r.get("upstream", {}).get("images_per_s"), r["darknet_py"].get("images_per_s")
            if up_rate and our_rate:
                r["ratio"] = round(our_rate / up_rate, 3)
            r["loader"] = loader_rate(d, cfg, a.workers)
            if our_rate:
                r["loop_of_loader"] = round(our_rate / r["loader"]["images_per_s"], 3)
            if not a.skip_profile:
                r["profile"] = profile_loop(d, cfg, a.workers, a.warmup)
            result["cases"][case] = r
            summary(case, r)
        if not a.skip_memory:
            result["memory"] = memory(d, upstream, a.memory_iters)
            m = result["memory"]
            print(f"memory: darknet_py {m['darknet_py']['peak_rss_mb']} MB, upstream "
                  f"{m.get('upstream', {}).get('peak_rss_mb')} MB, imports alone {m['darknet_py_import_mb']} MB",
                  file=sys.stderr)
    print(json.dumps(result, indent=1))


def summary(case: str, r: dict) -> None:
    up, ours = r.get("upstream", {}), r["darknet_py"]
    line = f"{case}: darknet_py {ours.get('images_per_s')} img/s"
    if up.get("images_per_s"):
        line += f", upstream {up['images_per_s']} img/s, ratio {r.get('ratio')}"
    elif up:
        line += f", upstream failed (rc {up['rc']}: {up.get('error', '').splitlines()[-1:]})"
    line += f"; loader alone {r['loader']['images_per_s']} img/s"
    print(line, file=sys.stderr)
    p = r.get("profile", {})
    if "stages" in p:
        print("  " + ", ".join(f"{k} {v.get('wall_s_per_batch', v['cpu_s_per_batch'])}s"
                               for k, v in p["stages"].items()), file=sys.stderr)


if __name__ == "__main__":
    main()
