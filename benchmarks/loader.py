#!/usr/bin/env python3
"""Data-loading speed of darknet_py.data.DetectionLoader on this machine, printed as JSON.

    .venv/bin/python benchmarks/loader.py [--size 416] [--batch 8] [--batches 6] [--workers N]
                                          [--kind thread|process|both] [--images train.txt] [--no-train]

Augmentation as yolov4-tiny.cfg trains (jitter .3, hue .1, saturation and exposure 1.5,
flip), once with mosaic (mixup code 3) and once with mixup (code 1). Upstream's cfg keys
mosaic=1 and mixup=1 together mean mosaic only (parse_net_options), so those two cases
cover what a cfg can ask for. Images: a synthetic set of 640x480 JPEGs with labels
(or --images, a train.txt list).

For each case: images/s loaded in one process (load()), images/s delivered by batches()
with worker threads and with worker processes (after their start-up, which is reported
apart), and, unless --no-train, the time of a yolov4-tiny training step at the same batch and
size alone and while each kind of loader runs beside it (the wait for each batch and the
step's own slow-down are what the loader costs the training loop).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AUGMENT = dict(jitter=0.3, hue=0.1, saturation=1.5, exposure=1.5, flip=1)
CASES = {"mosaic": 3, "mixup": 1}


def make_images(directory: Path, count: int = 24, seed: int = 0) -> list[str]:
    """Textured 640x480 JPEGs with a few labelled rectangles each."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (9, 9), 0)
        lines = []
        for _ in range(6):
            w, h = rng.integers(40, 260), rng.integers(40, 200)
            x0, y0 = rng.integers(0, 640 - w), rng.integers(0, 480 - h)
            img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
            lines.append(f"{rng.integers(0, 80)} {(x0 + w / 2) / 640:.6f} {(y0 + h / 2) / 480:.6f} "
                         f"{w / 640:.6f} {h / 480:.6f}")
        path = directory / f"img{i:03d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def make_loader(paths, size: int, mixup: int, workers: int, kind: str = "thread"):
    from darknet_py.data import DetectionLoader

    return DetectionLoader(paths, width=size, height=size, classes=80, mixup=mixup, seed=0, kind=kind,
                           workers=workers, bad_list=None, bad_label_list=None, **AUGMENT)


def in_process(paths, size: int, batch: int, batches: int, mixup: int) -> float:
    """images/s of load() in this process."""
    loader = make_loader(paths, size, mixup, 0)
    loader.load(batch)  # warm-up
    t = time.perf_counter()
    for _ in range(batches):
        loader.load(batch)
    return batches * batch / (time.perf_counter() - t)


def with_workers(paths, size: int, batch: int, batches: int, mixup: int, workers: int, kind: str) -> dict:
    """Start-up time and images/s of batches() with workers of `kind`."""
    return stream_rate(make_loader(paths, size, mixup, workers, kind), batch, batches)


def stream_rate(loader, batch: int, batches: int) -> dict:
    """Seconds to the first batch of loader.batches(batch), then images/s over `batches` more;
    the loader is closed after."""
    try:
        stream = loader.batches(batch)
        t = time.perf_counter()
        next(stream)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(batches):
            next(stream)
        rate = batches * batch / (time.perf_counter() - t)
    finally:
        loader.close()
    return {"first_batch_s": round(startup, 3), "images_per_s": round(rate, 2)}


def training_net(size: int, batch: int):
    """yolov4-tiny with batch = mini-batch = `batch` at size x size, random weights."""
    import torch
    from darknet_py.network import build_network

    text = (ROOT / "cfg" / "yolov4-tiny.cfg").read_text()
    for key, value in (("batch", batch), ("subdivisions", 1), ("width", size), ("height", size)):
        text = text.replace(f"\n{key}=", f"\n{key}={value}\n#{key}=", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(text)
    net = build_network(f.name, train=True)
    os.unlink(f.name)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net


def trainer_step(net):
    """The project's training step (darknet_py.train.loop.Trainer), or None without it."""
    try:
        from darknet_py.train.loop import Trainer
    except ImportError:
        return None
    trainer = Trainer(net)
    devnull = open(os.devnull, "w")
    return lambda x, t: trainer.train_batch(x, t, err=devnull)


def plain_step(net):
    """Plain PyTorch forward + backward of the same network (a surrogate loss, no update
    rule): what the convolutions themselves cost."""
    import torch

    def step(x, _t):
        net.train()
        net.zero_grad()
        outs = net(torch.as_tensor(x))
        sum(o.float().mean() for o in outs.values()).backward()
    return step


def time_steps(step, x, t, steps: int) -> float:
    step(x, t)  # warm-up
    times = []
    for _ in range(steps):
        s = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - s)
    return statistics.median(times)


def training(paths, size: int, batch: int, steps: int, mixup: int, workers: int, kinds) -> dict:
    """Seconds per training step alone, and with the loader feeding it from workers of each kind."""
    net = training_net(size, batch)
    x, t = make_loader(paths, size, mixup, 0).load(batch)
    out = {"plain_forward_backward_s": round(time_steps(plain_step(net), x, t, steps), 3)}
    step = trainer_step(net)
    kind = "Trainer.train_batch"
    if step is None:
        step, kind = plain_step(net), "plain forward+backward"
    alone = time_steps(step, x, t, steps)
    out.update({"step": kind, "step_s_alone": round(alone, 3), "images_per_s_consumed": round(batch / alone, 2)})
    for loader_kind in kinds:
        loader = make_loader(paths, size, mixup, workers, loader_kind)
        waits, totals = [], []
        try:
            stream = loader.batches(batch)
            x, t = next(stream)  # workers start; not counted
            step(x, t)
            for _ in range(steps):
                s = time.perf_counter()
                x, t = next(stream)
                waits.append(time.perf_counter() - s)
                step(x, t)
                totals.append(time.perf_counter() - s)
        finally:
            loader.close()
        total = statistics.median(totals)
        out[loader_kind] = {"step_s_with_loader": round(total, 3),
                            "wait_for_batch_s": round(statistics.mean(waits), 3),
                            "loader_cost_of_step": round(total / alone - 1, 3),
                            "images_per_s_trained_with_loader": round(batch * len(totals) / sum(totals), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=6, help="batches timed per measurement")
    ap.add_argument("--workers", type=int, default=None, help="default: one per CPU core")
    ap.add_argument("--kind", choices=("thread", "process", "both"), default="both", help="loader workers")
    ap.add_argument("--images", help="a train.txt list instead of the synthetic images")
    ap.add_argument("--no-train", action="store_true", help="skip the training-step measurements")
    a = ap.parse_args()

    import torch
    from darknet_py.data import default_workers, read_list

    workers = default_workers() if a.workers is None else a.workers
    kinds = ("thread", "process") if a.kind == "both" else (a.kind,)
    result = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "workers": workers,
              "size": a.size, "batch": a.batch, "augment": AUGMENT, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = read_list(a.images) if a.images else make_images(Path(tmp))
        result["images"] = a.images or f"{len(paths)} synthetic 640x480 JPEGs"
        for name, mixup in CASES.items():
            case = {"mixup_code": mixup,
                    "images_per_s_one_process": round(in_process(paths, a.size, a.batch, a.batches, mixup), 2),
                    **{k: with_workers(paths, a.size, a.batch, a.batches, mixup, workers, k) for k in kinds}}
            if not a.no_train and name == "mosaic":
                case["training"] = training(paths, a.size, a.batch, max(3, a.batches // 2), mixup, workers, kinds)
            result["cases"][name] = case
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
