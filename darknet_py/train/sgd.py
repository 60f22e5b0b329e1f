"""Upstream: update_network_gpu (src/network_kernels.cu) and the layers' update_gpu:
update_convolutional_layer_gpu (src/convolutional_kernels.cu, adam_update_gpu in
src/blas_kernels.cu), update_batchnorm_layer_gpu, update_shortcut_layer_gpu; EMA from
train_network_waitkey, ema_update, ema_apply (src/network.c).

Upstream keeps an update buffer per array: backward ADDS minus the gradient to it (over the
`subdivisions` mini-batches of an iteration), the update reads it and leaves it multiplied by
the momentum. Here torch's .grad accumulates the gradient, so at step() the buffer is
`kept + loss_scale * (-grad)` (upstream's yolo backward on the GPU scales deltas by loss_scale;
the update divides the rate by it again). With B = update batch (mini_batch * subdivisions *
subdivisions/sequential_subdivisions), lr = rate * the layer's learning_rate= scale / loss_scale:

  conv weights   u += -decay*B*loss_scale*w;  w += lr/B*u;  u *= momentum
                 (NaN/inf entries of u -> 0, of w -> 1/(flat index+1); grad_centr with batch norm
                 subtracts each filter's mean from u when c/groups*size*size % 32 == 0;
                 clip= clamps w to [-clip, clip] afterwards)
  conv biases, scales, [batchnorm] biases and scales: no decay:  b += lr/B*u;  u *= momentum
  shortcut       no decay; u clamped to [-1, 1];  w += lr/B*u;  u *= momentum
  adam=1 (conv only; weights, biases AND scales, each with decay):
                 m = B1*m + (1-B1)*d,  v = B2*v + (1-B2)*d^2  with d = u - decay*B*w,
                 w += lr * (m/(1-B1^t)) / (sqrt(v/(1-B2^t)) + eps),  u = 0;  t = iteration.

Layers not updated, as update_network_gpu (it skips every layer whose l.train is 0):
[connected] and [implicit_*] always (their make_* never sets l.train, so upstream never
updates them although they have update functions), those before the last stopbackward=1 layer
(built with train=0), train_only_bn (set on a layer and every layer before it; upstream then
skips the whole layer), burnin_update while burnin_update*burn_in > iteration, and
dont_update while iteration <= dont_update. A conv layer with share_index updates the shared
arrays a second time, as upstream (both layers point at one set of buffers). Upstream's CPU
build differs: no NaN fixes, no clip, no adam, the flags above are ignored and shortcut
weights get decay; none of that is in the parity fixtures. Of the recurrent layers [crnn] (its
three convolutions, as update_crnn_layer) and [conv_lstm] (its inner convolutions, as
update_conv_lstm_layer_gpu) are updated; [rnn], [gru] and [lstm] never set l.train, so upstream
never updates them (layers/recurrent.py), nor [local] (make_local_layer never sets l.train).

EMA (ema_alpha, after the update, from iteration max_batches/2): conv weights, biases and
scales (only scales for a shared layer) of layers built with train=1 are averaged
ema = alpha*ema + (1-alpha)*w (first time: ema = w); at iteration max_batches-1000 the
averages are copied into the network instead, and from then on left alone. Upstream saves
them (with the current rolling statistics) to backup/NAME_ema.weights: `ema_arrays(layer)`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..layers.batchnorm import Batchnorm
from ..layers.convolutional import Convolutional
from ..layers.conv_lstm import ConvLSTM
from ..layers.crnn import CRNN
from ..layers.shortcut import Shortcut

f32 = np.float32


class UpstreamSGD:
    def __init__(self, net):
        self.net = net
        self.options = net.options
        self.buffers: dict[torch.Tensor, torch.Tensor] = {}  # upstream's *_updates, kept between steps
        self.adam_state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ema: dict[torch.Tensor, torch.Tensor] = {}
        self._all_finite = True  # set by step(): every guarded weight and update finite
        layers = net.layers
        last_stop = max((l.index for l in layers if l.stopbackward == 1), default=0)
        self.trainable = [l.index >= last_stop for l in layers]  # upstream's l.train
        only_bn, flag = [0] * len(layers), 0
        for l in reversed(layers):  # set_train_only_bn: a flag holds for every earlier layer
            flag = l.train_only_bn or flag
            only_bn[l.index] = flag
        self.train_only_bn = only_bn

    # -- buffers --------------------------------------------------------------------
    def zero_grad(self) -> None:
        for p in self.net.parameters():
            p.grad = None

    def _collect(self) -> None:
        """Backward's share of upstream's buffers: buffer += loss_scale * (-grad), then no grad."""
        ls = float(f32(self.options.loss_scale))
        for p in self.net.parameters():
            if p.grad is not None:
                u = self.buffers.get(p)
                if u is None:
                    self.buffers[p] = p.grad.detach().mul_(-ls)  # the gradient's memory becomes the buffer
                else:
                    u.add_(p.grad.detach(), alpha=-ls)
                p.grad = None

    def _updates(self, p: torch.Tensor) -> torch.Tensor:
        u = self.buffers.get(p)
        return torch.zeros_like(p).detach() if u is None else u

    def _sgd(self, p, lr_b, momentum, decay_b=None, clamp=None) -> None:
        """In place on the buffer (one pass over memory each): clamp, decay, step, momentum."""
        u = self._updates(p)
        with torch.no_grad():
            if clamp is not None:
                u.clamp_(-clamp, clamp)
            if decay_b is not None:
                u.add_(p, alpha=float(f32(-decay_b)))
            p.add_(u, alpha=float(f32(lr_b)))
            u.mul_(float(f32(momentum)))
        self.buffers[p] = u

    def _adam(self, p, lr, decay_b, t) -> None:
        o = self.options
        b1, b2 = f32(o.B1), f32(o.B2)
        m, v = self.adam_state.get(p, (torch.zeros_like(p), torch.zeros_like(p)))
        with torch.no_grad():
            d = self._updates(p) + f32(-decay_b) * p
            m = b1 * m + (1 - b1) * d
            v = b2 * v + (1 - b2) * d * d
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            p.add_(f32(lr) * mhat / (torch.sqrt(vhat) + f32(o.eps)))
        self.adam_state[p] = (m, v)
        self.buffers[p] = torch.zeros_like(p)

    # -- the update -----------------------------------------------------------------
    def step(self, rate: float, iteration: int) -> None:
        """update_network_gpu after iteration `iteration` (1-based, = get_current_batch), then EMA."""
        o = self.options
        seq = max(o.subdivisions // o.sequential_subdivisions, 1) if o.sequential_subdivisions else 1
        batch = o.mini_batch * o.subdivisions * seq
        self._collect()
        layers = [l for l in self.net.layers if self._updates_now(l, iteration)]
        # upstream's NaN/inf repairs of conv and shortcut weights and their updates change
        # nothing when every value is finite: one check (one host read) for all of them
        guarded = [t for l in layers for t in self._nan_guarded(l)]
        self._all_finite = bool(torch.isfinite(torch.stack([t.sum() for t in guarded]).sum())) if guarded else True
        for layer in layers:
            self._update_layer(layer, rate, batch, iteration)
        if o.ema_alpha:
            self._ema_step(iteration)

    def _updates_now(self, layer, iteration: int) -> bool:
        i = layer.index
        if not self.trainable[i] or self.train_only_bn[i]:
            return False
        if layer.burnin_update and layer.burnin_update * self.options.burn_in > iteration:
            return False
        return layer.dont_update < iteration

    def _nan_guarded(self, layer) -> list[torch.Tensor]:
        """The weights (and their update buffers) upstream repairs NaN/inf in before an update."""
        if isinstance(layer, (CRNN, ConvLSTM)):
            return [t for sub in layer._convs() for t in self._nan_guarded(sub)]
        if isinstance(layer, Convolutional):
            w = layer.conv_weight()
        elif isinstance(layer, Shortcut) and layer.nweights:
            w = layer.weights
        else:
            return []
        return [w] + ([self.buffers[w]] if w in self.buffers else [])

    def _repaired(self, w: torch.Tensor) -> torch.Tensor:
        """reset_nan_and_inf of w's update buffer and fix_nan_and_inf of w; the buffer."""
        u = self._updates(w)
        if not self._all_finite:  # a sum of finite values can overflow too: then look closely
            u = _reset_nan(u)
            _fix_nan(w)
        return u

    def _update_layer(self, layer, rate: float, batch: int, t: int) -> None:
        o = self.options
        ls = f32(o.loss_scale)
        lr = f32(rate) * f32(layer.learning_rate_scale) / ls
        lr_b = lr / f32(batch)
        if isinstance(layer, (CRNN, ConvLSTM)):  # update_crnn_layer / update_conv_lstm_layer_gpu: its convolutions
            for sub in layer._convs():
                self._update_layer(sub, rate, batch, t)
        elif isinstance(layer, Convolutional):
            w, b = layer.conv_weight(), layer.conv_bias()
            u = self._repaired(w)
            k = w[0].numel()
            if layer.grad_centr and layer.bn and k % 32 == 0:
                u = u - u.reshape(w.shape[0], -1).mean(1).view(-1, 1, 1, 1)
            self.buffers[w] = u
            arrays = [b] + ([layer.scales] if layer.bn else [])
            if o.adam:
                for p in [w] + arrays:
                    self._adam(p, lr, f32(o.decay) * f32(batch), t)
            else:
                self._sgd(w, lr_b, o.momentum, decay_b=f32(o.decay) * f32(batch) * ls)
                for p in arrays:
                    self._sgd(p, lr_b, o.momentum)
            if layer.clip:
                with torch.no_grad():
                    w.clamp_(-layer.clip, layer.clip)
        elif isinstance(layer, Batchnorm):
            for p in (layer.biases, layer.scales):
                self._sgd(p, lr_b, o.momentum)
        elif isinstance(layer, Shortcut) and layer.nweights:
            w = layer.weights
            self.buffers[w] = self._repaired(w)
            self._sgd(w, lr_b, o.momentum, clamp=1.0)

    # -- EMA ------------------------------------------------------------------------
    def _ema_arrays(self, layer) -> list[torch.Tensor]:
        if not isinstance(layer, Convolutional) or not self.trainable[layer.index]:
            return []
        own = [layer.weights, layer.biases] if layer.share_layer is None else []
        return own + ([layer.scales] if layer.bn else [])

    def _ema_step(self, iteration: int) -> None:
        o = self.options
        if iteration < o.max_batches // 2:
            return
        arrays = [p for l in self.net.layers for p in self._ema_arrays(l)]
        apply_point = o.max_batches - 1000
        initialized = any(bool((self.ema[p] != 0).any()) for p in arrays if p.dim() == 4 and p in self.ema)
        with torch.no_grad():
            if not initialized:
                for p in arrays:
                    self.ema[p] = p.detach().clone()
            if iteration == apply_point:
                for p in arrays:
                    p.copy_(self.ema[p])
            elif iteration < apply_point:
                a = f32(o.ema_alpha)
                for p in arrays:
                    self.ema[p] = a * self.ema[p] + (1 - a) * p.detach()

    def ema_arrays(self, layer) -> list[torch.Tensor]:
        """What upstream's save_weights_upto(save_ema=1) writes for `layer` (its weight_arrays
        with the averages in place of weights, biases and scales)."""
        return [self.ema.get(t, t) for t in layer.weight_arrays()]


def _reset_nan(u: torch.Tensor) -> torch.Tensor:
    """reset_nan_and_inf: NaN/inf update entries become 0."""
    return torch.where(torch.isfinite(u), u, torch.zeros_like(u))


def _fix_nan(w: torch.Tensor) -> None:
    """fix_nan_and_inf: a NaN/inf weight becomes 1/(|flat index| + 1)."""
    with torch.no_grad():
        bad = ~torch.isfinite(w)
        if bool(bad.any()):
            idx = torch.arange(w.numel(), device=w.device, dtype=w.dtype).view_as(w)
            w.copy_(torch.where(bad, 1 / (idx + 1), w))
