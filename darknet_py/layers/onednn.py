"""Inference convolutions on the CPU through oneDNN with pre-packed weights.

`F.conv2d` on the CPU hands its weight to oneDNN, which reorders it into its own blocked
layout on every call, and returns a separate tensor that the activation then reads and
writes again. For inference the weight never changes, so `PackedConv` reorders it once (at
`fuse()`) and asks oneDNN to apply the activation inside the convolution (a post-op) where
upstream's activation is one oneDNN has: same arithmetic, one pass over memory fewer.
The op is the one torch.compile's CPU backend emits for frozen convolutions; where this
build of torch lacks it, `PackedConv.build` returns None and the layer keeps F.conv2d.
"""
from __future__ import annotations

import torch

# upstream activation -> oneDNN post-op (name, scalars); the others run after the convolution
POST_OPS = {
    "linear": ("none", []),
    "leaky": ("leaky_relu", [0.1]),
    "revleaky": ("leaky_relu", [0.1]),
    "relu": ("relu", []),
    "logistic": ("sigmoid", []),
    "tanh": ("tanh", []),
    "swish": ("swish", []),
}


def available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))
    except (RuntimeError, AttributeError):
        return False


class PackedConv:
    """conv2d(x, weight, bias) followed by `activation` when that is a oneDNN post-op
    (`self.fused_activation` says whether it was). Input and output are NCHW tensors in
    channels_last memory. Copies and pickles carry the plain weight and pack it again."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                 input_shape: tuple[int, int, int, int], activation: str):
        self.weight, self.bias = weight.contiguous(), bias.contiguous()
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups, self.input_shape, self.activation = groups, tuple(input_shape), activation
        post_op = POST_OPS.get(activation)
        self.attr, self.scalars = post_op if post_op is not None else POST_OPS["linear"]
        self.fused_activation = post_op is not None
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(
            self.weight, self.padding, self.stride, self.dilation, groups, list(self.input_shape))

    def __reduce__(self):
        return (type(self), (self.weight, self.bias, tuple(self.stride), tuple(self.padding),
                             tuple(self.dilation), self.groups, self.input_shape, self.activation))

    @classmethod
    def build(cls, weight: torch.Tensor, bias: torch.Tensor, *, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], groups: int,
              input_shape: tuple[int, int, int, int], activation: str) -> "PackedConv | None":
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or not available():
            return None
        try:
            conv = cls(weight, bias, stride, padding, dilation, groups, input_shape, activation)
            # one call on a zero image checks that this build runs it
            conv(torch.zeros(input_shape).contiguous(memory_format=torch.channels_last))
        except (RuntimeError, TypeError):
            return None
        return conv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, "")
