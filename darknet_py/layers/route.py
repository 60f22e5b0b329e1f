"""Upstream: parse_route (src/parser.c), make_route_layer / forward_route_layer (src/route_layer.c).

Concatenates the outputs of earlier layers along channels; with groups=G and group_id=k each
input contributes only its k-th 1/G slice (upstream slices the flat per-image output).
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer


@register("route")
class Route(Layer):
    type_name = "route"
    type_id = 9

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.refs, line = ctx.required_refs("layers")
        self.n = len(self.refs)
        self.groups = s.int("groups", 1)
        self.group_id = s.int("group_id", 0)
        if self.groups < 1 or not 0 <= self.group_id < self.groups:
            raise s.error("group_id", f"group_id={self.group_id} must be in 0..groups-1 (groups={self.groups})")
        self.stream = s.int("stream", -1)
        self.wait_stream = s.int("wait_stream", -1)
        srcs = [ctx.layers[i] for i in self.refs]
        self.sizes = [l.outputs for l in srcs]
        for l in srcs:
            if l.outputs % self.groups:
                raise s.error("groups", f"layer {l.index} has {l.outputs} outputs, not divisible by groups={self.groups}")
        first = srcs[0]
        out_w, out_h, out_c = first.out_w, first.out_h, first.out_c
        for l in srcs[1:]:
            if l.out_w == first.out_w and l.out_h == first.out_h:
                out_c += l.out_c
            else:
                raise s.error("layers", f"layer {l.index} outputs {l.out_w}x{l.out_h} but layer {first.index} outputs "
                                        f"{first.out_w}x{first.out_h}: routed layers must have the same width and height",
                              line)
        self.outputs = self.inputs = sum(self.sizes) // self.groups
        self.out_w, self.out_h, self.out_c = out_w, out_h, out_c // self.groups
        self.w, self.h, self.c = first.w, first.h, self.out_c

    def forward(self, x, outputs):
        ts = [outputs[i] for i in self.refs]
        if all(t.dim() == 4 and t.shape[2:] == (self.out_h, self.out_w) and t.shape[1] % self.groups == 0 for t in ts):
            # image inputs: the flat slice upstream copies is a channel slice; this keeps the memory format
            if self.groups > 1:
                ts = [t[:, t.shape[1] // self.groups * self.group_id: t.shape[1] // self.groups * (self.group_id + 1)]
                      for t in ts]
            return ts[0] if len(ts) == 1 else torch.cat(ts, dim=1)
        parts = []
        for t, size in zip(ts, self.sizes):
            part = size // self.groups
            parts.append(t.reshape(t.shape[0], -1)[:, part * self.group_id: part * (self.group_id + 1)])
        y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return y.reshape(y.shape[0], self.out_c, self.out_h, self.out_w)
