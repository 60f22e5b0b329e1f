"""Upstream: make_batchnorm_layer / forward_batchnorm_layer (src/batchnorm_layer.c),
parse_batchnorm (src/parser.c), load_batchnorm_weights (src/parser.c).

A standalone batch normalization; inference uses the rolling statistics:
(x - mean) / sqrt(var + .00001) * scale + bias. The .weights file holds biases, scales,
rolling mean and rolling variance (c values each).

Training (what a batch-normalized [convolutional] layer runs too, as upstream's
forward_convolutional_layer calls forward_batchnorm_layer): backward_batchnorm_layer with
mean_cpu, variance_cpu, normalize_cpu, mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu
(src/blas.c); CmBN (batch_normalize=2): forward_batchnorm_layer_gpu + fast_v_cbn_kernel
(src/blas_kernels.cu) and cuDNN's backward.

Training-mode batch norm of a layer with `scales`, `rolling_mean`, `rolling_variance` and a
bias (`conv_bias()` or `biases`), on (N, C, H, W). Upstream's builds disagree, so there are
two flavours for batch_normalize=1 (`layer.bn_flavor`, default "cudnn"):

"cpu"   (the parity fixtures; upstream's CPU build)
        mean over batch*spatial, variance divided by batch*spatial - 1, normalized with
        sqrt(var + .00001); rolling = .9*rolling + .1*batch statistic (unbiased variance).
        Backward with upstream's formulas, which are not the derivative of that forward:
            dx = d/(sqrt(var) + eps) + dvar*2*(x - mean)/N + dmean/N
        (autograd would have 1/sqrt(var + eps) and 2*(x - mean)/(N - 1)), d = dy*scales.
        The bias gets NO gradient: upstream's CPU backward_batchnorm_layer never fills
        bias_updates, so a batch-normalized layer's biases never train on the CPU build.
"cudnn" (upstream's GPU build with CUDNN=1): cudnnBatchNormalizationForwardTraining with
        factor .01: normalized with the biased variance, rolling = .99*rolling + .01*stat
        (unbiased variance), backward the exact derivative, bias gradient included. This is
        exactly torch's F.batch_norm(training=True, momentum=.01, eps=1e-5).

batch_normalize=2 (CmBN) always follows the CUDA path (the CPU build treats it as 1):
statistics averaged over the mini-batches of an iteration. With k = layer.cbn_index (1-based
mini-batch number within the iteration, set by the training loop; default 1) and N = batch*
spatial:
    m_k = mean(x);  s_k = max(sum(x^2)/(N - 1), m_k^2)
    m_avg = m_k/k + (1 - 1/k)*m_avg;  s_avg = s_k/k + (1 - 1/k)*s_avg
    var = max(0, s_avg - m_avg^2);  y = (x - m_avg)/sqrt(var + eps)*scales + biases
(an element whose y is NaN/inf keeps x), rolling = .99*rolling + .01*(m_avg, var) at every
mini-batch. Backward as cudnnBatchNormalizationBackward given that saved mean and inverse
std: dx = scales*istd*(dy - sum(dy)/N - xhat*sum(dy*xhat)/N) (m_avg and var as if they
were this mini-batch's own statistics).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .base import BuildContext, Layer

BN_EPS = 0.00001


@register("batchnorm")
class Batchnorm(Layer):
    type_name = "batchnorm"
    type_id = 24

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        c = ctx.c
        self.set_output(ctx.w, ctx.h, c)
        self.inputs = self.outputs
        self.n = c
        self.biases = nn.Parameter(torch.zeros(c))
        self.scales = nn.Parameter(torch.ones(c))
        self.register_buffer("rolling_mean", torch.zeros(c))
        self.register_buffer("rolling_variance", torch.ones(c))
        self.train_mode = ctx.train  # built for training: batch statistics when self.training

    def weight_arrays(self):
        return [self.biases, self.scales, self.rolling_mean, self.rolling_variance]

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        if self.train_mode and self.training:
            return batchnorm_train(self, x, self.biases)
        k = self.scales / torch.sqrt(self.rolling_variance + BN_EPS)
        return (x - self.rolling_mean.view(1, -1, 1, 1)) * k.view(1, -1, 1, 1) + self.biases.view(1, -1, 1, 1)


# ============================================================== training
EPS = BN_EPS
FLAVORS = ("cpu", "cudnn")


def _c(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


class UpstreamCpuBatchNorm(torch.autograd.Function):
    """Upstream: normalize_cpu + scale_bias + add_bias forward, backward_batchnorm_layer backward.

    Inputs x (N, C, H, W), scales, biases and the (non-differentiable) batch mean and
    unbiased variance. Every formula is per channel but two sums over the map, sum(dy) and
    sum(dy * (x - mean)) (what aten's batch-norm backward reduces in one pass), so the
    backward is three passes over memory where the formula by formula form took ten:

        x_norm = (x - mean) * istd,  istd = 1/sqrt(var + eps)
        d_scales = sum(dy * x_norm)                                      backward_scale_cpu
        mean_delta = scales * sum(dy) * -istd                            mean_delta_cpu
        var_delta = scales * sum(dy * (x - mean)) * -.5 * istd^3         variance_delta_cpu
        dx = dy * scales / (sqrt(var) + eps) + (x - mean) * 2 var_delta / n   normalize_delta_cpu
             + mean_delta / n
    """

    @staticmethod
    def forward(ctx, x, scales, biases, mean, var):
        istd = torch.rsqrt(var + EPS)
        k = scales * istd
        ctx.save_for_backward(x, scales, mean, var, istd)
        # (x - mean) first, as normalize_cpu: x*k - mean*k cancels catastrophically when x is
        # large and close to the mean (a 1x1 map of a batch of equal images: upstream's x_norm
        # is exactly 0 there, the output exactly the bias)
        return torch.addcmul(_c(biases), x - _c(mean), _c(k))

    @staticmethod
    def backward(ctx, dy):
        x, scales, mean, var, istd = ctx.saved_tensors
        n = x.numel() // x.shape[1]  # batch * spatial
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, x, None, None, None, mean, istd, True, EPS, [False, True, True])
        d_scales = sum_dy_xhat
        mean_delta = scales * sum_dy * -istd
        var_delta = scales * (sum_dy_xhat / istd) * (-0.5 * istd ** 3)
        b = 2 * var_delta / n
        dx = torch.addcmul(_c(mean_delta / n), dy, _c(scales / (torch.sqrt(var) + EPS)))
        dx.addcmul_(x - _c(mean), _c(b))  # (x - mean) first, as in the forward: no cancellation
        d_biases = torch.zeros_like(scales)  # upstream's CPU backward leaves bias_updates alone
        return dx, d_scales, d_biases, None, None


class CudnnBatchNormBackward(torch.autograd.Function):
    """Upstream: normalize_scale_bias_gpu forward, cudnnBatchNormalizationBackward backward,
    given a saved mean and inverse std (CmBN)."""

    @staticmethod
    def forward(ctx, x, scales, biases, mean, istd):
        x_norm = (x - _c(mean)) * _c(istd)
        y = x_norm * _c(scales) + _c(biases)
        y = torch.where(torch.isfinite(y), y, x)  # normalize_scale_bias_kernel keeps x then
        ctx.save_for_backward(x_norm, scales, istd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x_norm, scales, istd = ctx.saved_tensors
        dims = (0, 2, 3)
        n = dy.numel() // dy.shape[1]
        d_biases = dy.sum(dims)
        d_scales = (dy * x_norm).sum(dims)
        dx = _c(scales * istd) * (dy - _c(d_biases) / n - x_norm * _c(d_scales) / n)
        return dx, d_scales, d_biases, None, None


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream: mean_cpu, variance_cpu: per-channel mean and variance / (batch*spatial - 1)."""
    var, mean = torch.var_mean(x.detach(), (0, 2, 3), correction=1)
    return mean, var


def batchnorm_cpu(x, scales, biases, rolling_mean, rolling_variance) -> torch.Tensor:
    """Upstream's CPU forward_batchnorm_layer in training; updates the rolling statistics in place."""
    mean, var = batch_stats(x)
    with torch.no_grad():
        rolling_mean.mul_(0.9).add_(0.1 * mean)
        rolling_variance.mul_(0.9).add_(0.1 * var)
    return UpstreamCpuBatchNorm.apply(x, scales, biases, mean, var)


def batchnorm_cudnn(x, scales, biases, rolling_mean, rolling_variance) -> torch.Tensor:
    """Upstream's cuDNN forward (factor .01, biased variance to normalize) and exact backward."""
    return F.batch_norm(x, rolling_mean, rolling_variance, scales, biases, training=True, momentum=0.01, eps=EPS)


def batchnorm_cbn(x, scales, biases, rolling_mean, rolling_variance, state: dict, k: int) -> torch.Tensor:
    """Upstream's CmBN (fast_v_cbn_kernel, alpha .01); `state` carries m_avg / s_avg between
    the mini-batches of an iteration, k is the 1-based mini-batch number."""
    xd = x.detach()
    n = xd.numel() // xd.shape[1]
    m = xd.mean((0, 2, 3))
    s = torch.maximum((xd * xd).sum((0, 2, 3)) / (n - 1), m * m)
    a = 1.0 / k
    m_avg = a * m + (1 - a) * state.get("m_avg", torch.zeros_like(m))
    s_avg = a * s + (1 - a) * state.get("s_avg", torch.zeros_like(s))
    state["m_avg"], state["s_avg"] = m_avg, s_avg
    var = torch.clamp(s_avg - m_avg * m_avg, min=0.0)
    with torch.no_grad():
        rolling_mean.copy_(0.01 * m_avg + 0.99 * rolling_mean)
        rolling_variance.copy_(0.01 * var + 0.99 * rolling_variance)
    istd = 1.0 / torch.sqrt(var + EPS)
    return CudnnBatchNormBackward.apply(x, scales, biases, m_avg, istd)


def batchnorm_train(layer, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Training batch norm for `layer` (its bn, scales, rolling buffers, bn_flavor, cbn_index)."""
    args = (y, layer.scales, bias, layer.rolling_mean, layer.rolling_variance)
    if layer.bn == 2:
        state = layer.__dict__.setdefault("_cbn_state", {})
        return batchnorm_cbn(*args, state, getattr(layer, "cbn_index", 1))
    flavor = getattr(layer, "bn_flavor", "cudnn")
    if flavor == "cpu":
        return batchnorm_cpu(*args)
    if flavor == "cudnn":
        return batchnorm_cudnn(*args)
    raise ValueError(f"bn_flavor must be one of {FLAVORS}, not {flavor!r}")
