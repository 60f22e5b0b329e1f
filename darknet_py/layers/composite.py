"""A layer made of inner layers (upstream's crnn and conv_lstm hold convolutional layers in
l.input_layer / l.uf ...): parameters, .weights arrays, loading and fusing are the inner
layers', in the order `_convs()` gives (the order of upstream's save_weights_upto)."""
from __future__ import annotations

import torch

from .base import Layer


class Composite(Layer):
    _fused = None  # network.py re-fuses a fused layer after load_weights

    def _convs(self) -> list[Layer]:
        raise NotImplementedError

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
