#!/usr/bin/env python3
"""Training speed of darknet_py on this machine: images/s of upstream's training step.

    .venv/bin/python benchmarks/train.py [--cfg yolov4-tiny] [--size 416] [--batch 8] [--iters 4]

One iteration = forward, yolo deltas, backward and upstream's update for `batch` images (one
mini-batch), on random weights and a synthetic batch with a few boxes per image (data
loading is measured by benchmarks/loader.py). Prints JSON with images/s, seconds per
iteration (excluding the first, warm-up iteration), the share spent in the yolo deltas and
peak RSS; also bare PyTorch forward+backward of the same convolutions for comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_batch(n: int, size: int, max_boxes: int, rng: np.random.Generator):
    x = rng.random((n, 3, size, size), dtype=np.float32)
    truth = np.zeros((n, max_boxes, 6), np.float32)
    for i in range(n):
        k = rng.integers(1, 8)
        truth[i, :k, 0:2] = rng.uniform(0.1, 0.9, (k, 2))
        truth[i, :k, 2:4] = rng.uniform(0.05, 0.5, (k, 2))
        truth[i, :k, 4] = rng.integers(0, 80, k)
    return x, truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfg", default="yolov4-tiny")
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from darknet_py.cfg import read_cfg
    from darknet_py.network import Network
    from darknet_py.train import loop

    sections = read_cfg(ROOT / "cfg" / f"{a.cfg}.cfg")
    for s in sections[:1]:
        for o in s.options:
            if o.key in ("batch", "subdivisions"):
                o.value = str(a.batch if o.key == "batch" else 1)
    with contextlib.redirect_stderr(io.StringIO()):
        net = Network(sections, a.cfg, train=True, width=a.size, height=a.size)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    trainer = loop.Trainer(net)
    rng = np.random.default_rng(0)
    max_boxes = max(getattr(l, "max_boxes", 0) for l in net.layers) or 90
    x, truth = synthetic_batch(a.batch, a.size, max_boxes, rng)
    delta_time = [0.0]
    real = loop.yolo_delta

    def timed(*args, **kw):
        t = time.perf_counter()
        r = real(*args, **kw)
        delta_time[0] += time.perf_counter() - t
        return r

    loop.yolo_delta = timed
    times = []
    for i in range(a.iters):
        delta_time[0] = 0.0
        t = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            trainer.train_batch(x, truth)
        times.append((time.perf_counter() - t, delta_time[0]))
    steady = times[1:] or times
    sec = sum(t for t, _ in steady) / len(steady)
    dsec = sum(d for _, d in steady) / len(steady)
    # bare PyTorch: forward+backward of the same convolutions, no darknet logic
    convs = [l for l in net.layers if l.type_name == "convolutional"]
    ins = [torch.rand(a.batch, l.c, l.h, l.w, requires_grad=True) for l in convs]
    def bare():
        loss = 0
        for l, xi in zip(convs, ins):
            y = torch.nn.functional.conv2d(xi, l.weights, l.biases, (l.stride_y, l.stride_x), l.pad, l.dilation, l.groups)
            loss = loss + torch.nn.functional.leaky_relu(y, 0.1).mean()
        loss.backward()
    bare()
    t = time.perf_counter()
    bare()
    bare_sec = time.perf_counter() - t
    print(json.dumps({"cfg": a.cfg, "size": a.size, "batch": a.batch, "threads": a.threads,
                      "images_per_s": round(a.batch / sec, 2), "s_per_iteration": round(sec, 3),
                      "yolo_delta_s": round(dsec, 4),
                      "bare_conv_fwd_bwd_images_per_s": round(a.batch / bare_sec, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
