"""Upstream: random_gen, random_float, rand_int, rand_uniform_strong, rand_scale,
rand_precalc_random (src/utils.c).

Upstream draws from C's rand() (seeded with time(0), so no run is repeatable). We keep
its distributions and its float32 arithmetic but draw from a numpy Generator, so a
seed makes a run repeatable and every worker process gets an independent stream.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
RAND_MAX = 2**31 - 1  # glibc's RAND_MAX: random_gen() is uniform on [0, RAND_MAX]


class CRandom:
    """Upstream's random helpers on top of a numpy Generator."""

    def __init__(self, seed=None):
        self.gen_np = np.random.default_rng(seed)

    def gen(self) -> int:
        """Upstream: random_gen: a uniform integer in [0, RAND_MAX]."""
        return int(self.gen_np.integers(0, RAND_MAX, endpoint=True))

    def float(self) -> np.float32:
        """Upstream: random_float: (float)rnd / (float)RAND_MAX, in float32."""
        return F32(self.gen()) / F32(RAND_MAX)

    def int(self, lo: int, hi: int) -> int:
        """Upstream: rand_int: random_gen() % (hi - lo + 1) + lo, bounds swapped if needed."""
        lo, hi = int(lo), int(hi)
        if hi < lo:
            lo, hi = hi, lo
        return self.gen() % (hi - lo + 1) + lo

    def uniform_strong(self, lo: float, hi: float) -> np.float32:
        """Upstream: rand_uniform_strong: random_float() * (hi - lo) + lo in float32."""
        lo, hi = F32(lo), F32(hi)
        if hi < lo:
            lo, hi = hi, lo
        return self.float() * (hi - lo) + lo

    def scale(self, s: float) -> np.float32:
        """Upstream: rand_scale: a factor in [1, s], or its inverse with probability 1/2."""
        scale = self.uniform_strong(1, s)
        if self.gen() % 2:
            return scale
        # 1./scale is a double division, narrowed to the float return type
        return F32(1.0 / float(scale))

    def normal(self, sigma: float, shape) -> np.ndarray:
        """Gaussian samples (float64) for cv::randn's role; C's generator differs anyway."""
        return self.gen_np.normal(0.0, sigma, size=shape)


def precalc_random(lo: float, hi: float, part: np.float32) -> np.float32:
    """Upstream: rand_precalc_random: part * (hi - lo) + lo in float32 (bounds sorted)."""
    lo, hi = F32(lo), F32(hi)
    if hi < lo:
        lo, hi = hi, lo
    return F32(part) * (hi - lo) + lo


def c_int(v) -> int:
    """C's float -> int conversion: truncation toward zero."""
    return int(v)


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero, unlike Python's //)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q
