"""LAYERS: cfg section name -> layer class, with upstream's aliases (string_to_layer_type).

One module per upstream layer type (convolutional.py, route.py, ...); the detection layers
are packages holding their training delta beside the forward (yolo/, region/,
gaussian_yolo/), delta_common.py what those deltas share; base.py the Layer contract.
"""
from __future__ import annotations

from .base import BuildContext, Layer

LAYERS: dict[str, type[Layer]] = {}


def register(*names: str):
    def deco(cls):
        for name in names:
            LAYERS[name] = cls
        return cls
    return deco


def _load_all() -> None:
    # importing the modules fills LAYERS through @register
    from . import convolutional, route, shortcut, pooling, upsample, yolo  # noqa: F401
    from . import (activation, avgpool, batchnorm, connected, contrastive, cost, crnn, crop,  # noqa: F401
                   detection, dropout, empty, gaussian_yolo, implicit, region, reorg, reorg_old, sam,
                   scale_channels, softmax)
    from . import conv_lstm, history, local, normalization  # noqa: F401
    from . import gru, lstm, rnn  # noqa: F401


__all__ = ["LAYERS", "register", "BuildContext", "Layer"]
