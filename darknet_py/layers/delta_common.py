"""Upstream: the pieces forward_yolo_layer, forward_region_layer and
forward_gaussian_yolo_layer share (src/yolo_layer.c, src/region_layer.c,
src/gaussian_yolo_layer.c, src/blas.c mag_array, src/utils.c read_map).

What the detection layers' deltas (yolo/delta.py, region/delta.py, gaussian_yolo/delta.py)
have in common: upstream's float arithmetic where it prints or sums (c_div, c_mag2, c_fsum),
the cfg's counters_per_class and map=FILE, and the rounds in which a cell hit by several
truths is written (occurrence_rank).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from ..box import box_iou

FLT_MAX = 3.4028234663852886e38


def c_div(a: float, b: float) -> str:
    """printf("%f", a/b) for float division as upstream's x86 build prints it ("-nan" for 0/0)."""
    if b == 0:
        if a == 0 or a != a:
            return "-nan"
        return "inf" if a > 0 else "-inf"
    return f"{a / b:f}"


def c_mag2(t: torch.Tensor) -> float:
    """pow(mag_array(a, n), 2) as upstream computes it: float squares summed in order in a float,
    the square root and the square taken in double and stored to float."""
    sq = t.detach().reshape(-1).float().cpu().numpy()
    sq = sq * sq
    total = np.float32(np.cumsum(sq, dtype=np.float32)[-1]) if sq.size else np.float32(0)
    mag = np.float32(math.sqrt(float(total)))
    return float(np.float32(float(mag) ** 2))


def c_fsum(t: torch.Tensor) -> float:
    """A float accumulator's value after adding t's values in order (upstream's `float sum += x`)."""
    v = t.detach().reshape(-1).float().cpu().numpy()
    return float(np.cumsum(v, dtype=np.float32)[-1]) if v.size else 0.0


def class_multipliers(layer) -> list[float] | None:
    """Upstream's get_classes_multipliers: max(counter)/counter, clipped at max_delta."""
    counters = getattr(layer, "counters_per_class", None)
    if not counters:
        return None
    counters = [max(1, c) for c in counters]
    top = float(max(counters))
    return [min(top / c, layer.max_delta) for c in counters]


def finite(x: torch.Tensor) -> torch.Tensor:
    """NaN and inf become 0 (upstream's fix_nan_inf over a delta)."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


_MAPS: dict[str, list[int]] = {}


def class_map(layer) -> list[int] | None:
    """Upstream's read_map of the layer's map=FILE: one integer (atoi) per line."""
    name = getattr(layer, "map", None)
    if not name:
        return None
    if name not in _MAPS:
        lines = Path(name).read_text(encoding="latin-1").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the text after the final newline is no line
        values = []
        for line in lines:
            m = re.match(r"\s*([+-]?\d+)", line)
            values.append(int(m.group(1)) if m else 0)
        _MAPS[name] = values
    return _MAPS[name]


def cell_truth_iou(pred: torch.Tensor, truth: torch.Tensor, considered: torch.Tensor, image: torch.Tensor):
    """IoU of every cell's box with every truth of its image that upstream's loop considers,
    0 elsewhere and for NaN: (cells, T) with T up to the last row any image uses (rows past it
    cannot matter), or None when no image has one. pred: (cells, 4) with the cells of each
    image together; truth: (N, T, S); considered: (N, T); image: (cells,) each cell's image."""
    if not bool(considered.any()):
        return None
    t_eff = int(considered.any(0).nonzero().max().item()) + 1
    iou = box_iou(pred.view(truth.shape[0], -1, 1, 4), truth[:, None, :t_eff, :4]).reshape(-1, t_eff)
    return torch.where(considered[image, :t_eff] & ~torch.isnan(iou), iou, torch.zeros_like(iou))


def occurrence_rank(keys: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same key."""
    if keys.numel() == 0:
        return keys.clone()
    order = torch.sort(keys, stable=True).indices
    sk = keys[order]
    pos = torch.arange(keys.numel(), device=keys.device)
    start = torch.ones_like(sk, dtype=torch.bool)
    start[1:] = sk[1:] != sk[:-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - first
    return rank
