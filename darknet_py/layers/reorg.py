"""Upstream: make_reorg_layer / forward_reorg_layer (src/reorg_layer.c), parse_reorg
(src/parser.c), reorg_cpu (src/blas.c).

The [reorg3d] section (LAYER_TYPE REORG): space-to-depth by `stride` (reverse=1:
depth-to-space). The data movement is upstream's reorg_cpu index arithmetic applied to
the whole flat batch, so sizes that do not divide evenly behave exactly as upstream.
`reorg_index_maps` and `apply_reorg` are shared with the old [reorg] layer (reorg_old.py).
"""
from __future__ import annotations

import numpy as np
import torch

from . import register
from .base import BuildContext, Layer


def reorg_index_maps(w: int, h: int, c: int, batch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """reorg_cpu(x, w, h, c, batch, stride, forward, out): the (a, b) index pairs of its loop
    in loop order, with a = i + w*(j + h*(k + c*b)) and b the index in the stride-times
    larger image of c/(stride*stride) channels. forward=0: out[a] = x[b];
    forward=1: out[b] = x[a]."""
    in_c = c // (stride * stride)
    b = np.arange(batch, dtype=np.int64)[:, None, None, None]
    k = np.arange(c, dtype=np.int64)[None, :, None, None]
    j = np.arange(h, dtype=np.int64)[None, None, :, None]
    i = np.arange(w, dtype=np.int64)[None, None, None, :]
    a = i + w * (j + h * (k + c * b))
    c2 = k % in_c
    offset = k // in_c
    w2 = i * stride + offset % stride
    h2 = j * stride + offset // stride
    big = w2 + w * stride * (h2 + h * stride * (c2 + in_c * b))
    return a.ravel(), big.ravel()


def reorg_source(w: int, h: int, c: int, batch: int, stride: int, forward: int,
                 in_size: int, out_size: int) -> np.ndarray | None:
    """For each element of upstream's output buffer (out_size floats), the index of the input
    element copied there, or -1 where reorg_cpu writes nothing (the buffer stays 0).
    None if reorg_cpu would read or write outside its buffers."""
    if c // (stride * stride) < 1:
        return None
    a, big = reorg_index_maps(w, h, c, batch, stride)
    dst, src = (a, big) if forward == 0 else (big, a)
    if dst.size == 0:
        return np.full(out_size, -1, dtype=np.int64)
    if dst.max() >= out_size or src.max() >= in_size:
        return None
    out = np.full(out_size, -1, dtype=np.int64)
    # the loop's last write wins: take each destination's last occurrence
    rev_dst = dst[::-1]
    uniq, first_in_rev = np.unique(rev_dst, return_index=True)
    out[uniq] = src[::-1][first_in_rev]
    return out


def _reorg_plan(layer: Layer, args: tuple[int, int, int], forward: int, n: int, device: torch.device):
    """(index, holes, per_image) for apply_reorg. per_image: upstream's batch buffer is n
    copies of one image's mapping (reorg_cpu's indices are affine in the batch index, so
    two images decide it), and index maps one image's flat input; else index maps the
    whole flat batch of n images. holes: some outputs stay 0 (index -1)."""
    cache = layer.__dict__.setdefault("_reorg_cache", {})
    plan = cache.get(("per_image", str(device))) or cache.get((n, str(device)))
    if plan is not None:
        return plan
    st, ins, outs = layer.stride, layer.inputs, layer.outputs
    one = reorg_source(*args, 1, st, forward, ins, outs)
    two = reorg_source(*args, 2, st, forward, 2 * ins, 2 * outs)
    per_image = (one is not None and two is not None
                 and np.array_equal(two, np.concatenate([one, np.where(one >= 0, one + ins, -1)])))
    src = one if per_image else reorg_source(*args, n, st, forward, ins * n, outs * n)
    if src is None:
        raise ValueError(f"{layer.path}:{layer.line}: [{layer.section_name}] stride={layer.stride} does not fit "
                         f"the input {layer.w}x{layer.h}x{layer.c}: upstream's reorg would overrun its buffers")
    plan = (torch.from_numpy(src).to(device), bool((src < 0).any()), per_image)
    cache.clear()
    cache[("per_image" if per_image else n, str(device))] = plan
    return plan


def apply_reorg(layer: Layer, x: torch.Tensor, args: tuple[int, int, int], forward: int) -> torch.Tensor:
    """Run upstream's reorg_cpu(x, *args, batch, stride, forward) on a batch."""
    n = x.shape[0]
    idx, holes, per_image = _reorg_plan(layer, args, forward, n, x.device)
    flat = x.reshape(n, -1) if per_image else x.reshape(-1)
    if holes:
        y = torch.where(idx >= 0, flat[..., idx.clamp(min=0)], flat.new_zeros(()))
    else:
        y = flat[..., idx]
    return y.reshape(n, layer.out_c, layer.out_h, layer.out_w)


def check_fits(layer: Layer, s, args: tuple[int, int, int], forward: int) -> None:
    if reorg_source(*args, 1, layer.stride, forward, layer.inputs, layer.outputs) is None:
        raise s.error("stride", f"stride={layer.stride} does not fit the input {layer.w}x{layer.h}x{layer.c}: "
                                f"upstream's reorg would read or write outside its buffers")


@register("reorg3d")
class Reorg(Layer):
    type_name = "reorg"
    type_id = 31
    section_name = "reorg3d"

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.stride = s.int("stride", 1)
        self.reverse = s.int("reverse", 0)
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a reorg layer must output an image")
        if self.stride < 1:
            raise s.error("stride", f"must be >= 1, not {self.stride}")
        st = self.stride
        if self.reverse:
            self.set_output(ctx.w * st, ctx.h * st, ctx.c // (st * st))
        else:
            self.set_output(ctx.w // st, ctx.h // st, ctx.c * st * st)
        self.inputs = ctx.w * ctx.h * ctx.c
        if self.outputs < 1:
            raise s.error("stride", f"stride={st} leaves no output for the input {ctx.w}x{ctx.h}x{ctx.c}")
        check_fits(self, s, self._args(), self.reverse)

    def _args(self):
        # forward_reorg_layer passes the output's shape
        return self.out_w, self.out_h, self.out_c

    def forward(self, x, outputs=None):
        return apply_reorg(self, x, self._args(), 1 if self.reverse else 0)
