"""Upstream: forward_network / backward_network (src/network.c) in training, as autograd sees them.

`train_forward(net, x, flavor)` runs the layers like Network.forward but with upstream's
training semantics, so that `loss.backward()` gives upstream's accumulated update buffers
(negated; see sgd.py):

- every conv layer's batch norm uses batch statistics (train/batchnorm.py) in `flavor`
  ("cpu": upstream's CPU build, the parity fixtures; "cudnn": its GPU build);
- flavor "cpu" reproduces that upstream's CPU conv backward OVERWRITES the delta of the layer
  before it (col2im_cpu_ext zeroes its destination first; the non-cuDNN GPU col2im kernel
  does too). Backward runs in reverse layer order, so when layer p+1 is a convolution, the
  gradient that later route/shortcut/... layers sent to layer p's output is discarded and
  only the convolution's survives. Here those later layers read layer p's output detached.
  cuDNN's backward-data accumulates (beta=1), so "cudnn" keeps every contribution.
- flavor "cpu" also reproduces that upstream's CPU forward_network clears a layer's delta only
  when the layer has l.train set (conv, maxpool, batchnorm, shortcut, ...; yolo clears its
  own): route and upsample never set it, so their delta buffers keep summing over every
  mini-batch of the run, and each backward sends the running total on, unless the next layer
  is a convolution (whose backward overwrites it, see above). `_StaleDelta` keeps that total
  on the layer (`_stale_delta`). The GPU build clears every delta each pass.
- stopbackward / onlyforward as upstream's backward_network_gpu: no gradient reaches a layer
  at or before the last active stopbackward, nor through an onlyforward layer.
- CmBN layers (batch_normalize=2) learn which mini-batch of the iteration this is from
  net.current_subdivision (upstream's name; `set_subdivision`).

Autograd gives upstream's backward for conv (weights, input), maxpool (first maximum of a
window, as upstream's strict `>` scan), route, upsample, unweighted shortcut, leaky (slope .1
at 0 on both sides), logistic and linear. Mish: upstream's gradient_array_mish
(x*(1 - tanh(sp)^2)*(1 - exp(-sp)) + tanh(sp), sp = softplus with threshold 20) is the same
derivative, but autograd of the thresholded forward gives NaN above x ~ 88 (0*inf in the
unused branch), so `train_activate` uses the `Mish` Function below. The yolo layer's backward
passes its delta straight to the previous layer (no logistic derivative): use
`yolo_surrogate` on the tensors fed INTO the yolo layers.

Not reproduced: shortcut weights with weights_normalization (upstream's
backward_shortcut_multilayer_cpu leaves out the normalization's derivative; autograd does not).

"""
from __future__ import annotations

import torch

from ..activations import activate
from ..layers.convolutional import Convolutional
from ..layers.route import Route
from ..layers.upsample import Upsample
from ..network import DETECTION_TYPES


class Mish(torch.autograd.Function):
    """Upstream: activate_array_mish forward, gradient_array_mish backward (src/activations.c)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return activate(x, "mish")

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        sp = torch.where(x > 20, x, torch.where(x < -20, torch.exp(x), torch.log1p(torch.exp(x.clamp(max=20)))))
        t = torch.tanh(sp)
        return dy * (x * (1 - t * t) * (1 - torch.exp(-sp)) + t)


class _StaleDelta(torch.autograd.Function):
    """Identity; backward adds the delta upstream's never-cleared buffer still holds and keeps
    the new total (route / upsample on upstream's CPU build)."""

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


def train_activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """The activation with upstream's gradient where autograd's differs (mish)."""
    return Mish.apply(x) if name == "mish" else activate(x, name)


def set_flavor(net, flavor: str) -> None:
    for layer in net.layers:
        if isinstance(layer, Convolutional):
            layer.bn_flavor = flavor


def set_subdivision(net, k: int) -> None:
    """k: 0-based mini-batch number within the iteration (upstream's current_subdivision)."""
    for layer in net.layers:
        if isinstance(layer, Convolutional):
            layer.cbn_index = k + 1


def frozen_upto(net, iteration: int) -> int:
    """Index of the layer where upstream's backward_network_gpu stops (-1: none): the last one
    with stopbackward=1 or stopbackward > iteration (get_current_iteration: iterations done)."""
    return max((l.index for l in net.layers if l.stopbackward == 1 or l.stopbackward > iteration), default=-1)


def train_forward(net, x: torch.Tensor, flavor: str = "cudnn", iteration: int | None = None) -> tuple[dict, dict]:
    """Training forward. Returns (outputs kept as Network.forward does, inputs of the detection
    layers). Layers up to frozen_upto(iteration) and onlyforward layers run without gradient.

    iteration: upstream's get_current_iteration (iterations completed); by default derived
    from net.seen, which upstream increments by the mini-batch before each forward. CmBN
    takes the mini-batch number from net.current_subdivision (0-based, default 0)."""
    set_flavor(net, flavor)
    set_subdivision(net, getattr(net, "current_subdivision", 0))
    o = net.options
    if iteration is None:
        iteration = max(net.seen - o.mini_batch, 0) // (o.mini_batch * o.subdivisions)
    layers = net.layers
    cpu = flavor == "cpu"
    overwritten = {i for i in range(len(layers) - 1)
                   if cpu and isinstance(layers[i + 1], Convolutional) and not layers[i + 1].onlyforward}
    stale = {l.index for l in layers if cpu and isinstance(l, (Route, Upsample)) and l.index not in overwritten}
    stop = frozen_upto(net, iteration)
    outputs: dict[int, torch.Tensor] = {}
    refs: dict[int, torch.Tensor] = {}  # what later layers read by index
    inputs: dict[int, torch.Tensor] = {}
    for layer in layers:
        if layer.type_name in DETECTION_TYPES:
            inputs[layer.index] = x
        if layer.onlyforward or layer.index <= stop:
            with torch.no_grad():
                x = layer(x.detach(), refs)
        else:
            x = layer(x, refs)
            if layer.index in stale and torch.is_grad_enabled():
                x = _StaleDelta.apply(x, layer)
        if layer.index in net._keep:
            outputs[layer.index] = x
            refs[layer.index] = x.detach() if layer.index in overwritten else x
    return outputs, inputs


def yolo_surrogate(yolo_inputs: dict[int, torch.Tensor], deltas: dict[int, torch.Tensor]) -> torch.Tensor:
    """L = -sum(delta * input) over yolo layers: dL/dinput = -delta (upstream's delta is minus
    the gradient), so backward() leaves -grad == upstream's update buffers."""
    return -sum((deltas[i].to(t) * t.reshape(deltas[i].shape)).sum() for i, t in yolo_inputs.items())
