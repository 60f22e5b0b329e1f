"""Upstream: parse_rnn (src/parser.c), make_rnn_layer / forward_rnn_layer_gpu /
backward_rnn_layer_gpu (src/rnn_layer.c).

A vanilla RNN of three inner connected layers (layers/recurrent.py): input (inputs ->
hidden, `activation`), self (hidden -> hidden, on the state; logistic with logistic=1, loggy
with logistic=2, else `activation`) and output (hidden -> output, `activation`). Each step:

    state = [state if shortcut] + input(x) + self(state);  y = output(state)

Training: the state starts at zero for every batch (forward_rnn_layer_gpu fills it), so
nothing carries from one mini-batch to the next. Inference: it carries over from call to call.
.weights: input, self, output (save_connected_weights each).

Backward (the gradient for the layers before this one; upstream never updates the layer
itself): autograd of the forward above, as backward_rnn_layer_gpu is, except that with
shortcut=1 upstream hands the previous step the state's delta after the self layer's
activation gradient (and batch norm) has been applied to it in place, which autograd does not.
"""
from __future__ import annotations

from ..activations import activation_from
from . import register
from .base import BuildContext
from .recurrent import Recurrent


@register("rnn")
class RNN(Recurrent):
    type_name = "rnn"
    type_id = 18
    inner = ("input_layer", "self_layer", "output_layer")

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.hidden = s.int("hidden", 1)
        if self.hidden < 1:
            raise s.error("hidden", f"must be >= 1, not {self.hidden}")
        activation = activation_from(s, default="logistic")
        bn = s.int("batch_normalize", 0)
        log = s.int("logistic", 0)
        self.shortcut = s.int("shortcut", 0)
        self_activation = "loggy" if log == 2 else "logistic" if log == 1 else activation
        self.input_layer = self.connected(ctx.inputs, self.hidden, activation, bn, "hidden")
        self.self_layer = self.connected(self.hidden, self.hidden, self_activation, bn, "hidden")
        self.output_layer = self.connected(self.hidden, self.output_size, activation, bn, "output")
        # make_rnn_layer sets out_w = out_h = 1 but leaves batch_normalize and activation at 0
        self.set_output(1, 1, self.output_size)
        self.finish()

    def reset_state(self, stream: int | None = None) -> None:
        """reset_rnn_state clears `outputs` floats at stream * outputs of state_gpu, which holds
        `hidden` floats per stream: the whole row only when output == hidden."""
        t = self._state.get("state")
        if stream is None or t is None:
            return super().reset_state(stream)
        t = t.clone()  # a fresh tensor: the kept one may be an inference-mode tensor
        t.view(-1)[stream * self.outputs:(stream + 1) * self.outputs] = 0
        self._state["state"] = t

    def forward(self, x, outputs=None):
        self.prepare_inner()
        xs, batch = self.split_steps(x)
        train = self.train_mode and self.training
        state = x.new_zeros(batch, self.hidden) if train else self.carried("state", batch, self.hidden, x)
        ys = []
        for xi in xs:
            a = self.fc(self.input_layer, xi)
            b = self.fc(self.self_layer, state)
            state = state + a + b if self.shortcut else a + b
            ys.append(self.fc(self.output_layer, state))
        if not train:
            self.keep(state=state)
        return self.stack(ys)
