"""Upstream: parse_gru (src/parser.c), make_gru_layer / forward_gru_layer_gpu /
backward_gru_layer_gpu (src/gru_layer.c).

A GRU of six linear inner connected layers (layers/recurrent.py), input_* on the input and
state_* on the state, all `output` wide. Each step (h uses the logistic: gru_layer.c is
compiled without USET, which would make it tanh):

    z = logistic(input_z(x) + state_z(s));  r = logistic(input_r(x) + state_r(s))
    h = logistic(input_h(x) + state_h(s * r))
    y = s = z * s + (1 - z) * h                        (weighted_sum_gpu(s, h, z))

The state carries over from call to call in training too (forward_gru_layer_gpu never clears
it; `rnn train` clears one stream's with reset_rnn_state when it jumps that stream elsewhere
in the text). Upstream leaves out_w, out_h and out_c at 0. .weights: input_z, input_r,
input_h, state_z, state_r, state_h (not the order make_gru_layer creates them in).

Backward: autograd of the forward, as backward_gru_layer_gpu computes it for every step but
the first (upstream's CPU build has none, and its update_gru_layer would dereference inner
layers that do not exist, were it ever called). Not reproduced: at the first step of a batch
upstream takes output[0] for the previous state (prev_state_gpu was overwritten by the step
after it), where autograd takes the state the batch started from.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext
from .recurrent import Recurrent


@register("gru")
class GRU(Recurrent):
    type_name = "gru"
    type_id = 19
    inner = ("input_z_layer", "input_r_layer", "input_h_layer", "state_z_layer", "state_r_layer", "state_h_layer")
    created = ("input_z_layer", "state_z_layer", "input_r_layer", "state_r_layer", "input_h_layer", "state_h_layer")

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.bn = s.int("batch_normalize", 0)
        n, inp = self.output_size, ctx.inputs
        for name in self.created:
            setattr(self, name, self.connected(inp if name.startswith("input") else n, n, "linear", self.bn))
        self.outputs = n  # out_w, out_h, out_c stay 0, as upstream's
        self.finish()

    def forward(self, x, outputs=None):
        self.prepare_inner()
        xs, batch = self.split_steps(x)
        s = self.carried("state", batch, self.output_size, x)
        ys = []
        for xi in xs:
            z = torch.sigmoid(self.fc(self.input_z_layer, xi) + self.fc(self.state_z_layer, s))
            r = torch.sigmoid(self.fc(self.input_r_layer, xi) + self.fc(self.state_r_layer, s))
            h = torch.sigmoid(self.fc(self.input_h_layer, xi) + self.fc(self.state_h_layer, s * r))
            s = z * s + (1 - z) * h
            ys.append(s)
        self.keep(state=s)
        return self.stack(ys)
