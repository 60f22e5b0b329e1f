"""Upstream: make_convolutional_layer / forward_convolutional_layer (src/convolutional_layer.c),
parse_convolutional (src/parser.c).

Weights are stored as upstream does: (n, c/groups, size, size), biases, and with
batch_normalize the scales and rolling statistics. Batch norm in inference:
(x - mean) / sqrt(var + .00001) * scale + bias. `fuse()` folds it into the convolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ACTIVATION_IDS, activate, activation_from, train_activate
from . import register
from .base import BuildContext, Layer, check_size
from .batchnorm import BN_EPS, batchnorm_train
from .onednn import PackedConv


@register("convolutional", "conv")
class Convolutional(Layer):
    type_name = "convolutional"
    type_id = 0

    def __init__(self, ctx: BuildContext, *, n=None, size=None, stride=None, pad=None,
                 activation=None, batch_normalize=None, groups=None):
        super().__init__(ctx)
        s = ctx.section
        self.n = n if n is not None else s.int("filters", 1)
        groups = groups if groups is not None else s.int("groups", 1)
        self.size = size if size is not None else s.int("size", 1)
        stride_x, stride_y = s.int("stride_x", -1), s.int("stride_y", -1)
        if stride is not None:
            stride_x = stride_y = stride
        elif stride_x < 1 or stride_y < 1:
            st = s.int("stride", 1)
            stride_x = st if stride_x < 1 else stride_x
            stride_y = st if stride_y < 1 else stride_y
        else:
            s.int("stride", 1)
        self.dilation = s.int("dilation", 1)
        self.antialiasing = s.int("antialiasing", 0)
        if self.size == 1:
            self.dilation = 1
        if pad is None:
            pad = s.int("padding", 0)
            if s.int("pad", 0):
                pad = self.size // 2
        self.pad = pad
        self.activation = activation or activation_from(s)
        self.activation_id = ACTIVATION_IDS[self.activation]
        self.assisted_excitation = s.float("assisted_excitation", 0.0)
        share_index = s.int("share_index", -1000000000)
        self.share_layer = None
        if share_index != -1000000000:
            idx = share_index if share_index >= 0 else ctx.index + share_index
            if not 0 <= idx < ctx.index or not isinstance(ctx.layers[idx], Convolutional):
                raise s.error("share_index", f"layer {idx} is not an earlier [convolutional] layer")
            self.share_layer = ctx.layers[idx]
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a convolutional layer must output an image")
        bn = batch_normalize if batch_normalize is not None else s.int("batch_normalize", 0)
        if s.int("cbn", 0):
            bn = 2
        self.bn = bn
        self.train_mode = ctx.train  # built for training: batch statistics when self.training
        self.binary = s.int("binary", 0)
        self.xnor = s.int("xnor", 0)
        self.use_bin_output = s.int("bin_output", 0)
        deform = [s.int(k, 0) for k in ("sway", "rotate", "stretch", "stretch_sway")]
        if sum(deform) > 1:
            raise s.error("sway", "use only one of sway=1, rotate=1, stretch=1, stretch_sway=1")
        if any(deform):
            raise s.error("sway", "sway/rotate/stretch layers are not supported by darknet_py")
        if self.xnor or groups < 1:
            groups = 1
        self.groups = groups
        if ctx.c % groups or self.n % groups:
            raise s.error("groups", f"groups={groups} must divide the input channels ({ctx.c}) and filters ({self.n})")
        self.stride_x, self.stride_y = stride_x, stride_y
        self.stride = stride_x
        blur_stride = (stride_x, stride_y)
        if self.antialiasing:
            self.stride = self.stride_x = self.stride_y = 1
        self.flipped = s.int("flipped", 0)
        self.dot = s.float("dot", 0.0)
        self.angle = s.float("angle", 15.0)
        self.grad_centr = s.int("grad_centr", 0)
        self.reverse = s.float("reverse", 0.0)
        self.coordconv = s.int("coordconv", 0)
        self.stream = s.int("stream", -1)
        self.wait_stream = s.int("wait_stream", -1)
        if ctx.net.adam:
            self.B1, self.B2, self.eps = ctx.net.B1, ctx.net.B2, ctx.net.eps

        for key, value, low in (("filters", self.n, 1), ("size", self.size, 1), ("stride", min(stride_x, stride_y), 1),
                                ("dilation", self.dilation, 1), ("padding", self.pad, 0)):
            if value < low:
                raise s.error(key, f"must be >= {low}, got {value}")
        self.nweights = (ctx.c // groups) * self.n * self.size * self.size
        check_size(s, "filters", self.nweights)
        out_h = (ctx.h + 2 * self.pad - self.size) // self.stride_y + 1
        out_w = (ctx.w + 2 * self.pad - self.size) // self.stride_x + 1
        if out_h < 1 or out_w < 1:
            raise s.error("size", f"output would be {out_w}x{out_h}: input {ctx.w}x{ctx.h} is too small")
        self.set_output(out_w, out_h, self.n)
        self.bflops = (2.0 * self.nweights * out_h * out_w) / 1e9
        if self.xnor:
            self.bflops /= 32

        shape = (self.n, ctx.c // groups, self.size, self.size)
        if self.share_layer is None:
            self.weights = nn.Parameter(torch.zeros(shape))
            self.biases = nn.Parameter(torch.zeros(self.n))
        if bn and self.share_layer is not None and self.share_layer.bn:
            # upstream's share_index also shares the batch-norm scales and rolling statistics
            self.scales = self.share_layer.scales
            self.register_buffer("rolling_mean", self.share_layer.rolling_mean)
            self.register_buffer("rolling_variance", self.share_layer.rolling_variance)
        elif bn:
            self.scales = nn.Parameter(torch.ones(self.n))
            self.register_buffer("rolling_mean", torch.zeros(self.n))
            # upstream allocates the rolling variance with calloc: 0 until trained or loaded
            self.register_buffer("rolling_variance", torch.zeros(self.n))
        self.blur = None
        if self.antialiasing:
            self.blur = _make_blur(self.n, self.antialiasing, blur_stride, out_w, out_h)
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None
        self._packed: PackedConv | None = None

    def next_shape(self):
        if self.blur is None:
            return super().next_shape()
        w, h = self.blur["out"]  # upstream passes the blur layer's output on
        return w, h, self.n, w * h * self.n

    # -- parameters -----------------------------------------------------------------
    def initialize(self, gen: torch.Generator) -> None:
        """upstream's make_convolutional_layer: weights scale*U(-1, 1), scale = sqrt(2/fan_in)
        (all ones for the normalize_channels activations); biases 0, BN scales 1."""
        if self.share_layer is not None:
            return
        with torch.no_grad():
            if self.activation.startswith("normalize_channels"):
                self.weights.fill_(1.0)
            else:
                fan_in = self.size * self.size * self.c / self.groups
                u = torch.rand(self.weights.shape, generator=gen) * 2 - 1
                self.weights.copy_(u * (2.0 / fan_in) ** 0.5)
            self.biases.zero_()
            if self.bn:
                self.scales.fill_(1.0)

    def conv_weight(self) -> torch.Tensor:
        return self.share_layer.weights if self.share_layer is not None else self.weights

    def conv_bias(self) -> torch.Tensor:
        return self.share_layer.biases if self.share_layer is not None else self.biases

    def weight_arrays(self) -> list[torch.Tensor]:
        if self.share_layer is not None:
            return []  # upstream neither loads nor saves a shared layer's weights
        arrays = [self.biases]
        if self.bn:
            arrays += [self.scales, self.rolling_mean, self.rolling_variance]
        return arrays + [self.weights]

    def load_arrays(self) -> list[torch.Tensor]:
        if self.share_layer is not None:
            return []
        arrays = [self.biases]
        if self.bn and not self.dontloadscales:
            arrays += [self.scales, self.rolling_mean, self.rolling_variance]
        return arrays + [self.weights]

    def after_load(self) -> None:
        if self.flipped:
            # upstream transposes the (c/groups*size*size) x n matrix after reading
            k = self.nweights // self.n
            with torch.no_grad():
                flat = self.weights.detach().reshape(-1)
                self.weights.copy_(flat.reshape(k, self.n).t().reshape(self.weights.shape))

    # -- inference ------------------------------------------------------------------
    def fuse(self, pack: bool = True) -> None:
        """Fold batch norm into the convolution for inference (same arithmetic, one op);
        pack: also pre-pack it for oneDNN (PackedConv; an ONNX export wants F.conv2d)."""
        w, b = self.conv_weight().detach(), self.conv_bias().detach()
        if self.xnor or self.binary:
            w = _binarize_weights(w)
        if self.bn:
            k = self.scales.detach() / torch.sqrt(self.rolling_variance + BN_EPS)
            w = w * k[:, None, None, None]
            b = b - self.rolling_mean * k
        # channels_last weights keep oneDNN's convolutions (and what follows) in NHWC on the CPU
        fmt = torch.channels_last if w.device.type == "cpu" else torch.contiguous_format
        self._fused = (w.contiguous(memory_format=fmt), b.contiguous())
        self._packed = None
        self._pack = pack  # remembered for a re-fuse after a move (_apply)
        if pack and self.blur is None and self._torch_output_hw() == (self.out_h, self.out_w):
            self._packed = PackedConv.build(
                w, b, stride=(self.stride_y, self.stride_x), padding=(self.pad * self.dilation,) * 2,
                dilation=(self.dilation,) * 2, groups=self.groups,
                input_shape=(1, self.c, self.h, self.w), activation=self.activation)

    def _apply(self, fn, recurse=True):
        """.to(device) / .double() / ...: the parameters move (nn.Module), then what is derived
        from them follows: the shared batch-norm buffers are the shared layer's again, and
        the fused (and packed, on the CPU) weights are made anew from the moved ones."""
        where = lambda: (self.conv_weight().device, self.conv_weight().dtype)
        before = where()
        super()._apply(fn, recurse)
        if self.share_layer is not None and self.bn and self.share_layer.bn:
            self._buffers["rolling_mean"] = self.share_layer.rolling_mean
            self._buffers["rolling_variance"] = self.share_layer.rolling_variance
        if self._fused is not None and where() != before:  # a memory format change keeps them
            self.fuse(pack=getattr(self, "_pack", True))
        return self

    def unfuse(self) -> None:
        self._fused = None
        self._packed = None

    def _torch_output_hw(self) -> tuple[int, int]:
        # torch's output size counts the dilation, upstream's does not (see _crop_to)
        span = self.dilation * (self.size - 1) + 1
        return ((self.h + 2 * self.pad * self.dilation - span) // self.stride_y + 1,
                (self.w + 2 * self.pad * self.dilation - span) // self.stride_x + 1)

    def forward(self, x: torch.Tensor, outputs=None) -> torch.Tensor:
        x = self.as_image(x)
        if self.xnor:
            x = torch.where(x > 0, 1.0, -1.0).to(x.dtype)  # upstream's binarize_cpu of the input
        if self._packed is not None and not self.training:
            y = self._packed(x)
            return y if self._packed.fused_activation else activate(y, self.activation)
        if self._fused is not None and not self.training:
            y = F.conv2d(x, self._fused[0], self._fused[1], (self.stride_y, self.stride_x),
                         self.pad * self.dilation, self.dilation, self.groups)
        else:
            w = self.conv_weight()
            if self.xnor or self.binary:
                w = _binarize_weights(w)
            y = F.conv2d(x, w, None, (self.stride_y, self.stride_x),
                         self.pad * self.dilation, self.dilation, self.groups)
            y = self.batchnorm(y) if self.bn else y + self.conv_bias().view(1, -1, 1, 1)
        y = _crop_to(y, self.blur["host"] if self.blur else (self.out_h, self.out_w))
        if self.train_mode and self.training:
            y = train_activate(y, self.activation, getattr(self, "bn_flavor", "cudnn"))  # upstream's gradient (mish)
        elif self.activation == "leaky" and torch.is_inference_mode_enabled():
            y = F.leaky_relu_(y, 0.1)  # in place: y is this layer's own fresh tensor
        else:
            y = activate(y, self.activation)
        if self.blur is not None:
            y = F.conv2d(y, self.blur["weight"].to(y), None, self.blur["stride"], self.blur["pad"], 1, self.n)
        return y

    def batchnorm(self, y: torch.Tensor) -> torch.Tensor:
        """Batch norm: built for training and in training mode, with batch statistics
        (layers/batchnorm.py); else inference with the rolling statistics."""
        if self.train_mode and self.training:
            return batchnorm_train(self, y, self.conv_bias())
        k = self.scales / torch.sqrt(self.rolling_variance + BN_EPS)
        return (y - self.rolling_mean.view(1, -1, 1, 1)) * k.view(1, -1, 1, 1) + self.conv_bias().view(1, -1, 1, 1)


def _crop_to(y: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    # upstream's output size ignores dilation; with unusual pads torch's can differ by a row
    h, w = hw
    if y.shape[2] != h or y.shape[3] != w:
        y = F.pad(y, (0, max(0, w - y.shape[3]), 0, max(0, h - y.shape[2])))[:, :, :h, :w]
    return y


def _binarize_weights(w: torch.Tensor) -> torch.Tensor:
    # upstream's binarize_weights: sign of each weight times the filter's mean |w|
    mean = w.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
    return torch.where(w > 0, mean, -mean)


def _make_blur(n: int, mode: int, stride: tuple[int, int], w: int, h: int) -> dict:
    """Upstream's antialiasing: a fixed depthwise blur (3x3 binomial, or 2x2 box) with the stride."""
    if mode == 2:
        size, pad = 2, 0
        k = torch.full((2, 2), 0.25)
    else:
        size, pad = 3, 1
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    sx, sy = stride
    out_w = (w + 2 * pad - size) // sx + 1
    out_h = (h + 2 * pad - size) // sy + 1
    return {"weight": k.expand(n, 1, size, size).clone(), "stride": (sy, sx), "pad": pad,
            "host": (h, w), "out": (out_w, out_h)}
