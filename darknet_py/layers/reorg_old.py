"""Upstream: make_reorg_old_layer / forward_reorg_old_layer (src/reorg_old_layer.c),
parse_reorg_old (src/parser.c), reorg_cpu (src/blas.c).

The [reorg] section (LAYER_TYPE REORG_OLD, yolov2's passthrough). Unlike [reorg3d] it
calls reorg_cpu with the *input's* shape and forward=0 (reverse=0), so the flat output is
out[i + w*(j + h*k)] = x[in the input read as c/(stride^2) channels of a (stride*h) x
(stride*w) image]: not a plain space-to-depth, but what yolov2's weights were trained with.
Parsing and shapes are [reorg3d]'s; only the shape handed to reorg_cpu differs.
"""
from __future__ import annotations

from . import register
from .reorg import Reorg


@register("reorg")
class ReorgOld(Reorg):
    type_name = "none"  # upstream's name table has no entry for REORG_OLD
    type_id = 32
    section_name = "reorg"

    def _args(self):
        # upstream: reorg_cpu(input, l.w, l.h, l.c, batch, stride, reverse, output)
        return self.w, self.h, self.c
