"""Upstream: make_connected_layer / forward_connected_layer (src/connected_layer.c),
parse_connected (src/parser.c), load_connected_weights (src/parser.c).

A fully connected layer on the flat per-image input: y = W x + b with W stored as upstream
does, (outputs, inputs) row-major. With batch_normalize, inference normalizes with the
rolling statistics: (y - mean) / sqrt(var + .00001) * scale + bias. The .weights file holds
biases, weights, then (with batch_normalize) scales, rolling mean, rolling variance; a
file whose header has major or minor > 1000 stores the weights as (inputs, outputs).

Training (built for training, in train mode), with batch_normalize: batch statistics over the
batch. "cudnn" flavor (forward_connected_layer_gpu -> forward_batchnorm_layer_gpu):
cudnnBatchNormalizationForwardTraining, rolling = .99*rolling + .01*stat; "cpu" flavor
(forward_connected_layer): normalized with the unbiased variance, rolling = .95*rolling +
.05*stat. backward_connected_layer_gpu clamps the layer's delta to [-1, 1] before anything
else (constrain_ongpu): the gradient reaching the output is clamped so in the cudnn flavor.
Upstream never updates a connected layer (make_connected_layer leaves l.train at 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .activation import activate_array, read_array_activation
from .base import BuildContext, Layer
from .batchnorm import BN_EPS, batchnorm_train


class ConstrainDelta(torch.autograd.Function):
    """Identity whose backward clamps the gradient to [-1, 1] (upstream's constrain_ongpu)."""

    @staticmethod
    def forward(ctx, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(-1.0, 1.0)


@register("connected", "conn")
class Connected(Layer):
    type_name = "connected"
    type_id = 2

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        out = s.int("output", 1)
        if out < 1:
            raise s.error("output", f"must be >= 1, not {out}")
        read_array_activation(self, s, default="logistic")
        self.bn = s.int("batch_normalize", 0)
        self.train_mode = ctx.train  # built for training: batch statistics when self.training
        if ctx.inputs < 1:
            raise s.error(None, "the layer before a [connected] layer has no outputs")
        # upstream's make_connected_layer: a 1x1 "image" with `inputs` channels in
        self.w, self.h, self.c = 1, 1, ctx.inputs
        self.inputs = ctx.inputs
        self.set_output(1, 1, out)
        self.n = out
        self.size = self.stride = self.groups = 1
        # upstream leaves nweights and bflops at 0 for connected layers (its summary shows 0)
        self.weights = nn.Parameter(torch.zeros(out, ctx.inputs))  # (outputs, inputs)
        self.biases = nn.Parameter(torch.zeros(out))
        if self.bn:
            self.scales = nn.Parameter(torch.ones(out))
            self.register_buffer("rolling_mean", torch.zeros(out))
            self.register_buffer("rolling_variance", torch.ones(out))

    def initialize(self, gen: torch.Generator) -> None:
        """upstream's make_connected_layer: weights sqrt(2/inputs)*U(-1, 1), biases 0; with batch
        norm scales 1 and the rolling mean AND variance 0 (xcalloc'd), so that a fresh network's
        inference divides by sqrt(0 + .00001)."""
        with torch.no_grad():
            u = torch.rand(self.weights.shape, generator=gen) * 2 - 1
            self.weights.copy_(u * (2.0 / self.inputs) ** 0.5)
            self.biases.zero_()
            if self.bn:
                self.scales.fill_(1.0)
                self.rolling_mean.zero_()
                self.rolling_variance.zero_()

    def weight_arrays(self):
        arrays = [self.biases, self.weights]
        if self.bn:
            arrays += [self.scales, self.rolling_mean, self.rolling_variance]
        return arrays

    def load_arrays(self):
        arrays = [self.biases, self.weights]
        if self.bn and not self.dontloadscales:
            arrays += [self.scales, self.rolling_mean, self.rolling_variance]
        return arrays

    def load_from(self, reader, transpose: bool) -> bool:
        arrays = self.load_arrays()
        ok = reader.fill(arrays[0]) and reader.fill(arrays[1])
        if transpose:
            # the file holds an (inputs, outputs) matrix: upstream's transpose_matrix
            with torch.no_grad():
                w = self.weights.detach().reshape(self.inputs, self.outputs).t().clone()
                self.weights.copy_(w)
        if ok:
            ok = all(reader.fill(t) for t in arrays[2:])
        return ok

    def forward(self, x, outputs=None):
        n = x.shape[0]
        y = F.linear(x.reshape(n, -1), self.weights)  # (N, outputs)
        if self.train_mode and self.training:
            return self._train_forward(y)
        if self.bn:
            k = self.scales / torch.sqrt(self.rolling_variance + BN_EPS)
            y = (y - self.rolling_mean) * k
        y = y + self.biases
        return activate_array(y, self.activation).reshape(n, self.outputs, 1, 1)

    def _train_forward(self, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        flavor = getattr(self, "bn_flavor", "cudnn")
        if not self.bn:
            y = y + self.biases
        elif flavor == "cpu" and self.bn == 1:
            var, mean = torch.var_mean(y.detach(), 0, correction=1)
            with torch.no_grad():
                self.rolling_mean.mul_(0.95).add_(0.05 * mean)
                self.rolling_variance.mul_(0.95).add_(0.05 * var)
            y = (y - mean) / torch.sqrt(var + BN_EPS) * self.scales + self.biases
        else:
            y = batchnorm_train(self, y.reshape(n, self.outputs, 1, 1), self.biases).reshape(n, self.outputs)
        y = activate_array(y, self.activation)
        if flavor != "cpu" and y.requires_grad:
            y = ConstrainDelta.apply(y)
        return y.reshape(n, self.outputs, 1, 1)
