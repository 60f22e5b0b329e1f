#!/usr/bin/env python3
"""Inference speed of darknet_py on this machine: images/s and peak memory.

    .venv/bin/python benchmarks/inference.py [--cfgs yolov4-tiny yolov4] [--size 416] [--batches 1 8]

Each (cfg, batch) runs in a fresh process so that peak RSS is per case. Weights are random
(speed does not depend on values). Compares with bare PyTorch convolutions of the same network
(F.conv2d + leaky, channels_last, BN folded) to show the per-layer overhead, and reports the
arithmetic rate reached (upstream's BFLOPs per image x images/s) beside what one large
float32 matrix product reaches on this machine (`sgemm_gflops`: the practical ceiling of
direct convolution; the images/s it would allow is `sgemm_bound_images_per_s`). Beside it,
onnxruntime (CPU, as many threads) on the same network exported by darknet_py/outputs/export.py at the
same batch size (`onnxruntime_images_per_s`; null, with the reason, without the onnx extra).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_case(cfg: str, size: int, batch: int, seconds: float, threads: int) -> dict:
    import torch
    import darknet_py
    from darknet_py.network import build_network

    torch.set_num_threads(threads)
    net = build_network(ROOT / "cfg" / f"{cfg}.cfg", batch=batch, width=size, height=size)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
        for layer in net.layers:  # batch norm's rolling variances are buffers, not parameters:
            if getattr(layer, "bn", 0):  # left at 0 they blow the activations up to inf and NaN
                layer.rolling_variance.fill_(1.0)
    net.eval().fuse().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            net(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            net(x)
            n += 1
        dt = time.perf_counter() - t0
    # bare PyTorch: the same convolutions in a flat nn.Sequential-like loop, no routing logic
    convs = [l for l in net.layers if l.type_name == "convolutional"]
    ins = []
    with torch.inference_mode():
        outs = {}
        h = x
        for l in net.layers:
            if l.type_name == "convolutional":
                ins.append(torch.rand(batch, l.c, l.h, l.w).contiguous(memory_format=torch.channels_last))
        import torch.nn.functional as F
        def bare():
            for l, xi in zip(convs, ins):
                F.leaky_relu(F.conv2d(xi, l._fused[0], l._fused[1], (l.stride_y, l.stride_x), l.pad, l.dilation, l.groups), 0.1)
        bare(); bare()
        m, t1 = 0, time.perf_counter()
        while time.perf_counter() - t1 < seconds or m < 3:
            bare()
            m += 1
        bt = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # darknet_py's, before onnxruntime's
    bflops = sum(l.bflops for l in net.layers)
    ips = n * batch / dt
    sgemm = sgemm_gflops(seconds)
    return {"cfg": cfg, "size": size, "batch": batch, "threads": threads,
            "images_per_s": round(ips, 2), "ms_per_batch": round(1000 * dt / n, 1),
            "bare_conv_images_per_s": round(m * batch / bt, 2), "peak_rss_mb": round(rss, 1),
            "bflops_per_image": round(bflops, 3), "gflops": round(ips * bflops, 1),
            "sgemm_gflops": round(sgemm, 1), "sgemm_bound_images_per_s": round(sgemm / bflops, 2),
            **onnxruntime_case(net, x.contiguous().numpy(), seconds, threads)}


def onnxruntime_case(net, x, seconds: float, threads: int) -> dict:
    """images/s of onnxruntime (CPU) on net's ONNX export (darknet_py/outputs/export.py), batch x.shape[0]."""
    import tempfile
    from darknet_py.outputs.export import ExportError

    try:
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "net.onnx"
            t0 = time.perf_counter()
            net.export_onnx(path, batch=x.shape[0])
            export_s = time.perf_counter() - t0
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except (ImportError, ExportError) as e:
        return {"onnxruntime_images_per_s": None, "onnxruntime_note": str(e)}
    feed = {"input": x}
    for _ in range(2):
        sess.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        sess.run(None, feed)
        n += 1
    dt = time.perf_counter() - t0
    return {"onnxruntime_images_per_s": round(n * x.shape[0] / dt, 2), "onnxruntime_ms_per_batch": round(1000 * dt / n, 1),
            "onnx_export_s": round(export_s, 1)}


def sgemm_gflops(seconds: float, n: int = 2048) -> float:
    import torch
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min(seconds, 3.0) or k < 2:
        torch.mm(a, b)
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def main() -> None:
    # the allocator set-up of the command line (darknet_py/hostmem.py), which `detector test` runs with
    from darknet_py.hostmem import restart_with_malloc_env

    restart_with_malloc_env()
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfgs", nargs="+", default=["yolov4-tiny", "yolov4"])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        cfg, batch = a.case.split(":")
        print(json.dumps(run_case(cfg, a.size, int(batch), a.seconds, a.threads)))
        return
    for cfg in a.cfgs:
        for batch in a.batches:
            r = subprocess.run([sys.executable, __file__, "--case", f"{cfg}:{batch}", "--size", str(a.size),
                                "--seconds", str(a.seconds), "--threads", str(a.threads)],
                               capture_output=True, text=True, check=True)
            print(r.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
