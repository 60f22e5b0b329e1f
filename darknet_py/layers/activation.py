"""Upstream: make_activation_layer / forward_activation_layer (src/activation_layer.c),
parse_activation (src/parser.c), activate_array (src/activations.c).

An [activation] layer copies its input and applies an activation. `activate_array` is
upstream's CPU activate_array, which many layers (connected, sam, scale_channels,
activation) use: it handles only the activations of upstream's scalar `activate()`
switch; any other one (relu6, swish, mish, hard_mish, normalize_channels*) makes
upstream's `activate()` return 0, so the output is all zeros. We reproduce that (and warn
when the layer is built) instead of silently computing something upstream does not.
"""
from __future__ import annotations

import warnings

import torch

from ..activations import ACTIVATION_IDS, activate, activation_from
from . import register
from .base import BuildContext, Layer

# the activations upstream's activate() switch knows (src/activations.c)
ACTIVATE_ARRAY_SUPPORTED = frozenset({
    "linear", "logistic", "loggy", "relu", "elu", "selu", "gelu", "relie", "ramp",
    "revleaky", "leaky", "tanh", "plse", "stair", "hardtan", "lhtan",
})


def activate_array(x: torch.Tensor, name: str) -> torch.Tensor:
    """Upstream's CPU activate_array: unsupported activations give 0 (see module docstring)."""
    if name == "linear":
        return x
    if name not in ACTIVATE_ARRAY_SUPPORTED:
        return torch.zeros_like(x)
    return activate(x, name)


def read_array_activation(layer: Layer, section, default: str = "linear") -> None:
    """activation= of a layer that applies it with activate_array; warns when upstream's
    activate_array gives zeros for it."""
    layer.activation = activation_from(section, default=default)
    layer.activation_id = ACTIVATION_IDS[layer.activation]
    if layer.activation not in ACTIVATE_ARRAY_SUPPORTED:
        warnings.warn(f"{layer.path}:{layer.line}: activation '{layer.activation}' is not supported by upstream's "
                      f"activate_array for this layer type: its output is all zeros (as upstream's)",
                      stacklevel=3)


@register("activation")
class Activation(Layer):
    type_name = "activation"
    type_id = 17

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        read_array_activation(self, ctx.section)
        self.set_output(ctx.w, ctx.h, ctx.c)
        self.outputs = self.inputs = ctx.inputs

    def forward(self, x, outputs=None):
        return activate_array(x, self.activation)
