"""A layer made of inner layers (upstream's crnn and conv_lstm hold convolutional layers in
l.input_layer / l.uf ...): parameters, .weights arrays, loading and fusing are the inner
layers', in the order `_convs()` gives (the order of upstream's save_weights_upto)."""
from __future__ import annotations

import torch

from ..activations import activation_from
from ..cfg import Option, Section
from .base import BuildContext, Layer
from .convolutional import Convolutional


def _conv_section(s: Section, values: dict[str, object], lines: dict[str, str]) -> Section:
    """A synthetic [convolutional] section for one of the inner layers, each option carrying
    the line of the key it comes from (so errors point at the cfg)."""
    opts = []
    for key, value in values.items():
        src = next((o for o in s.options if o.key == lines.get(key, key)), None)
        opts.append(Option(key, str(value), src.line if src else s.line, True))
    return Section(s.name, s.line, s.path, opts)


class Composite(Layer):
    _fused = None  # network.py re-fuses a fused layer after load_weights

    def _convs(self) -> list[Layer]:
        raise NotImplementedError

    def read_conv_keys(self, ctx: BuildContext, default_activation: str) -> dict:
        """The keys parse_crnn / parse_conv_lstm read for their inner convolutions (size 3,
        stride 1, dilation 1, pad/padding, groups, activation, batch_normalize, xnor); also
        kept as this layer's summary fields."""
        s = ctx.section
        self.size = s.int("size", 3)
        self.stride = s.int("stride", 1)
        self.dilation = s.int("dilation", 1)
        pad = s.int("pad", 0)
        padding = s.int("padding", 0)
        self.pad = self.size // 2 if pad else padding
        self.groups = s.int("groups", 1)
        activation = activation_from(s, default=default_activation)
        batch_normalize = s.int("batch_normalize", 0)
        self.xnor = s.int("xnor", 0)
        return {"size": self.size, "stride": self.stride, "dilation": self.dilation, "padding": self.pad,
                "groups": self.groups, "activation": activation, "batch_normalize": batch_normalize,
                "xnor": self.xnor}

    @staticmethod
    def inner_conv(ctx: BuildContext, common: dict, w: int, h: int, c: int, n: int, key: str) -> Convolutional:
        """An inner [convolutional] layer of n filters on a w x h x c input; its filters come
        from the cfg key `key` (for error lines)."""
        sec = _conv_section(ctx.section, {"filters": n, **common}, {"filters": key})
        sub = BuildContext(index=ctx.index, w=w, h=h, c=c, inputs=w * h * c, net=ctx.net, section=sec,
                           layers=ctx.layers, batch=ctx.batch, train=ctx.train)
        return Convolutional(sub)

    def initialize(self, gen: torch.Generator) -> None:
        """The inner layers are made (and initialized) as any other."""
        for l in self._convs():
            l.initialize(gen)

    def weight_arrays(self):
        return [t for l in self._convs() for t in l.weight_arrays()]

    def load_arrays(self):
        return [t for l in self._convs() for t in l.load_arrays()]

    def after_load(self) -> None:
        for l in self._convs():
            l.after_load()

    def fuse(self, pack: bool = True) -> None:
        for l in self._convs():
            l.fuse(pack)
        self._fused = True

    def unfuse(self) -> None:
        for l in self._convs():
            l.unfuse()
        self._fused = None
