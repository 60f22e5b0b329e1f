#!/usr/bin/env python3
"""Perturb a darknet .weights file: every float32 after the 20-byte header (major, minor,
revision int32, seen uint64) is multiplied by (1 + eps * z), z ~ N(0,1) drawn with
numpy.random.default_rng(seed).standard_normal(n) (numpy Generator, PCG64), in file order.
The factor is formed in float64 and cast to float32; the product is computed in float32.

usage: perturb.py SRC DST EPS SEED
"""
import sys
import numpy as np

HEADER = 20


def perturb(src, dst, eps, seed):
    raw = open(src, "rb").read()
    w = np.frombuffer(raw[HEADER:], np.float32).copy()
    factor = (1.0 + eps * np.random.default_rng(seed).standard_normal(w.size)).astype(np.float32)
    w *= factor
    with open(dst, "wb") as f:
        f.write(raw[:HEADER] + w.astype(np.float32).tobytes())


if __name__ == "__main__":
    src, dst, eps, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    perturb(src, dst, eps, seed)
