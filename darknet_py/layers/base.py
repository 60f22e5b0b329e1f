"""Upstream: the shared part of `struct layer` (include/darknet.h) and parse_network_cfg's
per-layer keys (src/parser.c).

A layer is built from its cfg section and a BuildContext (the previous layer's output
shape, the layers built so far, the [net] options). It records upstream's summary fields
and runs forward on (N, C, H, W) tensors. `weight_arrays()` lists its parameters in the
order a .weights file stores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cfg import Section
from ..cfg.options import NetOptions


@dataclass
class BuildContext:
    index: int
    w: int
    h: int
    c: int
    inputs: int
    net: NetOptions
    section: Section
    layers: list = field(default_factory=list)  # the layers built before this one
    batch: int = 1
    train: bool = False

    def required_refs(self, key: str) -> tuple[list[int], int]:
        """The earlier layers a required key (route's layers=, shortcut's from=) names, and its line."""
        line = self._required_line(key)
        return [self.layer_index(key, v, line) for v in self.section.ints(key)], line

    def required_ref(self, key: str) -> tuple[int, int]:
        """As required_refs for a key that names exactly one layer (sam's and scale_channels' from=)."""
        line = self._required_line(key)
        return self.layer_index(key, self.section.int(key), line), line

    def _required_line(self, key: str) -> int:
        opt = self.section.find(key)
        if opt is None:
            raise self.section.error(key, f"a [{self.section.name}] layer needs {key}=")
        return opt.line

    def layer_index(self, key: str, value: int, line: int | None = None) -> int:
        """Resolve a relative (negative) or absolute layer reference as upstream does."""
        idx = self.index + value if value < 0 else value
        if not 0 <= idx < self.index:
            raise self.section.error(key, f"refers to layer {idx}, but only layers 0..{self.index - 1} exist before layer {self.index}", line)
        return idx


MAX_FLOATS = 1 << 31


def check_size(section: Section, key: str, floats: int) -> None:
    """Refuse absurd sizes before allocating (a typo like filters=999999 must not eat the RAM)."""
    if floats > MAX_FLOATS:
        raise section.error(key, f"the layer would need {floats} floats; that is not a plausible network")


@dataclass
class LossContext:
    """What a loss layer needs of the network in training (upstream's network_state and net):
    the network's input size, net.seen (already counting this mini-batch, as upstream), whose
    training arithmetic (Network.train_flavor) and every loss layer's input (forward_train)."""

    netw: int
    neth: int
    seen: int
    flavor: str
    inputs: dict[int, torch.Tensor]


class LayerLoss:
    """A loss layer's part of one mini-batch: its cost (what get_network_cost averages), the
    scalar whose autograd backward hands the layers before it upstream's delta (None when no
    gradient flows there), and for the detection layers their statistics (total_bbox,
    rewritten_bbox, ...) and the line upstream prints.

    `finish(loss)`, when given, fills cost, line and stats from values still on the device: it
    runs at the first read of any of them, so a trainer that reads them after starting the
    backward lets a GPU go on working meanwhile instead of waiting for the host's read."""

    def __init__(self, cost: float | None, surrogate: torch.Tensor | None = None, stats: Any = None,
                 line: str | None = None, finish=None):
        self._cost, self.surrogate, self._stats, self._line = cost, surrogate, stats, line
        self._finish = finish

    def _finished(self) -> "LayerLoss":
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish(self)
        return self

    def set(self, cost: float, line: str | None) -> None:
        self._cost, self._line = cost, line

    cost = property(lambda self: self._finished()._cost)
    stats = property(lambda self: self._finished()._stats)
    line = property(lambda self: self._finished()._line)


class Layer(nn.Module):
    """Base of every layer. Subclasses set upstream's summary fields in __init__."""

    type_name = "none"  # upstream's name table entry ("none" where it has none)
    type_id = -1  # upstream's LAYER_TYPE enum
    onnx_refusal: str | None = None  # why an ONNX export (outputs/export.py) cannot hold this layer
    # what the layer is, for the network and the trainer (they never compare type names)
    is_detection_output = False  # get_network_boxes reads its output (predict_raw returns it)
    is_detector_head = False  # upstream's "Detection layer": train_detector takes the last one's keys
    produces_loss = False  # its training forward reads the truth: loss() gives its cost and delta
    is_prediction = True  # get_network_output may stop here (not [cost], whose output is zeros)

    def __init__(self, ctx: BuildContext):
        super().__init__()
        s = ctx.section
        self.index = ctx.index
        self.w, self.h, self.c, self.inputs = ctx.w, ctx.h, ctx.c, ctx.inputs
        self.out_w = self.out_h = self.out_c = self.outputs = 0
        self.n = self.size = self.stride = self.groups = self.bn = 0
        self.activation_id = 0
        self.nweights = 0
        self.bflops = 0.0
        self.refs: list[int] = []  # other layers whose outputs this layer reads
        self.path, self.line = s.path, s.line
        # keys upstream reads for every layer (parse_network_cfg_custom)
        self.clip = s.float("clip", 0.0)
        self.onlyforward = s.int("onlyforward", 0)
        self.dont_update = s.int("dont_update", 0)
        self.burnin_update = s.int("burnin_update", 0)
        self.stopbackward = s.int("stopbackward", 0)
        self.train_only_bn = s.int("train_only_bn", 0)
        self.dontload = s.int("dontload", 0)
        self.dontloadscales = s.int("dontloadscales", 0)
        self.learning_rate_scale = s.float("learning_rate", 1.0)

    def set_output(self, w: int, h: int, c: int) -> None:
        self.out_w, self.out_h, self.out_c = w, h, c
        self.outputs = w * h * c

    def next_shape(self) -> tuple[int, int, int, int]:
        """(w, h, c, inputs) that the next layer is built with (upstream's params after this layer)."""
        return self.out_w, self.out_h, self.out_c, self.outputs

    def forward(self, x: torch.Tensor, outputs: dict[int, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no forward pass")

    def weight_arrays(self) -> list[torch.Tensor]:
        """Parameters and buffers in .weights file order (empty for most layers)."""
        return []

    def load_arrays(self) -> list[torch.Tensor]:
        """What a .weights file holds for this layer when loading (usually weight_arrays())."""
        return self.weight_arrays()

    def load_from(self, reader, transpose: bool) -> bool:
        """Fill this layer's arrays from a weights reader; False if the file ended early."""
        ok = all(reader.fill(t) for t in self.load_arrays())
        if ok:
            self.after_load()
        return ok

    def after_load(self) -> None:
        pass

    def params_count(self) -> int:
        return sum(t.numel() for t in self.weight_arrays())

    def summary(self) -> dict:
        return {
            "i": self.index, "type": self.type_name, "type_id": self.type_id,
            "w": self.w, "h": self.h, "c": self.c,
            "out_w": self.out_w, "out_h": self.out_h, "out_c": self.out_c, "outputs": self.outputs,
            "n": self.n, "size": self.size, "stride": self.stride, "groups": self.groups, "bn": self.bn,
            "activation": self.activation_id, "nweights": self.nweights, "inputs": self.inputs,
            "params": self.params_count(), "bflops": round(self.bflops, 6),
        }

    def truth_rows(self, x: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A loss layer's view of its values and of the truth: (n, values) each, float32, x
        detached. A truth row of another length is an error naming the layer."""
        n = x.shape[0]
        v = x.detach().reshape(n, -1).float()
        t = truth.reshape(n, -1).to(v)
        if t.shape != v.shape:
            raise ValueError(f"{self.type_name} layer {self.index}: the truth has {t.shape[1]} values per image, "
                             f"the layer {v.shape[1]} (classes in the data file must match the cfg)")
        return v, t

    def loss(self, output: torch.Tensor, truth: torch.Tensor, net: LossContext) -> LayerLoss:
        """Upstream's training forward with state.truth, for a layer with produces_loss: its
        output in training, the mini-batch's truth, what it needs of the network."""
        raise NotImplementedError(f"[{self.type_name}] layer {self.index} computes no loss")

    def delta_loss(self, inp: torch.Tensor, delta: torch.Tensor, cost: float, flavor: str,
                   stats: Any = None) -> LayerLoss:
        """The LayerLoss of a delta upstream hands back from `inp` (the tensor the backward
        starts from: the layer's input, or its output where that passes the delta on)."""
        term = self.backward_surrogate(inp, delta, flavor) if inp.requires_grad else None
        n = inp.shape[0]
        if getattr(stats, "pending", False):  # its numbers are read from the device when asked for
            def finish(loss):
                stats.resolve()
                loss.set(stats.cost, stats.line(self, n))
            return LayerLoss(None, term, stats, None, finish)
        line = stats.line(self, n) if stats is not None else None
        return LayerLoss(cost, term, stats, line)

    def backward_surrogate(self, inp: torch.Tensor, delta: torch.Tensor, flavor: str) -> torch.Tensor:
        """For a detection layer: a scalar whose gradient with respect to this layer's input
        `inp` is minus the delta its backward hands the previous layer (upstream's delta is
        target minus output, i.e. minus the gradient): -sum(delta * input). The logistic
        inside the layer is not differentiated, as upstream passes l.delta straight on."""
        return -(delta.to(inp.dtype) * inp.reshape(delta.shape)).sum()

    def as_image(self, x: torch.Tensor) -> torch.Tensor:
        """View a batch as this layer's declared input image (N, c, h, w)."""
        if x.dim() == 4 and x.shape[1:] == (self.c, self.h, self.w):
            return x  # reshape would restride a batch of 1 and lose its channels_last memory format
        return x.reshape(x.shape[0], self.c, self.h, self.w)


class StaleDelta(torch.autograd.Function):
    """Identity whose backward adds what the layer's never-cleared delta buffer still holds and
    keeps the new total: [route] and [upsample] on upstream's CPU build, whose forward_network
    clears a delta only for layers with l.train set, which these two never set."""

    @staticmethod
    def forward(ctx, y, layer):
        ctx.layer = layer
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        old = getattr(ctx.layer, "_stale_delta", None)
        total = g if old is None or old.shape != g.shape else g + old
        ctx.layer._stale_delta = total.detach()
        return total, None
