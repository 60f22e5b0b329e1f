"""Upstream: parse_shortcut (src/parser.c), forward_shortcut_layer (src/shortcut_layer.c) and
shortcut_multilayer_cpu (src/blas.c).

out = w0*input + sum_i w_{i+1}*from_i, then the activation. Inputs of another size are added
over their common leading part of the flat per-image output, as upstream does. Optional
weights: per_feature (one per input) or per_channel, normalized by relu or softmax.
"""
from __future__ import annotations

import torch

from ..activations import train_activate, ACTIVATION_IDS, activate, activation_from
from . import register
from .base import BuildContext, Layer


@register("shortcut")
class Shortcut(Layer):
    type_name = "shortcut"
    type_id = 14

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.activation = activation_from(s, default="linear")
        self.activation_id = ACTIVATION_IDS[self.activation]
        wt = s.choice("weights_type", ("none", "per_feature", "per_layer", "per_channel"), "none")
        self.weights_type = {"none": "none", "per_feature": "per_feature", "per_layer": "per_feature",
                             "per_channel": "per_channel"}[wt]
        wn = s.choice("weights_normalization", ("none", "relu", "avg_relu", "softmax"), "none")
        self.weights_normalization = {"avg_relu": "relu"}.get(wn, wn)
        self.refs, line = ctx.required_refs("from")
        self.n = len(self.refs)
        self.sizes = [ctx.layers[i].outputs for i in self.refs]
        for i in self.refs:
            l = ctx.layers[i]
            if (l.out_w, l.out_h) != (ctx.w, ctx.h):
                raise s.error("from", f"layer {i} outputs {l.out_w}x{l.out_h}x{l.out_c} but the input is "
                                      f"{ctx.w}x{ctx.h}x{ctx.c}: a shortcut needs the same width and height", line)
        self.set_output(ctx.w, ctx.h, ctx.c)
        self.inputs = self.outputs
        self.nweights = {"none": 0, "per_feature": self.n + 1, "per_channel": (self.n + 1) * ctx.c}[self.weights_type]
        if self.nweights:
            self.weights = torch.nn.Parameter(torch.ones(self.nweights))
        self.bflops = self.outputs * self.n / 1e9

    def weight_arrays(self):
        return [self.weights] if self.nweights else []

    def _weights(self) -> torch.Tensor:  # (n+1, c or 1)
        w = self.weights.view(self.n + 1, -1)
        if self.weights_normalization == "relu":
            r = torch.relu(w)
            w = r / (r.sum(0, keepdim=True) + 0.0001)
        elif self.weights_normalization == "softmax":
            e = torch.exp(w - w.max(0, keepdim=True).values)
            w = e / (e.sum(0, keepdim=True) + 0.0001)
        return w

    def forward(self, x, outputs):
        x = self.as_image(x)
        nb = x.shape[0]
        w = self._weights() if self.nweights else None
        out = x if w is None else x * w[0].view(1, -1, 1, 1)
        for k, (i, size) in enumerate(zip(self.refs, self.sizes)):
            add = outputs[i]
            if size == self.outputs and add.shape[1:] == x.shape[1:]:
                add = add if w is None else add * w[k + 1].view(1, -1, 1, 1)
                out = out + add
                continue
            flat = out.reshape(nb, -1)
            m = min(size, self.outputs)
            a = add.reshape(nb, -1)[:, :m]
            if w is not None:
                per = w[k + 1].view(1, -1, 1, 1).expand(1, self.c, self.h, self.w).reshape(1, -1)[:, :m]
                a = a * per
            flat = torch.cat([flat[:, :m] + a, flat[:, m:]], dim=1)
            out = flat.view_as(x)
        if self.training and torch.is_grad_enabled():
            return train_activate(out, self.activation, getattr(self, "bn_flavor", "cudnn"))  # relu6 on the CPU build
        return activate(out, self.activation)
