"""Upstream: what make_rnn_layer, make_gru_layer and make_lstm_layer (src/rnn_layer.c,
src/gru_layer.c, src/lstm_layer.c) share: a layer made of inner [connected] layers
(make_connected_layer(batch, steps, ...)), run once per time step.

Layout of a batch: built for training, the layer's batch is `time_steps` consecutive
mini-batches of `batch / time_steps` streams each, step-major (row j*streams + i is step j of
stream i), as get_rnn_data lays the characters out. Built for inference (upstream's
network_predict: state.train = 0) the whole batch is one step, and the state carries over
from one call to the next; `reset_state()` clears it (upstream's reset_rnn_state, a CUDA-only
function).

.weights: each inner layer writes save_connected_weights (biases, weights, then with
batch_normalize scales, rolling mean, rolling variance) in the order `inner` lists them; a
file with major or minor > 1000 is read transposed (load_connected_weights).

Update: upstream's update_network / update_network_gpu skip every layer whose l.train is 0,
and none of make_rnn_layer / make_gru_layer / make_lstm_layer (nor make_connected_layer)
sets it, so these layers are never updated by upstream's training (only the rolling
statistics of their batch-normalized inner layers move, in the forward). train/sgd.py
leaves them alone likewise.
"""
from __future__ import annotations

import torch

from ..cfg import Option, Section
from .base import BuildContext, Layer
from .connected import Connected


def inner_section(s: Section, values: dict[str, object], lines: dict[str, str]) -> Section:
    """A synthetic [connected] section for an inner layer; each option carries the line of
    the recurrent layer's key it comes from (`lines` maps inner key -> outer key)."""
    opts = []
    for key, value in values.items():
        src = s.find(lines.get(key, key))
        opts.append(Option(key, str(value), src.line if src else s.line, True))
    return Section("connected", s.line, s.path, opts)


class Recurrent(Layer):
    """Base of [rnn], [gru], [lstm]: inner connected layers and the time-step bookkeeping."""

    inner: tuple[str, ...] = ()  # attribute names of the inner layers, in .weights order
    created: tuple[str, ...] = ()  # the order make_*_layer creates (and initializes) them
    onnx_refusal = "its state carries over from one call to the next, which an ONNX graph cannot hold"

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.output_size = s.int("output", 1)
        if self.output_size < 1:
            raise s.error("output", f"must be >= 1, not {self.output_size}")
        if ctx.inputs < 1:
            raise s.error(None, f"the layer before a [{s.name}] layer has no outputs")
        self.inputs = ctx.inputs
        # upstream's make_*_layer leaves w, h, c (and n, size, stride, groups) at 0
        self.w = self.h = self.c = 0
        # upstream's detector and rnn generate parse with time_steps=1; training uses the cfg's
        self.steps = max(1, ctx.net.time_steps) if ctx.train else 1
        self.train_mode = ctx.train
        self._ctx = ctx
        self._state: dict[str, torch.Tensor] = {}

    def connected(self, inputs: int, outputs: int, activation: str, bn: int, key: str = "output") -> Connected:
        s = self._ctx.section
        sec = inner_section(s, {"output": outputs, "activation": activation, "batch_normalize": bn},
                            {"output": key, "batch_normalize": "batch_normalize", "activation": "activation"})
        c = self._ctx
        sub = BuildContext(index=c.index, w=1, h=1, c=inputs, inputs=inputs, net=c.net, section=sec,
                           layers=c.layers, batch=c.batch, train=c.train)
        return Connected(sub)

    def finish(self) -> None:
        del self._ctx

    def _layers(self, names=None) -> list[Connected]:
        return [getattr(self, n) for n in (names or self.inner)]

    # -- weights ----------------------------------------------------------------------
    def initialize(self, gen: torch.Generator) -> None:
        for l in self._layers(self.created or self.inner):
            l.initialize(gen)

    def weight_arrays(self):
        return [t for l in self._layers() for t in l.weight_arrays()]

    def load_arrays(self):
        return [t for l in self._layers() for t in l.load_arrays()]

    def load_from(self, reader, transpose: bool) -> bool:
        return all(l.load_from(reader, transpose) for l in self._layers())

    # -- state ------------------------------------------------------------------------
    def reset_state(self, stream: int | None = None) -> None:
        """Clear the carried state (of one stream: upstream's reset_rnn_state(net, b))."""
        if stream is None:
            self._state = {}
            return
        for k, t in self._state.items():
            if stream < t.shape[0]:
                t = t.clone()  # a fresh tensor: the kept one may be an inference-mode tensor
                t[stream] = 0
                self._state[k] = t

    def carried(self, name: str, batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """The state `name` (batch, size) from the previous call (zeros when there is none,
        or when its shape, device or dtype changed)."""
        t = self._state.get(name)
        shape = (batch, size)
        if t is None or t.shape != shape or t.device != like.device or t.dtype != like.dtype:
            t = like.new_zeros(shape)
        return t

    def keep(self, **states: torch.Tensor) -> None:
        for k, v in states.items():
            self._state[k] = v.detach()

    def split_steps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """The batch as `steps` (streams, inputs) tensors, and the number of streams."""
        total = x.shape[0]
        if total % self.steps:
            raise ValueError(f"{self.type_name} layer {self.index}: batch {total} is not a multiple "
                             f"of time_steps={self.steps}")
        batch = total // self.steps
        flat = x.reshape(total, -1)
        return [flat[i * batch:(i + 1) * batch] for i in range(self.steps)], batch

    def prepare_inner(self) -> None:
        flavor = getattr(self, "bn_flavor", "cudnn")
        for l in self._layers():
            l.bn_flavor = flavor

    def fc(self, layer: Connected, x: torch.Tensor) -> torch.Tensor:
        """One inner connected layer on (batch, inputs) -> (batch, outputs)."""
        return layer(x).reshape(x.shape[0], -1)

    def stack(self, ys: list[torch.Tensor]) -> torch.Tensor:
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 0)
        return y.reshape(y.shape[0], self.outputs, 1, 1)
