"""Upstream: parse_conv_lstm (src/parser.c), make_conv_lstm_layer / forward_conv_lstm_layer_gpu /
backward_conv_lstm_layer_gpu (src/conv_lstm_layer.c, the CUDA path), the CONV_LSTM branches of
save_weights_upto / load_weights_upto.

A convolutional LSTM made of inner [convolutional] layers (same size, stride, dilation,
padding, groups, activation, batch_normalize, xnor; `output` filters each):
    U: uf ui ug uo   on the input x (c channels)
    W: wf wi wg wo   on the hidden state h (output channels); with bottleneck=1 only wf,
                     on 2*output channels (see below)
    V: vf vi vo      peephole=1: on the cell state
One step (the CUDA kernels add_3_arrays_activate, sum_of_mults, activate_and_mult):
    f = logistic(wf(h) + uf(x) + vf(c))      i = logistic(wi(h) + ui(x) + vi(c))
    g = act(wg(h) + ug(x))                   c = f*c + i*g
    o = logistic(wo(h) + uo(x) + vo(c_new))  h = o * act2(c)
act is lstm_activation (default tanh) as add_3_arrays_activate applies it (logistic, tanh or
leaky; any other is the identity), act2 as activate_and_mult applies it (tanh or leaky; any
other, logistic included, is the identity). Then NaN/inf in c and h become 1/(|index|+1)
(fix_nan_and_inf), c is clamped to +-state_constrain (default time_steps*32), and the
output is h.

bottleneck=1 (CUDA only; the CPU build would crash): hb = A(wf(h ++ x)) (A: lstm_activation
applied by activate_array, so any activation) where h ++ x is
the flat concatenation of the batch's h and of as many input floats (so the input must have
`output` channels), and the gates read U(hb) with no W term; with shortcut=1 the first half
(flat) of the output gets wf's output added.

The .weights file holds vf vi vo (peephole), wf, wi wg wo (unless bottleneck), uf ui ug uo.

State: h and c carry over from one forward call to the next, in inference (frames of a
video; upstream's detector parses with time_steps=1) and in training alike (upstream never
clears them while training); `reset_state()` clears them. Built for training, a batch holds
time_steps consecutive mini-batches.

Training follows backward_conv_lstm_layer_gpu (also under -train_flavor cpu: upstream's CPU
build cannot train this layer, it allocates no l.delta and crashes), which is not the exact
gradient:
- the gradient reaching h(t-1) through the W convolutions (and through the bottleneck's
  W, the latter scaled by time_normalizer) is dropped without bottleneck; h(t-1) gets only
  the delta the next layer gives the output at t-1;
- the peephole convolutions' input deltas are not propagated to c: vo's is dropped, vi's
  and vf's are added (flat) to the delta of the layer's input at that step, where upstream's
  s.delta still points (so output must not exceed the input channels);
- batch norm inside the inner convolutions (batch_normalize=1, cuDNN arithmetic): the backward
  of every step normalizes that step's input with the mean and variance of the last step
  (cudnnBatchNormalizationBackward reads the layer's saved statistics, which the last step's
  forward wrote); the CPU arithmetic (-train_flavor cpu) and batch_normalize=2 keep each
  step's own;
- the cell delta left at the first step (dc * f) is not cleared: it is added to the cell
  delta of the last step of the next training call;
- the backward leaves step 0's h and c in the state buffers (it copies each step's into
  them, from the last step back to the first), so the next training call starts from the
  first step's state, not the last one's;
- the first step's W convolutions (bottleneck: wf), its forget gate and vf / vi learn from a
  "previous" output and cell that are not the ones its forward used: with
  sequential_subdivisions unset (the usual case: sequence = subdivisions /
  sequential_subdivisions = 1) or at the first mini-batch of a sequence, step 0's own
  (upstream reuses the buffers of step 1; with time_steps=1 whatever they held, zeros at
  first); at a mini-batch that continues a sequence, the previous call's last step's
  (last_prev_state / last_prev_cell), while its forward started from step 0's;
- bottleneck: wf learns from the previous step's output with the shortcut added (what the
  backward rebuilds as bottelneck_hi), its delta is clamped to +-1 after the activation's
  gradient, and the h part of its input delta, times time_normalizer, joins the delta of the
  previous step's output (none at the first step).
The layer counts its training calls to know which mini-batch of the iteration it is in
(upstream's net.current_subdivision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..activations import activate, activation_from, train_activate
from . import register
from .base import BuildContext
from .composite import Composite
from .convolutional import Convolutional


def _gate_act(x: torch.Tensor, name: str) -> torch.Tensor:
    """add_3_arrays_activate's activation: logistic, tanh or leaky, else the identity."""
    if name == "logistic":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "leaky":
        return torch.where(x < 0, x * 0.1, x)
    return x


def _mult_act(x: torch.Tensor, name: str) -> torch.Tensor:
    """activate_and_mult's activation: tanh or leaky, else the identity."""
    if name == "tanh":
        return torch.tanh(x)
    if name == "leaky":
        return torch.where(x < 0, x * 0.1, x)
    return x


def _fix_nan_and_inf(x: torch.Tensor) -> torch.Tensor:
    """fix_nan_and_inf: a non-finite value at flat index j becomes 1/(j + 1)."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return x
    idx = torch.arange(x.numel(), device=x.device, dtype=x.dtype).reshape(x.shape)
    return torch.where(bad, 1.0 / (idx + 1), x)


class _StraightClamp(torch.autograd.Function):
    """constrain_ongpu on the stored cell: the value is clamped, the backward (which reads the
    stored, clamped cell) passes the delta through unchanged."""

    @staticmethod
    def forward(ctx, x, limit):
        return x.clamp(-limit, limit)

    @staticmethod
    def backward(ctx, g):
        return g, None


class _AddGrad(torch.autograd.Function):
    """Identity whose backward adds a carried delta (upstream's uncleared dc_gpu)."""

    @staticmethod
    def forward(ctx, x, extra):
        ctx.save_for_backward(extra)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (extra,) = ctx.saved_tensors
        return g + extra, None


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


class _ClampGrad(torch.autograd.Function):
    """wf's delta in the bottleneck backward: NaN/inf reset to 0, then constrained to +-1."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        return g.clamp(-1.0, 1.0)


@register("conv_lstm")
class ConvLSTM(Composite):
    type_name = "none"  # not in upstream's get_layer_string table
    type_id = 21
    onnx_refusal = "its hidden and cell states carry over from one call to the next, which an ONNX graph cannot hold"

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        common = self.read_conv_keys(ctx, "linear")
        output_filters = s.int("output", 1)
        self.peephole = s.int("peephole", 0)
        self.bottleneck = s.int("bottleneck", 0)
        if output_filters < 1:
            raise s.error("output", "must be >= 1")
        if not (ctx.w and ctx.h and ctx.c):
            raise s.error(None, "the layer before a conv_lstm layer must output an image")
        self.steps = max(1, ctx.net.time_steps) if ctx.train else 1
        time_steps = self.steps
        self.state_constrain = s.int("state_constrain", time_steps * 32)
        self.shortcut = s.int("shortcut", 0)
        self.lstm_activation = activation_from(s, "lstm_activation", default="tanh")
        self.time_normalizer = s.float("time_normalizer", 1.0)
        self.train_mode = ctx.train
        self.bn = common["batch_normalize"]
        self.sequence = max(1, ctx.net.subdivisions // ctx.net.sequential_subdivisions) \
            if ctx.net.sequential_subdivisions else 1
        self.subdivisions = ctx.net.subdivisions

        def conv(c):
            return self.inner_conv(ctx, common, ctx.w, ctx.h, c, output_filters, "output")

        n = output_filters
        self.uf, self.ui, self.ug, self.uo = conv(ctx.c), conv(ctx.c), conv(ctx.c), conv(ctx.c)
        if self.bottleneck:
            if ctx.c != n:
                raise s.error("bottleneck", f"bottleneck=1 feeds the input ({ctx.c} channels) through the "
                                            f"U convolutions built for it after wf ({n} channels): they must be equal")
            self.wf = conv(2 * n)
            self.wi = self.wg = self.wo = None
        else:
            self.wf, self.wi, self.wg, self.wo = conv(n), conv(n), conv(n), conv(n)
        if self.peephole:
            self.vf, self.vi, self.vo = conv(n), conv(n), conv(n)
        else:
            self.vf = self.vi = self.vo = None
        uo = self.uo
        if uo.out_w != ctx.w or uo.out_h != ctx.h or self.wf.outputs != uo.outputs:
            raise s.error("stride", f"the states must keep the input size {ctx.w}x{ctx.h} "
                                    f"(size={self.size}, stride={self.stride}, padding={self.pad} change it)")
        self.set_output(uo.out_w, uo.out_h, n)
        self.inputs = ctx.w * ctx.h * ctx.c
        convs = self._convs()
        self.bflops = sum(l.bflops for l in convs)
        per = 12 if self.peephole else 9
        # upstream counts the elementwise work with l.batch (the mini-batch / time_steps)
        self.bflops += per * self.outputs * max(1, ctx.batch // self.steps) / 1e9
        self._h: torch.Tensor | None = None
        self._c: torch.Tensor | None = None
        self._dc: torch.Tensor | None = None  # the cell delta upstream leaves in dc_gpu
        self._last = None  # training: the last step's output and cell (last_prev_state / _cell)
        self._pbuf = None  # training: what prev_state / prev_cell hold after a backward
        self._train_calls = 0
        self._training_now = False
        self._bn_saved: dict = {}  # inner layer -> (mean, istd) of its latest training forward

    def _convs(self):
        """The inner layers in .weights order."""
        out = [self.vf, self.vi, self.vo] if self.peephole else []
        out.append(self.wf)
        if not self.bottleneck:
            out += [self.wi, self.wg, self.wo]
        return out + [self.uf, self.ui, self.ug, self.uo]

    def reset_state(self) -> None:
        self._h = self._c = self._dc = self._last = self._pbuf = None

    def _state(self, t, shape, x):
        if t is None or t.shape != shape or t.device != x.device or t.dtype != x.dtype:
            return x.new_zeros(shape)
        return t

    def forward(self, x, outputs=None):
        x = self.as_image(x)
        total = x.shape[0]
        if total % self.steps:
            raise ValueError(f"conv_lstm layer {self.index}: batch {total} is not a multiple of time_steps={self.steps}")
        b = total // self.steps
        shape = (b, self.out_c, self.out_h, self.out_w)
        h = self._state(self._h, shape, x)
        c = self._state(self._c, shape, x)
        training = self.train_mode and self.training and torch.is_grad_enabled()
        self._training_now = training
        sub = None  # what upstream's backward reads as step 0's previous output and cell
        if training:
            # upstream's current_subdivision % sequence: one training call is one mini-batch
            first_of_sequence = (self._train_calls % self.subdivisions) % self.sequence == 0
            self._train_calls += 1
            sub = _Holder()
            if not first_of_sequence:  # last_prev_state / last_prev_cell: the previous call's last step
                sub.h, sub.c = self._last if self._last is not None else (torch.zeros_like(h), torch.zeros_like(c))
            elif self.steps == 1:  # the buffers keep what they held
                sub.h, sub.c = self._pbuf if self._pbuf is not None else (torch.zeros_like(h), torch.zeros_like(c))
            # else: step 0's own output and cell, known after step 0 (upstream reuses step 1's buffers)
            c = c.detach().requires_grad_(True)
            c.register_hook(self._keep_dc)  # the first step's cell delta, kept as upstream keeps dc_gpu
        act = self.lstm_activation
        ys = []
        y_prev = None
        for i in range(self.steps):
            xi = x[i * b:(i + 1) * b]
            h_prev, c_prev = h, c
            vf = vi = vo = wf = wi = wg = wo = hb = None
            if self.peephole:
                cp = c_prev
                if training:
                    # upstream's backward runs vi and vf with s.delta still pointing at the
                    # layer input's delta: their input deltas land there, flat, not on c
                    n, xf = c_prev.numel(), xi.reshape(-1)
                    if n > xf.numel():
                        raise ValueError(f"conv_lstm layer {self.index}: with peephole=1 upstream's CUDA backward "
                                         f"writes {n} floats of peephole delta into an input delta of {xf.numel()} "
                                         f"per step (output={self.out_c} > input channels {self.c}); not reproducible")
                    cp = c_prev.detach() + (xf[:n] - xf[:n].detach()).reshape(c_prev.shape)
                if training and i == 0:
                    vf, vi = (self._inner(l, cp, sub, "c") for l in (self.vf, self.vi))
                else:
                    vf, vi = (self._inner(l, cp) for l in (self.vf, self.vi))
            if self.bottleneck:
                n = h_prev.numel()
                hp = h_prev
                if training:
                    # the h part of wf's input delta joins the delta of the previous step's
                    # output (shortcut included), times time_normalizer; the first step has none
                    hp = h_prev.detach()
                    if i > 0:
                        hp = hp + _ScaleGrad.apply(y_prev - y_prev.detach(), self.time_normalizer)
                hi = torch.cat([hp.reshape(-1), xi.reshape(-1)[:n]]).reshape(b, 2 * self.out_c, self.h, self.w)
                if training:
                    # wf learns from the previous output (shortcut included) as the backward rebuilds it
                    hold = _Holder()
                    if i > 0:
                        hold.hi = _flat_cat(y_prev, xi, n, hi.shape)
                    elif sub.h is not None:
                        hold.hi = _flat_cat(sub.h, xi, n, hi.shape)
                    hb = _ClampGrad.apply(self._inner(self.wf, hi, hold, "hi"))
                else:
                    hb = self.wf(hi)
                hb = activate(hb, act)  # activate_array_ongpu: the activation itself, any of them
                src = hb
            else:
                if training:
                    hw = h_prev.detach()
                    if i == 0:
                        wf, wi, wg, wo = (self._inner(l, hw, sub, "h") for l in (self.wf, self.wi, self.wg, self.wo))
                    else:
                        wf, wi, wg, wo = (self._inner(l, hw) for l in (self.wf, self.wi, self.wg, self.wo))
                else:
                    wf, wi, wg, wo = self.wf(h_prev), self.wi(h_prev), self.wg(h_prev), self.wo(h_prev)
                src = xi
            uf, ui, ug, uo = (self._inner(l, src) for l in (self.uf, self.ui, self.ug, self.uo))
            f = torch.sigmoid(_add(wf, uf, vf))
            ig = torch.sigmoid(_add(wi, ui, vi))
            g = _gate_act(_add(wg, ug), act)
            fc = _ForgetMul.apply(f, c_prev, sub) if training and i == 0 else f * c_prev
            c_new = fc + ig * g
            if training and i == self.steps - 1 and self._dc is not None and self._dc.shape == c_new.shape:
                c_new = _AddGrad.apply(c_new, self._dc.to(c_new))  # upstream's uncleared dc_gpu
            if self.peephole:
                vo = self._inner(self.vo, c_new.detach()) if training else self.vo(c_new)
            o = torch.sigmoid(_add(wo, uo, vo))
            h_new = o * _mult_act(c_new, act)
            c_new, h_new = _FixNonFinite.apply(c_new), _FixNonFinite.apply(h_new)
            if self.state_constrain:
                c_new = _StraightClamp.apply(c_new, float(self.state_constrain))
            y = h_new
            if self.shortcut and self.bottleneck:
                half = y.numel() // 2
                flat = y.reshape(-1)
                y = torch.cat([flat[:half] + hb.reshape(-1)[:half], flat[half:]]).reshape(y.shape)
            if training and i == 0 and sub.h is None:
                sub.h, sub.c = y.detach(), c_new.detach()
                if self.bottleneck:
                    hold.hi = _flat_cat(sub.h, xi, h_prev.numel(), hi.shape)
            ys.append(y)
            if i == 0:
                first = (h_new, c_new)
            h, c, y_prev = h_new, c_new, y
        if training:
            self._pbuf = (sub.h, sub.c)
            self._last = (y.detach(), c.detach())
            # upstream's backward walks the steps back to the first, copying each step's h and c
            # into the state buffers: the next call starts from step 0's, not the last step's
            # (its output, shortcut included)
            h, c = first[0] if not (self.shortcut and self.bottleneck) else ys[0], first[1]
        self._h, self._c = h.detach(), c.detach()
        return ys[0] if len(ys) == 1 else torch.cat(ys, 0)

    def _inner(self, l: Convolutional, x: torch.Tensor, holder: "_Holder | None" = None,
               which: str | None = None) -> torch.Tensor:
        """An inner convolution. Training: its weight gradient from holder.<which> where given,
        and (batch_normalize=1, cuDNN arithmetic) its batch-norm backward with the statistics
        of the layer's latest forward, as cudnnBatchNormalizationBackward reads l.mean_gpu /
        l.variance_gpu, which hold the last step's when the backward runs."""
        saved_stats = l.bn == 1 and getattr(l, "bn_flavor", "cudnn") == "cudnn"
        if not self._training_now or (holder is None and not saved_stats):
            return l(x)
        if l.xnor or l.binary or l.blur is not None or l.share_layer is not None:
            raise ValueError(f"conv_lstm layer {l.index}: xnor/binary inner layers cannot be trained as upstream's "
                             "CUDA backward does here")
        args = ((l.stride_y, l.stride_x), l.pad * l.dilation, l.dilation, l.groups)
        if holder is not None:
            y = _StaleInputConv.apply(x, l.conv_weight(), holder, which, *args)
        else:
            y = F.conv2d(x, l.conv_weight(), None, *args)
        if saved_stats:
            y = _SavedStatsBN.apply(y, l.scales, l.conv_bias(), l.rolling_mean, l.rolling_variance,
                                    self._bn_saved, id(l))
        elif l.bn:
            y = l.batchnorm(y)
        else:
            y = y + l.conv_bias().view(1, -1, 1, 1)
        y = y[:, :, :l.out_h, :l.out_w]
        return train_activate(y, l.activation, getattr(l, "bn_flavor", "cudnn"))

    def _keep_dc(self, g):
        self._dc = torch.where(torch.isfinite(g), g, torch.zeros_like(g)).detach()


def _add(*terms):
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


class _Holder:
    """Tensors a backward needs that the forward may make only later (step 0's own h and c)."""
    h: torch.Tensor | None = None
    c: torch.Tensor | None = None
    hi: torch.Tensor | None = None


def _flat_cat(h: torch.Tensor, x: torch.Tensor, n: int, shape) -> torch.Tensor:
    """bottelneck_hi as upstream fills it: n floats of h, then n floats of the input, flat."""
    return torch.cat([h.detach().reshape(-1), x.detach().reshape(-1)[:n]]).reshape(shape)


class _FixNonFinite(torch.autograd.Function):
    """fix_nan_and_inf on the value; the delta passes through."""

    @staticmethod
    def forward(ctx, x):
        return _fix_nan_and_inf(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _ForgetMul(torch.autograd.Function):
    """f * c_prev whose f-delta reads holder.c (upstream's stale prev_cell) in place of c_prev."""

    @staticmethod
    def forward(ctx, f, c_prev, holder):
        ctx.save_for_backward(f)
        ctx.holder = holder
        return f * c_prev

    @staticmethod
    def backward(ctx, g):
        (f,) = ctx.saved_tensors
        return g * ctx.holder.c, g * f, None


class _StaleInputConv(torch.autograd.Function):
    """conv2d of x, whose weight gradient is taken with holder.<which> as the input
    (upstream's backward of the W and of the vf / vi convolutions at the first step reads
    prev_state_gpu / prev_cell_gpu); the input delta is the usual one."""

    @staticmethod
    def forward(ctx, x, weight, holder, which, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.holder, ctx.which, ctx.args = holder, which, (stride, padding, dilation, groups)
        ctx.x_shape = x.shape
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        src = getattr(ctx.holder, ctx.which)
        dw = torch.nn.grad.conv2d_weight(src.to(g), weight.shape, g, stride, padding, dilation, groups)
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.nn.grad.conv2d_input(ctx.x_shape, weight, g, stride, padding, dilation, groups)
        return dx, dw, None, None, None, None, None, None


class _SavedStatsBN(torch.autograd.Function):
    """cuDNN batch norm in training (F.batch_norm: factor .01, biased variance, eps 1e-5;
    rolling statistics updated), whose backward (cudnnBatchNormalizationBackward) normalizes
    its input again with the saved mean and inverse std found in `saved` at backward time:
        xhat = (x - mean) * istd;  d_biases = sum(dy);  d_scales = sum(dy * xhat)
        dx = scales * istd * (dy - d_biases/n - xhat * d_scales/n)"""

    @staticmethod
    def forward(ctx, x, scales, biases, rolling_mean, rolling_variance, saved, key):
        var, mean = torch.var_mean(x, (0, 2, 3), correction=0)
        saved[key] = (mean, torch.rsqrt(var + 1e-5))
        ctx.save_for_backward(x, scales)
        ctx.saved, ctx.key = saved, key
        return F.batch_norm(x, rolling_mean, rolling_variance, scales, biases, training=True, momentum=0.01, eps=1e-5)

    @staticmethod
    def backward(ctx, dy):
        x, scales = ctx.saved_tensors
        mean, istd = ctx.saved[ctx.key]
        c = lambda v: v.view(1, -1, 1, 1)
        xhat = (x - c(mean)) * c(istd)
        n = dy.numel() // dy.shape[1]
        d_biases = dy.sum((0, 2, 3))
        d_scales = (dy * xhat).sum((0, 2, 3))
        dx = c(scales * istd) * (dy - c(d_biases) / n - xhat * c(d_scales) / n)
        return dx, d_scales, d_biases, None, None, None, None
