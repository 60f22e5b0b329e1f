#!/usr/bin/env python3
"""Training speed of darknet_py on this machine, as ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/train.py [--cfg yolov4-tiny] [--size 416] [--batch 8] [--iters 4]
        [--flavors cudnn,cpu] [--device cpu|cuda] [--upstream PATH/TO/darknet] [--wall] [--threads N]

Prints one JSON object:

- `step`: for each flavor, images/s of upstream's training step (forward, yolo deltas,
  backward, update; one mini-batch of `batch` images on a synthetic batch, random weights),
  the median of `iters` steps after a warm-up, and the GFLOP/s that makes;
- `sgemm`: the rate of a large float32 matrix product (2048^3) here, and the images/s a step
  would reach if every FLOP ran at that rate (3x the forward FLOPs per image: forward, and the
  two backward products); `step.*.of_sgemm_bound` is the step's share of that;
- `bare`: plain PyTorch forward + backward of the same convolutions (F.conv2d + leaky_relu
  on inputs of each layer's shape), no darknet logic: what the convolutions themselves cost;
- `wall` (--wall): whole `detector train` processes on a generated dataset (augmentation on
  as the cfg says: jitter, hue, saturation, exposure, flip; the loader as users run it),
  images/s from the difference of a long and a short run (start-up cancels out), and the
  loader's share (the per-iteration "Loaded" time);
- `upstream` (--upstream BINARY): the same whole runs with upstream's darknet binary on the
  same cfg and data, its step (the seconds it prints per iteration) and the ratios.

Peak RSS of this process is reported too.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import ITERATION_LINE, LOADED_LINE  # noqa: E402


def synthetic_batch(n: int, size: int, max_boxes: int, classes: int, rng: np.random.Generator):
    x = rng.random((n, 3, size, size), dtype=np.float32)
    truth = np.zeros((n, max_boxes, 6), np.float32)
    for i in range(n):
        k = rng.integers(1, 8)
        truth[i, :k, 0:2] = rng.uniform(0.1, 0.9, (k, 2))
        truth[i, :k, 2:4] = rng.uniform(0.05, 0.5, (k, 2))
        truth[i, :k, 4] = rng.integers(0, classes, k)
    return x, truth


def bench_cfg(name: str, size: int, batch: int, classes: int, max_batches: int) -> str:
    """The stock cfg with batch = mini-batch = `batch`, size x size, `classes` classes, no
    burn-in wait, max_batches as given."""
    text = (ROOT / "cfg" / f"{name}.cfg").read_text()
    net = {"batch": batch, "subdivisions": 1, "width": size, "height": size, "max_batches": max_batches,
           "burn_in": 1}
    for key, value in net.items():
        text = re.sub(rf"(?m)^\s*{key}\s*=.*$", f"{key}={value}", text, count=1)
    text = re.sub(r"(?m)^\s*classes\s*=.*$", f"classes={classes}", text)
    # the convolution before each [yolo] has (classes + 5) * anchors filters
    blocks = re.split(r"(?m)^(?=\[)", text)
    for i, b in enumerate(blocks):
        if b.startswith("[yolo]"):
            mask = re.search(r"(?m)^\s*mask\s*=(.*)$", b)
            n = len(mask.group(1).split(",")) if mask else 3
            j = max(k for k in range(i) if blocks[k].startswith("[convolutional]"))
            blocks[j] = re.sub(r"(?m)^\s*filters\s*=.*$", f"filters={(classes + 5) * n}", blocks[j])
    return "".join(blocks)


def build(cfg_text: str):
    from darknet_py.cfg import parse_cfg_text
    from darknet_py.network import Network

    with contextlib.redirect_stderr(io.StringIO()):
        return Network(parse_cfg_text(cfg_text, "bench.cfg"), "bench.cfg", train=True)


def sgemm_rate(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    a @ b
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(cfg_text: str, flavor: str, batch: int, size: int, classes: int, iters: int, device,
              channels_last: bool | None = None) -> dict:
    from darknet_py.train import loop

    net = build(cfg_text)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    net.train_flavor = flavor
    trainer = loop.Trainer(net, device)
    if channels_last is not None:
        trainer.channels_last = channels_last
    max_boxes = max(getattr(l, "max_boxes", 0) for l in net.layers) or 90
    x, truth = synthetic_batch(batch, size, max_boxes, classes, np.random.default_rng(0))
    devnull = open(os.devnull, "w")
    times = []
    for i in range(iters + 1):
        _sync(device)
        t = time.perf_counter()
        trainer.train_batch(x, truth, err=devnull)
        _sync(device)
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    return {"images_per_s": round(batch / sec, 3), "s_per_step": round(sec, 4),
            "s_per_step_all": [round(t, 3) for t in times]}


def bare_rate(cfg_text: str, batch: int, iters: int, device) -> float:
    """images/s of F.conv2d + leaky forward and backward of every convolution, nothing else."""
    net = build(cfg_text).to(device)
    convs = [l for l in net.layers if l.type_name == "convolutional"]
    ins = [torch.rand(batch, l.c, l.h, l.w, requires_grad=True, device=device) for l in convs]

    def once():
        loss = 0
        for l, xi in zip(convs, ins):
            y = torch.nn.functional.conv2d(xi, l.weights, l.biases, (l.stride_y, l.stride_x), l.pad, l.dilation,
                                           l.groups)
            loss = loss + torch.nn.functional.leaky_relu(y, 0.1).mean()
        loss.backward()

    once()
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


# ------------------------------------------------------------------ whole detector train runs
def make_dataset(d: Path, cfg_text: str, classes: int, images: int) -> None:
    from loader import make_images

    paths = make_images(d, images)
    for p in paths:  # make_images labels 80 classes
        txt = Path(p).with_suffix(".txt")
        lines = [f"{int(l.split()[0]) % classes} {' '.join(l.split()[1:])}" for l in txt.read_text().splitlines()]
        txt.write_text("\n".join(lines) + "\n")
    (d / "train.txt").write_text("\n".join(paths) + "\n")
    (d / "obj.names").write_text("".join(f"c{i}\n" for i in range(classes)))
    (d / "obj.data").write_text(f"classes={classes}\ntrain=train.txt\nvalid=train.txt\nnames=obj.names\n"
                                f"backup=backup/\n")
    (d / "bench.cfg").write_text(cfg_text)
    (d / "backup").mkdir(exist_ok=True)


def run_train(cmd: list[str], d: Path, iterations: int) -> dict:
    cfg = (d / "bench.cfg").read_text()
    (d / "bench.cfg").write_text(re.sub(r"(?m)^max_batches=.*$", f"max_batches={iterations}", cfg))
    shutil.rmtree(d / "backup", ignore_errors=True)
    (d / "backup").mkdir()
    t = time.perf_counter()
    r = subprocess.run(cmd + ["detector", "train", "obj.data", "bench.cfg", "-dont_show"], cwd=d,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {out[-1500:]}")
    lines = out.splitlines()
    steps = [float(m.group(5)) for m in map(ITERATION_LINE.match, lines) if m]
    loads = [float(m.group(1)) for m in map(LOADED_LINE.match, lines) if m]
    return {"wall_s": wall, "step_s": steps, "load_s": loads}


def wall_rates(cmd: list[str], d: Path, batch: int, short: int, long: int) -> dict:
    a, b = run_train(cmd, d, short), run_train(cmd, d, long)
    per_iteration = (b["wall_s"] - a["wall_s"]) / (long - short)
    tail = b["step_s"][short:] or b["step_s"]
    loads = b["load_s"][short:] or b["load_s"]
    return {"images_per_s": round(batch / per_iteration, 3), "s_per_iteration": round(per_iteration, 4),
            "printed_step_s_median": round(statistics.median(tail), 4),
            "step_images_per_s": round(batch / statistics.median(tail), 3),
            "loaded_s_mean": round(statistics.mean(loads), 4) if loads else None,
            "runs": {"short": [short, round(a["wall_s"], 2)], "long": [long, round(b["wall_s"], 2)]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default="yolov4-tiny")
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--flavors", default="cudnn,cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-format", default="default", choices=("default", "nchw", "nhwc", "both"),
                    help="the step's memory format (default: the Trainer's choice, NHWC on the CPU)")
    ap.add_argument("--wall", action="store_true", help="also time whole detector train runs")
    ap.add_argument("--upstream", help="upstream's darknet binary: time its whole runs on the same cfg and data")
    ap.add_argument("--short", type=int, default=4, help="iterations of the short whole run")
    ap.add_argument("--long", type=int, default=20, help="iterations of the long whole run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cfg_text = bench_cfg(a.cfg, a.size, a.batch, a.classes, 100)
    net = build(cfg_text)
    gflop = 3 * sum(l.bflops for l in net.layers)  # per image: forward + two backward products
    sgemm = sgemm_rate(device)
    out = {"cfg": a.cfg, "size": a.size, "batch": a.batch, "classes": a.classes, "device": str(device),
           "threads": a.threads, "train_gflop_per_image": round(gflop, 3),
           "sgemm": {"gflops": round(sgemm, 1), "bound_images_per_s": round(sgemm / gflop, 3)}, "step": {}}
    formats = {"default": None} if a.memory_format == "default" else \
        {f: f == "nhwc" for f in (("nchw", "nhwc") if a.memory_format == "both" else (a.memory_format,))}
    for flavor in a.flavors.split(","):
        for fmt, cl in formats.items():
            r = step_rate(cfg_text, flavor, a.batch, a.size, a.classes, a.iters, device, cl)
            r["gflops"] = round(r["images_per_s"] * gflop, 1)
            r["of_sgemm_bound"] = round(r["images_per_s"] * gflop / sgemm, 3)
            out["step"][flavor if fmt == "default" else f"{flavor}-{fmt}"] = r
    bare = bare_rate(cfg_text, a.batch, a.iters, device)
    out["bare"] = {"images_per_s": round(bare, 3), "of_sgemm_bound": round(bare * gflop / sgemm, 3)}
    if a.wall or a.upstream:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            make_dataset(d, cfg_text, a.classes, 32)
            if a.wall:
                out["wall"] = wall_rates([sys.executable, str(ROOT / "darknet.py")], d, a.batch, a.short, a.long)
            if a.upstream:
                up = wall_rates([str(Path(a.upstream).resolve())], d, a.batch, a.short, a.long)
                out["upstream"] = up
                ratios = {f"step_{f}_vs_upstream_step": round(out["step"][f]["images_per_s"] / up["step_images_per_s"], 2)
                          for f in out["step"]}
                if "wall" in out:
                    ratios["wall_vs_upstream_wall"] = round(out["wall"]["images_per_s"] / up["images_per_s"], 2)
                out["ratios"] = ratios
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
