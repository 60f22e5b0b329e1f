#!/usr/bin/env python3
"""Write a recurrent forward case's init.weights and inputs.f32 (run from the project root).

Usage: make_case.py CASE_DIR FRAMES SEED

Every array of every layer, in the order our Network stores them (which the case checks
against upstream, which reads the file in its own order): biases and weights u*0.5,
batch-norm scales 1 + 0.1u, rolling means 0.1u, rolling variances 1 + 0.5|u|, u uniform in
[-1, 1) from numpy's default_rng(SEED). The inputs: FRAMES frames of uniform [0, 1) values,
each the network's channels x height x width, float32.
"""
import sys
from pathlib import Path

import numpy as np

import darknet_py


def main() -> None:
    d, frames, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    net = darknet_py.build_network(d / f"{d.name}.cfg", batch=1)
    chunks = []
    for layer in net.layers:
        convs = layer._convs() if hasattr(layer, "_convs") else [layer]
        for l in convs:
            for t in l.weight_arrays():
                u = rng.uniform(-1, 1, t.numel()).astype(np.float32)
                if t is getattr(l, "rolling_variance", None):
                    v = 1 + 0.5 * np.abs(u)
                elif t is getattr(l, "rolling_mean", None):
                    v = 0.1 * u
                elif t is getattr(l, "scales", None):
                    v = 1 + 0.1 * u
                else:
                    v = 0.5 * u
                chunks.append(v.astype("<f4"))
    with open(d / "init.weights", "wb") as f:
        f.write(np.array([0, 2, 5], "<i4").tobytes() + np.array([0], "<u8").tobytes())
        for c in chunks:
            f.write(c.tobytes())
    o = net.options
    x = rng.uniform(0, 1, frames * o.channels * o.height * o.width).astype("<f4")
    x.tofile(d / "inputs.f32")


if __name__ == "__main__":
    main()
