"""Upstream: parse_lstm (src/parser.c), make_lstm_layer / forward_lstm_layer_gpu /
backward_lstm_layer_gpu (src/lstm_layer.c).

An LSTM of eight linear inner connected layers (layers/recurrent.py): w* on the previous
output h (output -> output), u* on the input (inputs -> output). Each step:

    f = logistic(wf(h) + uf(x));  i = logistic(wi(h) + ui(x))
    g = tanh(wg(h) + ug(x));      o = logistic(wo(h) + uo(x))
    c = f * c + i * g;            y = h = o * tanh(c)

h and c carry over from call to call, in training too: forward_lstm_layer_gpu never clears
them, and reset_rnn_state cannot (the layer has no state_gpu). In training, what carries
into the next batch is the FIRST step's h and c: backward_lstm_layer_gpu walks the steps
backwards copying each step's output and cell into h_gpu and c_gpu, and ends at step 0. .weights: wf, wi, wg, wo, uf,
ui, ug, uo (make_lstm_layer creates the u* first).

Backward: autograd of the forward. Not reproduced from backward_lstm_layer_gpu: at the
first step of a batch it takes output[0] and cell[0] for the previous h and c (the
previous batch's are gone), and its cell delta dc is not cleared between batches.
"""
from __future__ import annotations

import torch

from . import register
from .base import BuildContext
from .recurrent import Recurrent


@register("lstm")
class LSTM(Recurrent):
    type_name = "lstm"
    type_id = 20
    inner = ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")
    created = ("uf", "ui", "ug", "uo", "wf", "wi", "wg", "wo")

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.bn = s.int("batch_normalize", 0)
        n = self.output_size
        for name in self.created:
            setattr(self, name, self.connected(ctx.inputs if name[0] == "u" else n, n, "linear", self.bn))
        self.set_output(1, 1, n)
        self.finish()

    def forward(self, x, outputs=None):
        self.prepare_inner()
        xs, batch = self.split_steps(x)
        h = self.carried("h", batch, self.output_size, x)
        c = self.carried("c", batch, self.output_size, x)
        ys, first = [], None
        for xi in xs:
            f = torch.sigmoid(self.fc(self.wf, h) + self.fc(self.uf, xi))
            i = torch.sigmoid(self.fc(self.wi, h) + self.fc(self.ui, xi))
            g = torch.tanh(self.fc(self.wg, h) + self.fc(self.ug, xi))
            o = torch.sigmoid(self.fc(self.wo, h) + self.fc(self.uo, xi))
            c = f * c + i * g
            h = o * torch.tanh(c)
            ys.append(h)
            first = first or (h, c)
        if self.train_mode and self.training:
            h, c = first  # what upstream's backward leaves in h_gpu, c_gpu (module docstring)
        self.keep(h=h, c=c)
        return self.stack(ys)
