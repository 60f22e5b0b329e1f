"""Upstream: parse_crnn (src/parser.c), make_crnn_layer / forward_crnn_layer (src/crnn_layer.c).

A convolutional RNN made of three convolutional layers: input (c -> hidden), self
(hidden -> hidden, on the state) and output (hidden -> output). Each step:
state = [state if shortcut] + input_conv(x) + self_conv(state); y = output_conv(state).
The .weights file holds the three convolutions in that order.

Built for inference (as upstream's detector does, time_steps=1) each forward call is one
step and the state carries over to the next call, as upstream's l.state does between
frames of a video; `reset_state()` clears it. Built for training, the batch holds
time_steps consecutive mini-batches and the state starts at zero.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext
from .composite import Composite


@register("crnn")
class CRNN(Composite):
    type_name = "crnn"
    type_id = 23
    onnx_refusal = "its hidden state carries over from one call to the next, which an ONNX graph cannot hold"

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        output_filters = s.int("output", 1)
        hidden_filters = s.int("hidden", 1)
        common = self.read_conv_keys(ctx, "logistic")
        if output_filters < 1 or hidden_filters < 1:
            raise s.error("output", "output and hidden must be >= 1")
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a crnn layer must output an image")
        # upstream's detector parses with time_steps=1; training uses the cfg's time_steps
        self.steps = max(1, ctx.net.time_steps) if ctx.train else 1
        self.shortcut = s.int("shortcut", 0)
        self.train_mode = ctx.train

        def conv(w, h, c, n, key):
            return self.inner_conv(ctx, common, w, h, c, n, key)

        self.input_layer = conv(ctx.w, ctx.h, ctx.c, hidden_filters, "hidden")
        self.self_layer = conv(ctx.w, ctx.h, hidden_filters, hidden_filters, "hidden")
        self.output_layer = conv(ctx.w, ctx.h, hidden_filters, output_filters, "output")
        if self.input_layer.outputs != self.self_layer.outputs or self.input_layer.outputs != self.output_layer.inputs:
            raise s.error("stride", f"the hidden state must keep the input size {ctx.w}x{ctx.h} "
                                    f"(size={self.size}, stride={self.stride}, padding={self.pad} change it)")
        self.hidden = ctx.w * ctx.h * hidden_filters
        self.inputs = ctx.w * ctx.h * ctx.c
        # upstream's crnn layer itself leaves n, bn, activation and nweights at 0
        self.out_w, self.out_h = self.output_layer.out_w, self.output_layer.out_h
        self.out_c = output_filters
        self.outputs = self.output_layer.outputs
        self.bflops = self.input_layer.bflops + self.self_layer.bflops + self.output_layer.bflops
        self._state: torch.Tensor | None = None

    def _convs(self):
        return (self.input_layer, self.self_layer, self.output_layer)

    def reset_state(self) -> None:
        self._state = None

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        total = x.shape[0]
        if total % self.steps:
            raise ValueError(f"crnn layer {self.index}: batch {total} is not a multiple of time_steps={self.steps}")
        batch = total // self.steps
        hshape = (batch, self.hidden // (self.w * self.h), self.h, self.w)
        persistent = not self.train_mode
        state = self._state if persistent else None
        if state is None or state.shape != hshape or state.device != x.device or state.dtype != x.dtype:
            state = x.new_zeros(hshape)
        ys = []
        for i in range(self.steps):
            xi = x[i * batch:(i + 1) * batch]
            a = self.input_layer(xi)
            b = self.self_layer(state)
            state = (state + a + b) if self.shortcut else (a + b)
            ys.append(self.output_layer(state))
        if persistent:
            self._state = state.detach()
        return ys[0] if len(ys) == 1 else torch.cat(ys, 0)
