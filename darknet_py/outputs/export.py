"""darknet_py's own: ONNX export of a Network (upstream darknet has no exporter).

`export_onnx(net, path, ...)` (also `Network.export_onnx`, `./darknet.py export`) writes a
graph with one input `input` (N, C, H, W) float32 in [0, 1] (what predict_raw takes) and

* by default, what predict_raw returns, in layer order: one output per [yolo] /
  [Gaussian_yolo] / [region] / [detection] layer and the last layer, named `layerNNN_TYPE`,
  each (N, l.outputs) in upstream's l.output layout; where the last layer is a [cost]
  (zeros outside training) the layer before it instead, as upstream's network_predict;
* with postprocess, one output `boxes` (N, B, 5 + classes): every box get_network_boxes
  (detections.py, relative=1, no letterbox) can return, in its order (layer by layer; in a
  layer cell-major, then anchor): x, y, w, h relative to the network input, objectness,
  then each class probability with upstream's threshold applied (prob > thresh, else 0).
  The rows with objectness > thresh are exactly get_network_boxes' boxes before NMS (for
  [region], objectness is 1 and every row is one); a deployment only adds NMS.

The graph is torch's ONNX exporter (torch.export, onnxscript) run on a copy of the network
with batch norm folded into plain F.conv2d (PackedConv's oneDNN op has no ONNX form).
Mish is exported as ONNX's Mish op (opset 18, activations._mish): the form darknet_py
computes with (a clamp before exp) became Clip, Exp, Add, Log, Tanh, Mul, which OpenCV 5's
importer fuses into one Mish layer fed by the Clip, so it computed mish(min(x, 20)): every
activation above 20 came out as 20 (why a plain export of yolov4x-mish, whose activations
pass 20, was off in OpenCV while onnxruntime, which runs the ops as written, agreed).
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import os
import re
import warnings

import torch
from torch import nn

from ..cfg import CfgError
from .fileio import atomic_write_bytes
from ..layers.detection import Detection
from ..layers.region import Region
from ..layers.yolo import Yolo

OPSET = 18  # the first opset with a Mish op
INPUT_NAME = "input"
BOXES_NAME = "boxes"
DECODED_TYPES = ("yolo", "Gaussian_yolo", "region")  # the sections of the layers that say is_detector_head


class ExportError(Exception):
    """The network cannot be exported (or the exporter is missing): a one-line message."""


def output_indices(net) -> list[int]:
    """predict_raw's layers, with upstream's get_network_output in place of a last [cost]
    layer (whose inference output is zeros: a classifier exports its softmax)."""
    out = [i for i in net.output_indices() if net.layers[i].is_prediction]
    last = net.output_index  # upstream's get_network_output
    return out + ([last] if last not in out else [])


def output_names(net) -> list[str]:
    """`layerNNN_TYPE` for each output (TYPE: the cfg's section name)."""
    return [f"layer{i:03d}_{net.sections[i + 1].name}" for i in output_indices(net)]


class Exported(nn.Module):
    """What the ONNX graph computes: predict_raw's outputs (raw) and/or the decoded boxes."""

    def __init__(self, net, raw: bool, boxes: bool, thresh: float):
        super().__init__()
        self.net, self.thresh = net, float(thresh)
        self.indices = output_indices(net) if raw else []
        self.heads = _box_heads(net) if boxes else []

    def forward(self, x):
        out = self.net(x)
        res = [out[i].reshape(x.shape[0], -1) for i in self.indices]
        if self.heads:
            o = self.net.options
            res.append(torch.cat([_decode(l, out[l.index], o.width, o.height, self.thresh) for l in self.heads], 1))
        return tuple(res)


def _box_heads(net) -> list:
    """The layers get_network_boxes decodes, checked for what the graph can decode."""
    heads = [l for l in net.layers if l.is_detector_head]
    refused = next((l for l in net.layers if isinstance(l, Detection)), None)
    if refused is not None:
        raise _layer_error(net, refused, "a [detection] layer's boxes are in image pixels; export it without "
                                         "-postprocess")
    if not heads:
        raise ExportError(f"{net.path}: -postprocess needs a [yolo], [Gaussian_yolo] or [region] layer")
    for l in heads:
        if isinstance(l, Region) and (l.coords != 4 or l.softmax_tree is not None):
            raise _layer_error(net, l, "-postprocess decodes [region] layers with coords=4 and no tree= only")
        if l.classes != heads[0].classes:
            raise _layer_error(net, l, f"classes={l.classes} but layer {heads[0].index} has {heads[0].classes}: "
                                       f"the boxes need one number of classes")
    return heads


def _grid(h: int, w: int, a: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """col, row of each box in cell-major, anchor-minor order: (1, h*w*a) each."""
    col = torch.arange(w, dtype=like.dtype, device=like.device).view(1, w, 1).expand(h, w, a)
    row = torch.arange(h, dtype=like.dtype, device=like.device).view(h, 1, 1).expand(h, w, a)
    return col.reshape(1, -1), row.reshape(1, -1)


def _anchors(layer, netw: int, neth: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's anchor widths / netw and heights / neth, repeated per cell: (1, h*w*a)."""
    mask = getattr(layer, "mask", None) or list(range(layer.n))
    aw = torch.tensor([layer.anchors[2 * m] / netw for m in mask], dtype=like.dtype, device=like.device)
    ah = torch.tensor([layer.anchors[2 * m + 1] / neth for m in mask], dtype=like.dtype, device=like.device)
    cells = layer.out_h * layer.out_w
    return aw.repeat(cells).view(1, -1), ah.repeat(cells).view(1, -1)


def _decode(layer, out: torch.Tensor, netw: int, neth: int, thresh: float) -> torch.Tensor:
    """One layer's rows: yolo_detections / gaussian_yolo_detections / region_detections
    (detections.py) for every box, in float32 (upstream rounds exp through double)."""
    nb, a, h, w = out.shape[0], layer.n, layer.out_h, layer.out_w
    col, row = _grid(h, w, a, out)
    if isinstance(layer, Region):
        # upstream's flattened l.output: (h*w*a, coords+1+classes) rows already in box order
        p = out.reshape(nb, h * w * a, -1)
        aw, ah = _anchors(layer, w, h, out)  # region anchors are in grid cells
        x = (col + torch.sigmoid(p[..., 0])) / w
        y = (row + torch.sigmoid(p[..., 1])) / h
        bw, bh = torch.exp(p[..., 2]) * aw, torch.exp(p[..., 3]) * ah
        obj = torch.ones_like(x)
        prob = p[..., 4:5] * p[..., 5:5 + layer.classes]
    else:
        p = out.reshape(nb, a, -1, h, w).permute(0, 3, 4, 1, 2).reshape(nb, h * w * a, -1)
        aw, ah = _anchors(layer, netw, neth, out)
        if isinstance(layer, Yolo):
            x, y, tw, th, obj = p[..., 0], p[..., 1], p[..., 2], p[..., 3], p[..., 4]
            prob = obj.unsqueeze(-1) * p[..., 5:]
            if layer.new_coords:
                bw, bh = tw * tw * 4 * aw, th * th * 4 * ah
            else:
                bw, bh = torch.exp(tw) * aw, torch.exp(th) * ah
        else:  # Gaussian_yolo: mu_x, sigma_x, mu_y, sigma_y, mu_w, sigma_w, mu_h, sigma_h, obj, classes
            x, y, obj = p[..., 0], p[..., 2], p[..., 8]
            bw, bh = torch.exp(p[..., 4]) * aw, torch.exp(p[..., 6]) * ah
            uc_aver = (p[..., 1] + p[..., 3] + p[..., 5] + p[..., 7]) / 4
            prob = (obj.unsqueeze(-1) * p[..., 9:]) * (1 - uc_aver).unsqueeze(-1)
        x, y = (col + x) / w, (row + y) / h
        if getattr(layer, "yolo_point", "center") == "left_top":
            x, y = x + bw / 2, y + bh / 2
        elif getattr(layer, "yolo_point", "center") == "right_bottom":
            x, y = x - bw / 2, y - bh / 2
    prob = torch.where(prob > thresh, prob, torch.zeros_like(prob))
    return torch.cat([torch.stack([x, y, bw, bh, obj], -1), prob], -1)


def _layer_error(net, layer, message: str) -> CfgError:
    s = net.sections[layer.index + 1]
    return CfgError(s.path, s.line, None, f"[{s.name}] (layer {layer.index}) cannot be exported to ONNX: {message}")


def _export_copy(net, width: int | None, height: int | None):
    """The same network at the export size, built afresh on the CPU in float32 with the
    weights and batch norm folded into plain convolutions (the user's is left alone)."""
    o = net.options
    # its own sections: a new size is written into them (type(net): network.py imports this module)
    work = type(net)(copy.deepcopy(net.sections), net.path, batch=net.batch, width=width or o.width,
                     height=height or o.height, quiet=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    work.load_state_dict(state, assign=True)  # read only: fuse() makes new tensors
    return work.eval().fuse(pack=False)


def _check_exportable(net) -> None:
    for layer in net.layers:
        reason = getattr(layer, "onnx_refusal", None)
        if reason:
            raise _layer_error(net, layer, reason)


def _failing_layer(net, exc: BaseException):
    """(the innermost layer of `net` whose forward was running when exc was raised, or None;
    the first exception of exc's chain: the exporter wraps the one that says what failed)."""
    found, seen = None, set()
    while True:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            obj = tb.tb_frame.f_locals.get("self")
            if obj is not None and any(obj is l for l in net.layers):
                found = obj
            tb = tb.tb_next
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return found, exc
        exc = nxt


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's warnings and log lines (torchvision ops it skips, deprecations) are not
    the user's business; its errors still reach export_onnx."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def export_onnx(net, path: str | os.PathLike, *, batch: int = 1, width: int | None = None,
                height: int | None = None, dynamic: bool = False, postprocess: bool = False,
                thresh: float = 0.25, raw: bool | None = None) -> list[str]:
    """Write `net` as an ONNX file (atomically); returns the output names.

    batch: the input's batch size (dynamic: any batch, the first axis named `batch`);
    width, height: the input size (default the cfg's); postprocess: the decoded boxes (see
    the module docstring), class probabilities thresholded at thresh; raw: predict_raw's
    outputs too (default: only without postprocess)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs onnx, onnxscript and onnx_ir)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra: pip install 'darknet_py[onnx]' ({e})") from None
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise ExportError(f"ONNX export needs torch's torch.export-based exporter (torch >= 2.6), "
                          f"this is torch {torch.__version__}")
    if batch < 1:
        raise ExportError(f"batch must be >= 1, not {batch}")
    raw = not postprocess if raw is None else raw
    if not (raw or postprocess):
        raise ExportError("nothing to export: raw=False without postprocess")
    work = _export_copy(net, width, height)
    _check_exportable(work)
    module = Exported(work, raw, postprocess, thresh)
    names = (output_names(work) if raw else []) + ([BOXES_NAME] if postprocess else [])
    o = work.options
    # a dynamic batch is traced with 2 images: torch.export fixes a size-1 axis
    x = torch.rand(max(batch, 2) if dynamic else batch, o.channels, o.height, o.width,
                   generator=torch.Generator().manual_seed(0))
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(module, (x,), None, dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=[INPUT_NAME], output_names=names, dynamic_shapes=shapes,
                                        external_data=False)
    except CfgError:
        raise
    except Exception as e:  # the exporter's errors, in one line naming the layer that was running
        layer, first = _failing_layer(work, e)
        if isinstance(first, CfgError):  # a layer's own error about its cfg, wrapped by torch.export
            raise first from None
        if layer is not None:
            raise _layer_error(work, layer, _first_line(first)) from None
        raise ExportError(f"{work.path}: ONNX export failed: {_first_line(first)}") from None
    model = program.model_proto
    model.doc_string = (f"darknet_py export of {os.path.basename(str(work.path))} ({o.width}x{o.height}); "
                        f"outputs: {', '.join(names)} (see darknet_py/outputs/export.py)")
    atomic_write_bytes(path, model.SerializeToString())
    return names
