"""Upstream: parse_network_cfg_custom (src/parser.c), forward_network / backward_network /
get_network_boxes (src/network.c), forward_network_gpu / backward_network_gpu
(src/network_kernels.cu).

A Network is the [net] options plus the layers in cfg order. forward() runs them in order,
keeping only the outputs that a later layer (route, shortcut, sam, ...) reads, plus those
of the detection layers and the last layer.

forward_train() runs them with upstream's training semantics, so that autograd's backward of
the detection layers' surrogates (Layer.backward_surrogate) gives upstream's accumulated update
buffers (negated; train/sgd.py). Each layer owns its part (batch statistics in
layers/batchnorm.py, mish's gradient in activations.py); what is decided here is the wiring
between layers, by `train_flavor`:

- "cudnn" (upstream's GPU build, the default): every contribution to a layer's delta is kept
  (cuDNN's backward-data accumulates, beta=1) and every delta is cleared each pass;
- "cpu" (upstream's CPU build, the parity fixtures): a convolution's backward OVERWRITES the
  delta of the layer before it (col2im_cpu_ext zeroes its destination first). Backward runs in
  reverse layer order, so when layer p+1 is a convolution, what later route/shortcut/...
  layers sent to layer p is discarded and only the convolution's share survives: those later
  layers read layer p's output detached. Its forward_network also clears a delta only for
  layers with l.train set; route, upsample and avgpool never set it, so their deltas keep
  summing over the run and each backward sends the running total on, unless the next layer is
  a convolution (layers/base.py StaleDelta; a classifier's [avgpool] before its [softmax]).
- both: stopbackward / onlyforward as upstream's backward_network_gpu: no gradient reaches a
  layer at or before the last active stopbackward, nor through an onlyforward layer; CmBN
  layers learn which mini-batch of the iteration this is from `current_subdivision`.

Autograd gives upstream's backward for conv (weights, input), maxpool (first maximum of a
window, as upstream's strict `>` scan), route, upsample, unweighted shortcut, leaky (slope .1
at 0 on both sides), logistic and linear. Not reproduced: shortcut weights with
weights_normalization (upstream's backward_shortcut_multilayer_cpu leaves out the
normalization's derivative; autograd does not).
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from .cfg import CfgError, Section, read_cfg, warn_unused
from .layers import LAYERS, BuildContext, _load_all
from .layers.avgpool import Avgpool
from .layers.base import StaleDelta
from .layers.convolutional import Convolutional
from .layers.route import Route
from .layers.upsample import Upsample
from .layer_timing import BackwardTimer, ForwardTimer, LayerTimes
from .cfg.options import NetOptions
from .outputs import weights as _weights

# whose training arithmetic: upstream's GPU (cuDNN) build, or its CPU build (module docstring)
TRAIN_FLAVORS = ("cudnn", "cpu")


def announce_detection_layers(net, out=None):
    """Upstream's " Detection layer: N - type = T" lines; returns the last such layer (or the
    network's last layer when there is none, as upstream)."""
    out = out or sys.stdout
    det = net.layers[-1]
    for layer in net.layers:
        if layer.is_detector_head:
            det = layer
            print(f" Detection layer: {layer.index} - type = {layer.type_id} ", file=out)
    return det


class Network(nn.Module):
    def __init__(self, sections: list[Section], path: str = "<cfg>", batch: int | None = None,
                 train: bool = False, width: int | None = None, height: int | None = None,
                 quiet: bool = False):
        super().__init__()
        _load_all()
        if not sections:
            raise CfgError(path, None, None, "the cfg has no sections")
        first = sections[0]
        if first.name not in ("net", "network"):
            raise CfgError(path, first.line, None, f"the first section must be [net] or [network], not [{first.name}]")
        for s in sections[1:]:
            if s.name in ("net", "network"):
                raise CfgError(path, s.line, None, f"[{s.name}] may only be the first section")
        if width:
            _override(first, "width", width)
        if height:
            _override(first, "height", height)
        self.path = path
        self.options = NetOptions.from_section(first)
        self.batch = batch if batch is not None else self.options.mini_batch
        self.seen = 0
        self.train_flavor = "cudnn"  # whose training arithmetic: upstream's GPU build ("cudnn") or CPU build ("cpu")
        self.current_subdivision = 0
        o = self.options
        w, h, c, inputs = o.width, o.height, o.channels, o.inputs
        built: list = []
        for i, s in enumerate(sections[1:]):
            cls = LAYERS.get(s.name)
            if cls is None:
                known = ", ".join(sorted(LAYERS))
                raise CfgError(path, s.line, None, f"unknown section [{s.name}] (known: {known})")
            ctx = BuildContext(index=i, w=w, h=h, c=c, inputs=inputs, net=o, section=s, layers=built,
                               batch=self.batch, train=train)
            try:
                layer = cls(ctx)
            except CfgError:
                raise
            except (ValueError, ArithmeticError, IndexError, KeyError, TypeError, RuntimeError) as e:
                # a combination of keys no check above anticipated: still name the place
                raise CfgError(path, s.line, None, f"[{s.name}] (layer {i}) cannot be built: {e}") from e
            built.append(layer)
            w, h, c, inputs = layer.next_shape()
        self.layers = nn.ModuleList(built)
        self.sections = sections
        self.built_for_training = train
        # upstream's get_network_output: the last layer that is not a [cost] layer (a cost
        # layer's output is all zeros outside training)
        self.output_index = _network_output_index(built)
        keep = {len(built) - 1, self.output_index}
        for layer in built:
            keep.update(layer.refs)
            if layer.is_detection_output:
                keep.add(layer.index)
        self._keep = keep
        self.unused_warnings = [] if quiet else warn_unused(sections)
        self.benchmark_layers = False  # -benchmark_layers: per-layer times printed (layer_timing.py)
        self._layer_times: dict[str, LayerTimes] = {}

    # -- running --------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {}
        timer = self._timer("fw", x)
        for layer in self.layers:
            x = layer(x, outputs) if timer is None else timer.run(layer, lambda: layer(x, outputs))
            if layer.index in self._keep:
                outputs[layer.index] = x
        if timer is not None:
            timer.done()
        return outputs

    def _timer(self, kind: str, x: torch.Tensor):
        """-benchmark_layers: the forward ("fw") or backward ("bw") timer of this pass, or None."""
        if not self.benchmark_layers:
            return None
        times = self._layer_times.setdefault(kind, LayerTimes(kind))
        return (ForwardTimer if kind == "fw" else BackwardTimer)(times, x.device)

    def forward_train(self, x: torch.Tensor, flavor: str | None = None,
                      iteration: int | None = None) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Training forward (see the module docstring): the outputs kept as forward() keeps
        them plus those of every loss layer (Layer.produces_loss), and the input of every loss layer. Layers up to frozen_upto(iteration) and
        onlyforward layers run without gradient.

        flavor: default `self.train_flavor`. iteration: upstream's get_current_iteration
        (iterations completed); by default derived from `seen`, which upstream increments by
        the mini-batch before each forward."""
        flavor = flavor or self.train_flavor
        if flavor not in TRAIN_FLAVORS:
            raise ValueError(f"train_flavor must be one of {TRAIN_FLAVORS}, not {flavor!r}")
        layers = self.layers
        for layer in layers:
            layer.bn_flavor = flavor
            layer.cbn_index = self.current_subdivision + 1
        o = self.options
        if iteration is None:
            iteration = max(self.seen - o.mini_batch, 0) // (o.mini_batch * o.subdivisions)
        cpu = flavor == "cpu"
        overwritten = {i for i in range(len(layers) - 1)
                       if cpu and isinstance(layers[i + 1], Convolutional) and not layers[i + 1].onlyforward}
        stale = {l.index for l in layers if cpu and isinstance(l, (Route, Upsample, Avgpool)) and l.index not in overwritten}
        stop = self.frozen_upto(iteration)
        outputs: dict[int, torch.Tensor] = {}
        refs: dict[int, torch.Tensor] = {}  # what later layers read by index
        inputs: dict[int, torch.Tensor] = {}
        fw, bw = self._timer("fw", x), self._timer("bw", x)
        for layer in layers:
            loss_layer = layer.produces_loss
            if loss_layer:
                inputs[layer.index] = x
            if layer.onlyforward or layer.index <= stop:
                with torch.no_grad():
                    x = _run(fw, layer, x.detach(), refs)
            else:
                x = _run(fw, layer, x, refs)
                if layer.index in stale and torch.is_grad_enabled():
                    x = StaleDelta.apply(x, layer)
            if bw is not None:
                bw.watch(layer, x)
            if layer.index in self._keep:
                refs[layer.index] = x.detach() if layer.index in overwritten else x
            if layer.index in self._keep or loss_layer:
                outputs[layer.index] = x
        if fw is not None:
            fw.done()
            bw.arm(layers)
        return outputs, inputs

    def frozen_upto(self, iteration: int) -> int:
        """Index of the layer where upstream's backward_network_gpu stops (-1: none): the last
        one with stopbackward=1 or stopbackward > iteration (get_current_iteration)."""
        return max((l.index for l in self.layers if l.stopbackward == 1 or l.stopbackward > iteration), default=-1)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def fuse(self, pack: bool = True) -> "Network":
        """Fold batch norm into the convolutions for inference; pack: pre-pack them for
        oneDNN on the CPU (layers/onednn.py), which an ONNX export cannot trace."""
        for layer in self.layers:
            if hasattr(layer, "fuse"):
                layer.fuse(pack)
        return self

    def output_indices(self) -> list[int]:
        out = [l.index for l in self.layers if l.is_detection_output]
        last = len(self.layers) - 1
        return out + ([last] if last not in out else [])

    def _input_tensor(self, x) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if t.dim() == 3:
            t = t.unsqueeze(0)
        expected = (self.options.channels, self.options.height, self.options.width)
        if tuple(t.shape[1:]) != expected:
            raise ValueError(f"input has shape {tuple(t.shape[1:])} but the network takes (C, H, W) = {expected}")
        t = t.to(self.device)
        if self.device.type == "cpu":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    @torch.inference_mode()
    def predict_raw(self, x) -> dict[int, np.ndarray]:
        """Upstream's l.output of every detection layer and of the last layer, flat float32."""
        outputs = self.forward(self._input_tensor(x))
        res = {}
        for i in self.output_indices():
            t = outputs[i][0] if outputs[i].shape[0] == 1 else outputs[i]
            res[i] = t.contiguous().reshape(-1).float().cpu().numpy()
        return res

    @torch.inference_mode()
    def predict(self, x) -> np.ndarray:
        """Upstream's network_predict: the output of the last layer that is not [cost] (a
        classifier's probabilities), float32 (outputs,) for one image (C, H, W), (N, outputs)
        for a batch."""
        t = self._input_tensor(x)
        out = self.forward(t)[self.output_index]
        flat = out.reshape(out.shape[0], -1).float().cpu().numpy()
        return flat[0] if np.ndim(x) == 3 else flat

    @torch.inference_mode()
    def detect(self, x, thresh: float = 0.25, nms: float = 0.45, hier_thresh: float = 0.5,
               im_w: int | None = None, im_h: int | None = None, letter: bool = False,
               keep_all: bool = False) -> list[dict]:
        """Upstream's get_network_boxes(relative=1) then the cfg's NMS, as dicts.

        Boxes are those with a class probability above thresh (keep_all: every box that
        get_network_boxes returned, as upstream's drawing and printing loop over them)."""
        from .outputs.detections import network_boxes, apply_nms
        raw = self.predict_raw(x)
        dets, kind, beta, classes = network_boxes(self, raw, thresh, hier_thresh,
                                                  im_w or self.options.width, im_h or self.options.height, letter)
        if nms:
            dets = apply_nms(dets, classes, nms, kind, beta)
        return dets.to_dicts(thresh, keep_empty=keep_all)

    def export_onnx(self, path, **options) -> list[str]:
        """Write this network as ONNX: predict_raw's outputs, or with postprocess=True
        get_network_boxes' boxes before NMS; options: export.export_onnx's (batch, width,
        height, dynamic, postprocess, thresh, raw). Returns the output names."""
        from .outputs.export import export_onnx
        return export_onnx(self, path, **options)

    def initialize(self, seed: int | None = None) -> "Network":
        """Upstream's random initialisation of a fresh network (make_*_layer): what every
        layer holds before a weights file (possibly a partial one) is loaded over it."""
        gen = torch.Generator()
        gen.manual_seed(seed if seed is not None else torch.seed())
        for layer in self.layers:
            init = getattr(layer, "initialize", None)
            if init is not None:
                init(gen)
        return self

    def resized(self, width: int, height: int) -> "Network":
        """Upstream's resize_network: the same layers at another input size. The new network
        shares this one's parameter and buffer objects (and so an optimizer's state)."""
        new = Network(self.sections, self.path, batch=self.batch, train=self.built_for_training,
                      width=width, height=height, quiet=True)
        for a, b in zip(new.layers, self.layers):
            for ma, mb in zip(a.modules(), b.modules()):  # sub-layers too ([crnn]'s convolutions)
                ma._parameters = mb._parameters
                ma._buffers = mb._buffers
        new.seen = self.seen
        new.train_flavor = self.train_flavor
        new.current_subdivision = self.current_subdivision
        new.benchmark_layers, new._layer_times = self.benchmark_layers, self._layer_times
        new.train(self.training)
        return new

    # -- info -----------------------------------------------------------------------
    def summary(self) -> list[dict]:
        return [layer.summary() for layer in self.layers]

    def total_params(self) -> int:
        return sum(layer.params_count() for layer in self.layers)

    def weights_file_bytes(self) -> int:
        return 20 + 4 * self.total_params()

    # -- weights --------------------------------------------------------------------
    def load_weights(self, path, cutoff: int | None = None, verbose: bool = True):
        report = _weights.load_weights(self, path, cutoff, verbose)
        for layer in self.layers:
            if getattr(layer, "_fused", None) is not None:
                layer.fuse(getattr(layer, "_pack", True))
        return report

    def save_weights(self, path, cutoff: int | None = None) -> None:
        _weights.save_weights(self, path, cutoff)

    @property
    def iteration(self) -> int:
        """upstream's get_current_batch: images seen / images per iteration."""
        o = self.options
        return self.seen // (o.mini_batch * o.subdivisions) if o.mini_batch else 0


def _run(timer, layer, x, refs):
    return layer(x, refs) if timer is None else timer.run(layer, lambda: layer(x, refs))


def _network_output_index(layers) -> int:
    i = len(layers) - 1
    while i > 0 and not layers[i].is_prediction:
        i -= 1
    return i


def _override(section: Section, key: str, value: int) -> None:
    opt = section.find(key)
    if opt is None:
        from .cfg import Option
        section.options.append(Option(key, str(value), section.line))
    else:
        opt.value = str(value)


def build_network(cfg_path, batch: int | None = None, train: bool = False, **kw) -> Network:
    sections = read_cfg(cfg_path)
    return Network(sections, str(cfg_path), batch=batch, train=train, **kw)


def load_network(cfg_path, weights_path=None, *, device=None, fuse: bool = True) -> Network:
    """Inference network, batch 1, as upstream's load_network(cfg, weights, clear=0) + fuse."""
    net = build_network(cfg_path, batch=1)
    if weights_path:
        net.load_weights(weights_path)
    net.eval()
    if device is not None:
        net.to(device)
    if fuse:
        net.fuse()
    if net.device.type == "cpu":
        net.to(memory_format=torch.channels_last)
    return net
