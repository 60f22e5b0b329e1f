"""Upstream: make_history_layer / forward_history_layer(_gpu) / backward_history_layer(_gpu)
(src/conv_lstm_layer.c), parse_history (src/parser.c).

A shift register over time steps: the output (c * history_size channels) of step i holds
the input of step i in its first c channels, then the first (history_size - 1) * c channels
of the previous step's output. The previous step of a batch's first step is the last step
of the previous call (upstream's prev_state, kept across calls, zeros at first).

With time_steps=1 (inference, as upstream's detector parses) upstream only copies the input
into the first c channels: the others keep what the output buffer held, zeros from its
calloc. So at inference the output is the input followed by zeros.

Backward: only the first c channels of each output's delta reach the input (the shifted
copies are not followed back).
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext, Layer


@register("history")
class History(Layer):
    type_name = "none"  # not in upstream's get_layer_string table
    type_id = 22

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.history_size = s.int("history_size", 4)
        if self.history_size < 1:
            raise s.error("history_size", f"must be >= 1, got {self.history_size}")
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a history layer must output an image")
        self.steps = max(1, ctx.net.time_steps) if ctx.train else 1
        self.set_output(ctx.w, ctx.h, ctx.c * self.history_size)
        self._prev: torch.Tensor | None = None

    def reset_state(self) -> None:
        self._prev = None

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        n = x.shape[0]
        if self.steps == 1:
            pad = x.new_zeros(n, self.out_c - self.c, self.h, self.w)
            return torch.cat([x, pad], 1)
        if n % self.steps:
            raise ValueError(f"history layer {self.index}: batch {n} is not a multiple of time_steps={self.steps}")
        b = n // self.steps
        shape = (b, self.out_c, self.h, self.w)
        prev = self._prev
        if prev is None or prev.shape != shape or prev.device != x.device or prev.dtype != x.dtype:
            prev = x.new_zeros(shape)
        keep = (self.history_size - 1) * self.c
        ys = []
        for i in range(self.steps):
            y = torch.cat([x[i * b:(i + 1) * b], prev[:, :keep].detach()], 1)
            ys.append(y)
            prev = y
        self._prev = prev.detach()
        return torch.cat(ys, 0)
