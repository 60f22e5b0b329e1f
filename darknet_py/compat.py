"""Upstream's Python module (darknet.py of AlexeyAB/darknet), computed by darknet_py.

Upstream's darknet.py binds libdarknet with ctypes; darknet_images.py, darknet_video.py and
users' scripts call it through ctypes structures (IMAGE, DETECTION, DETNUMPAIR, METADATA)
and C-style functions (make_image, copy_image_from_bytes, predict_image,
get_network_boxes, do_nms_sort, free_detections, network_predict_batch, ...). This module
has the same names, arguments and results, so those scripts run unchanged:

* What libdarknet allocates (an image's pixels; a detection array, its prob rows and uc)
  is a numpy buffer here, laid out as C would lay it out, and kept alive in a registry
  until the matching free_* call. Freeing twice, or freeing what we did not allocate, is a
  no-op (C would crash); reading after a free is as undefined as in C.
* A network is a `NetworkHandle` (upstream: an opaque pointer) holding the darknet_py
  `Network` and the outputs of its last forward pass, which get_network_boxes decodes.
* Bad input raises: missing cfg / data / weights / names files (darknet_py's CfgError or
  WeightsError, naming the file), a frame of the wrong size (ValueError naming the sizes),
  get_network_boxes before any prediction (RuntimeError).

Results are upstream's: get_network_boxes fills the same DETECTION fields (boxes in pixels
unless ``relative``, ``prob`` = objectness * class probability above thresh, else 0;
``best_class_idx`` is only computed for [region] networks, as libdarknet leaves it 0
otherwise), do_nms_sort / do_nms_obj suppress in place and leave the array in the order
upstream's sorts leave it (that order shows through detect_image's stable sort on the
confidence *string*), and detect_image returns upstream's ``(label, "58.85", (x, y, w, h))``
tuples sorted by that string.
"""
from __future__ import annotations

import ctypes as ct
import os
import random
import types
from ctypes import (POINTER, Structure, byref, c_char_p, c_double, c_float, c_int,  # noqa: F401
                    c_void_p, cast, pointer, sizeof)
from dataclasses import dataclass

import numpy as np

from .cfg import read_data_cfg
from .outputs.detections import Detections, network_boxes, nms, nms_obj
from .outputs.detections import class_sort  # the tie rule nms() sorts with, so our orders agree
from .image import letterbox_image as _letterbox_pixels
from .image import resize_image as _resize_pixels
from .layers.region import Region

__all__ = [
    # ctypes structures and pointer types
    "BOX", "DETECTION", "DETNUMPAIR", "IMAGE", "METADATA",
    "FloatPtr", "IntPtr", "DETECTIONPtr", "DETNUMPAIRPtr",
    # the ctypes names scripts take from the module (older darknet.py did `from ctypes import *`)
    "POINTER", "Structure", "byref", "c_char_p", "c_double", "c_float", "c_int", "c_void_p",
    "cast", "pointer", "sizeof",
    # pure-Python helpers
    "network_width", "network_height", "bbox2points", "class_colors", "load_network",
    "print_detections", "draw_boxes", "decode_detection", "non_max_suppression_fast",
    "remove_negatives", "remove_negatives_faster", "detect_image",
    # upstream's bindings of libdarknet functions
    "lib", "copy_image_from_bytes", "predict", "set_gpu", "init_cpu", "make_image",
    "get_network_boxes", "make_network_boxes", "free_detections", "free_batch_detections",
    "free_ptrs", "network_predict", "reset_rnn", "load_net", "load_net_custom",
    "free_network_ptr", "do_nms_obj", "do_nms_sort", "free_image", "letterbox_image",
    "load_meta", "load_image", "rgbgr_image", "predict_image", "predict_image_letterbox",
    "network_predict_batch",
    # ours
    "NetworkHandle",
]


# ============================================================================ structures
class BOX(Structure):
    _fields_ = (("x", c_float), ("y", c_float), ("w", c_float), ("h", c_float))


FloatPtr = POINTER(c_float)
IntPtr = POINTER(c_int)


class DETECTION(Structure):
    _fields_ = (
        ("bbox", BOX),
        ("classes", c_int),
        ("best_class_idx", c_int),
        ("prob", FloatPtr),
        ("mask", FloatPtr),
        ("objectness", c_float),
        ("sort_class", c_int),
        ("uc", FloatPtr),
        ("points", c_int),
        ("embeddings", FloatPtr),
        ("embedding_size", c_int),
        ("sim", c_float),
        ("track_id", c_int),
    )


DETECTIONPtr = POINTER(DETECTION)


class DETNUMPAIR(Structure):
    _fields_ = (("num", c_int), ("dets", DETECTIONPtr))


DETNUMPAIRPtr = POINTER(DETNUMPAIR)


class IMAGE(Structure):
    _fields_ = (("w", c_int), ("h", c_int), ("c", c_int), ("data", FloatPtr))


class METADATA(Structure):
    _fields_ = (("classes", c_int), ("names", POINTER(c_char_p)))


def _numpy_layout(struct) -> np.dtype:
    """A numpy dtype over a ctypes Structure's memory, pointers as integers, so that whole
    DETECTION arrays are filled and permuted with numpy instead of one struct at a time."""
    names, formats, offsets = [], [], []
    for name, ctype in struct._fields_:
        if ctype is BOX:
            fmt = (np.float32, 4)
        elif ctype is c_float:
            fmt = np.float32
        elif ctype is c_int:
            fmt = np.int32
        elif issubclass(ctype, ct._Pointer):
            fmt = np.uintp
        else:
            raise TypeError(f"no numpy layout for field {name} of type {ctype}")
        names.append(name)
        formats.append(fmt)
        offsets.append(getattr(struct, name).offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": sizeof(struct)})


_DETECTION_LAYOUT = _numpy_layout(DETECTION)

# ============================================================================ memory
# What "libdarknet" allocated and not yet freed, by address (see the module docstring).
_IMAGES: dict[int, np.ndarray] = {}  # IMAGE.data -> pixel buffer


@dataclass
class _DetectionBlock:
    """Storage behind one DETECTION array: the structs, their prob rows and uc rows."""
    array: ct.Array
    probs: np.ndarray  # (n, classes) float32; struct i's prob points at a row of it
    uc: np.ndarray | None  # (n, 4) float32 for Gaussian_yolo networks


_DETECTIONS: dict[int, _DetectionBlock] = {}  # DETECTION array -> its storage
_PAIRS: dict[int, ct.Array] = {}  # DETNUMPAIR array (network_predict_batch) -> itself


def _address(ptr) -> int:
    """The address a ctypes pointer / array / c_void_p refers to (0 for NULL or None)."""
    if ptr is None:
        return 0
    if isinstance(ptr, int):
        return ptr
    return cast(ptr, c_void_p).value or 0


def _new_image(pixels: np.ndarray) -> IMAGE:
    """An IMAGE owning a float32 copy of `pixels` (c, h, w), registered until free_image."""
    c, h, w = pixels.shape
    buffer = np.ascontiguousarray(pixels, dtype=np.float32).copy().reshape(-1)
    if buffer.size == 0:
        buffer = np.zeros(1, np.float32)  # a distinct address even for an empty image
    _IMAGES[buffer.ctypes.data] = buffer
    return IMAGE(w, h, c, buffer.ctypes.data_as(FloatPtr))


def _pixels(image: IMAGE) -> np.ndarray:
    """A (c, h, w) float32 view of an IMAGE's data."""
    w, h, c = image.w, image.h, image.c
    if w <= 0 or h <= 0 or c <= 0:
        raise ValueError(f"IMAGE has size {w} x {h} x {c}")
    if not image.data:
        raise ValueError(f"IMAGE {w} x {h} x {c} has no data (NULL)")
    return np.ctypeslib.as_array(image.data, shape=(c, h, w))


def _new_detections(found: Detections, classes: int, best_class: np.ndarray,
                    embedding_size: int = 0) -> DETECTIONPtr:
    """A DETECTION array filled from `found`, registered until free_detections."""
    n = len(found)
    array = (DETECTION * n)()
    probs = np.array(found.probs, dtype=np.float32, order="C")
    uc = None if found.uc is None else np.array(found.uc, dtype=np.float32, order="C")
    if n:
        table = np.frombuffer(array, dtype=_DETECTION_LAYOUT)
        table["bbox"] = found.boxes
        table["classes"] = classes
        table["best_class_idx"] = best_class
        table["prob"] = probs.ctypes.data + np.arange(n, dtype=np.uintp) * probs.strides[0]
        table["objectness"] = found.objectness
        if uc is not None:
            table["uc"] = uc.ctypes.data + np.arange(n, dtype=np.uintp) * uc.strides[0]
        table["embedding_size"] = embedding_size
    _DETECTIONS[ct.addressof(array)] = _DetectionBlock(array, probs, uc)
    return cast(array, DETECTIONPtr)


def _detection_table(dets, num: int) -> np.ndarray:
    """A numpy view of the first `num` structs of a DETECTION pointer or array."""
    address = _address(dets)
    if not address:
        raise ValueError("NULL DETECTION pointer")
    return np.frombuffer((DETECTION * num).from_address(address), dtype=_DETECTION_LAYOUT)


class _ProbRows:
    """The prob rows the structs of a DETECTION table point to, read and written as one
    (n, classes) array. Fast when they are rows of a block we allocated (the usual case);
    otherwise each struct's pointer is followed."""

    def __init__(self, dets, table: np.ndarray, classes: int):
        self.classes = classes
        self.pointers = table["prob"].astype(np.int64)
        if np.any(self.pointers == 0):
            raise ValueError("a DETECTION has no prob array (NULL)")
        self.block, self.rows = None, None
        block = _DETECTIONS.get(_address(dets))
        if block is not None and len(block.probs):
            offsets = self.pointers - block.probs.ctypes.data
            stride = block.probs.strides[0]
            rows = offsets // stride
            if np.all(offsets % stride == 0) and np.all((rows >= 0) & (rows < len(block.probs))):
                self.block, self.rows = block, rows

    def _row(self, address) -> np.ndarray:
        return np.ctypeslib.as_array(cast(int(address), FloatPtr), shape=(self.classes,))

    def read(self) -> np.ndarray:
        if self.rows is not None:
            return self.block.probs[self.rows, :self.classes]
        out = np.zeros((len(self.pointers), self.classes), np.float32)
        for i, address in enumerate(self.pointers):
            out[i] = self._row(address)
        return out

    def write(self, index: np.ndarray, values: np.ndarray) -> None:
        """Rows of the structs at `index` (positions in the table) = values."""
        if self.rows is not None:
            self.block.probs[self.rows[index], :self.classes] = values
            return
        for i, row in zip(index, values):
            self._row(self.pointers[i])[:] = row


def _class_count(table: np.ndarray, classes: int) -> int:
    """How many prob entries to use: as asked, but never past what the structs hold."""
    classes = max(int(classes), 0)
    held = table["classes"]
    if len(held) and held.min() > 0:
        classes = min(classes, int(held.min()))
    return classes


# ============================================================================ networks
class NetworkHandle:
    """What load_network returns (upstream: an opaque network pointer).

    model: the darknet_py Network; batch: the batch size asked for; outputs: the flat
    outputs of the last forward pass (detection layers and the last layer) by layer index.
    """

    def __init__(self, model, batch: int = 1):
        self.model = model
        self.batch = batch
        self.outputs: dict[int, np.ndarray] | None = None

    def __repr__(self) -> str:
        path = getattr(self.model, "path", None)
        return f"<darknet network {path!r}, batch {self.batch}>" if self.model is not None \
            else "<darknet network (freed)>"

    def forward(self, x: np.ndarray) -> dict[int, np.ndarray]:
        if self.model is None:
            raise RuntimeError("the network was freed (free_network_ptr)")
        self.outputs = self.model.predict_raw(x)
        return self.outputs

    def last_output(self):
        """Pointer to the last layer's output (what upstream's predict functions return)."""
        out = self.outputs[len(self.model.layers) - 1]
        return out.ctypes.data_as(FloatPtr)


_device = None  # where load_net_custom puts networks: set_gpu / init_cpu


def _handle(net) -> NetworkHandle:
    if not isinstance(net, NetworkHandle):
        raise TypeError(f"expected a network from load_network / load_net_custom, got {type(net).__name__}")
    if net.model is None:
        raise RuntimeError("the network was freed (free_network_ptr)")
    return net


def network_width(net) -> int:
    return _handle(net).model.options.width


def network_height(net) -> int:
    return _handle(net).model.options.height


def load_net_custom(cfg_file, weights_file, clear: int = 0, batch: int = 1) -> NetworkHandle:
    """upstream load_network_custom: an inference network with weights (if given)."""
    from .network import load_network as load_model

    weights = os.fsdecode(weights_file) if weights_file else None
    model = load_model(os.fsdecode(cfg_file), weights, device=_device)
    if clear:
        model.seen = 0
    return NetworkHandle(model, int(batch))


def load_net(cfg_file, weights_file, clear: int = 0) -> NetworkHandle:
    return load_net_custom(cfg_file, weights_file, clear, 1)


def free_network_ptr(net) -> None:
    if isinstance(net, NetworkHandle):
        net.model, net.outputs = None, None


def set_gpu(gpu: int) -> None:
    """upstream cuda_set_device: later networks go to that GPU (no-op without CUDA)."""
    global _device
    import torch

    if torch.cuda.is_available():
        _device = torch.device("cuda", int(gpu))


def init_cpu() -> None:
    global _device
    _device = None


def reset_rnn(net) -> None:
    """Upstream clears recurrent layers' state; darknet_py keeps none between calls."""


def free_ptrs(ptrs, n) -> None:
    """Upstream frees C pointer arrays; Python memory needs nothing."""


def _class_names(data_file) -> list[str]:
    """upstream get_metadata: ``classes`` (default 2) names from the data file's names file."""
    from .cli import read_names

    data_file = os.fsdecode(data_file)
    classes = read_data_cfg(data_file).int("classes", 2)
    names, names_path = read_names(data_file)
    if len(names) < classes:
        raise ValueError(f"{names_path}: {len(names)} names, but {data_file} has classes={classes}")
    return names[:classes]


def load_meta(data_file) -> METADATA:
    names = [name.encode("utf-8") for name in _class_names(data_file)]
    return METADATA(len(names), (c_char_p * max(len(names), 1))(*names))


def load_network(config_file, data_file, weights, batch_size=1):
    """Load a cfg and its weights; read the class names. -> (network, class_names, class_colors)"""
    network = load_net_custom(config_file, weights, 0, batch_size)
    class_names = _class_names(data_file)
    return network, class_names, class_colors(class_names)


# ============================================================================ images
def make_image(w: int, h: int, c: int) -> IMAGE:
    """A zeroed w x h x c float image (free it with free_image)."""
    w, h, c = int(w), int(h), int(c)
    if w < 0 or h < 0 or c < 0:
        raise ValueError(f"make_image: negative size {w} x {h} x {c}")
    return _new_image(np.zeros((c, h, w), np.float32))


def free_image(image: IMAGE) -> None:
    _IMAGES.pop(_address(image.data), None)


def copy_image_from_bytes(image: IMAGE, pdata) -> None:
    """Fill `image` from an h x w x c uint8 frame (HWC, e.g. RGB bytes): floats in [0, 1], CHW."""
    w, h, c = image.w, image.h, image.c
    try:
        frame = np.frombuffer(pdata, dtype=np.uint8)
    except (TypeError, ValueError) as e:
        raise TypeError(f"copy_image_from_bytes needs bytes (frame.tobytes()), got {type(pdata).__name__}") from e
    expected = w * h * c
    if frame.size != expected:
        shape = f" (an array of shape {tuple(pdata.shape)})" if hasattr(pdata, "shape") else ""
        raise ValueError(f"copy_image_from_bytes: got {frame.size} bytes{shape}, but the IMAGE is "
                         f"{w} x {h} x {c} = {expected} bytes; resize the frame to {w} x {h} first")
    # float32 x / 255 is upstream's (float)(x / 255.) exactly: no quotient of a byte by 255
    # lies near enough to a float32 rounding boundary for the two roundings to differ
    np.divide(frame.reshape(h, w, c).transpose(2, 0, 1), np.float32(255), out=_pixels(image),
              dtype=np.float32)


def load_image(path, w: int = 0, h: int = 0) -> IMAGE:
    """upstream load_image_color: RGB floats, resized to w x h if both are given."""
    from .image import load_image_color

    return _new_image(load_image_color(os.fsdecode(path), int(w), int(h)))


def letterbox_image(image: IMAGE, w: int, h: int) -> IMAGE:
    return _new_image(_letterbox_pixels(_pixels(image), int(w), int(h)))


def rgbgr_image(image: IMAGE) -> None:
    """Swap the first and third channels in place."""
    pixels = _pixels(image)
    if pixels.shape[0] >= 3:
        pixels[[0, 2]] = pixels[[2, 0]]


# ============================================================================ prediction
def _network_input(net: NetworkHandle, data, batch: int = 1) -> np.ndarray:
    o = net.model.options
    if not _address(data):
        raise ValueError("NULL input data")
    return np.ctypeslib.as_array(cast(data, FloatPtr), shape=(batch, o.channels, o.height, o.width))


def network_predict(net, data):
    """upstream network_predict_ptr: run on a network-sized float input; -> output pointer."""
    net = _handle(net)
    net.forward(_network_input(net, data)[0])
    return net.last_output()


predict = network_predict


def predict_image(net, image: IMAGE):
    """Run on an IMAGE (resized to the network size if it is not); -> last layer output pointer."""
    net = _handle(net)
    o = net.model.options
    pixels = _pixels(image)
    if (image.w, image.h) != (o.width, o.height):
        pixels = _resize_pixels(pixels, o.width, o.height)
    net.forward(pixels)
    return net.last_output()


def predict_image_letterbox(net, image: IMAGE):
    net = _handle(net)
    o = net.model.options
    net.forward(_letterbox_pixels(_pixels(image), o.width, o.height))
    return net.last_output()


def _best_class(model, probs: np.ndarray) -> np.ndarray:
    """DETECTION.best_class_idx as libdarknet leaves it: set (first highest prob > 0, else -1)
    only by [region] layers; 0 (calloc) for every other kind."""
    heads = [layer for layer in model.layers if layer.is_detection_output]
    if not heads or not all(isinstance(layer, Region) for layer in heads) or probs.shape[1] == 0:
        return np.zeros(len(probs), np.int32)
    return np.where(probs.max(axis=1) > 0, probs.argmax(axis=1), -1).astype(np.int32)


def _decode(net: NetworkHandle, outputs, w, h, thresh, hier_thresh, relative, letter) -> DETECTIONPtr:
    found, _kind, _beta, classes = network_boxes(net.model, outputs, float(thresh), float(hier_thresh),
                                                 int(w), int(h), bool(letter), bool(relative))
    return _new_detections(found, classes, _best_class(net.model, found.probs))


def _set_count(num, value: int) -> None:
    if num is None:
        return
    if isinstance(num, c_int):
        num.value = value
    else:
        num[0] = value


def get_network_boxes(net, w, h, thresh, hier_thresh, map, relative, num, letter):
    """The boxes of the last prediction, as a DETECTION array (free with free_detections).

    w, h: the image size boxes are scaled to (pixels unless relative); num: pointer(c_int)
    that receives the count; map (upstream: class id remapping for [region]) is ignored.
    """
    net = _handle(net)
    if net.outputs is None:
        raise RuntimeError("get_network_boxes: the network has not predicted anything yet "
                           "(call predict_image first)")
    dets = _decode(net, net.outputs, w, h, thresh, hier_thresh, relative, letter)
    _set_count(num, len(_DETECTIONS[_address(dets)].probs))
    return dets


def make_network_boxes(net, thresh=0.5, num=None):
    """A zeroed DETECTION array as large as the last prediction's boxes above thresh."""
    net = _handle(net)
    if net.outputs is None:
        raise RuntimeError("make_network_boxes: the network has not predicted anything yet")
    found, _kind, _beta, classes = network_boxes(net.model, net.outputs, float(thresh), 0.5,
                                                 net.model.options.width, net.model.options.height)
    empty = Detections(np.zeros_like(found.boxes), np.zeros_like(found.objectness),
                       np.zeros_like(found.probs), None if found.uc is None else np.zeros_like(found.uc))
    _set_count(num, len(found))
    return _new_detections(empty, classes, np.zeros(len(found), np.int32))


def free_detections(dets, n) -> None:
    _DETECTIONS.pop(_address(dets), None)


def network_predict_batch(net, image: IMAGE, batch_size, w, h, thresh, hier, map, relative, letter):
    """Run on `batch_size` network-sized images stored one after the other at image.data; ->
    DETNUMPAIR array, one (num, dets) per image (free with free_batch_detections)."""
    net = _handle(net)
    batch_size = int(batch_size)
    outputs = net.forward(_network_input(net, image.data, batch_size))
    pairs = (DETNUMPAIR * batch_size)()
    for b in range(batch_size):
        own = {index: out.reshape(batch_size, -1)[b] for index, out in outputs.items()}
        dets = _decode(net, own, w, h, thresh, hier, relative, letter)
        pairs[b].num = len(_DETECTIONS[_address(dets)].probs)
        pairs[b].dets = dets
    _PAIRS[ct.addressof(pairs)] = pairs
    return cast(pairs, DETNUMPAIRPtr)


def free_batch_detections(pairs, n) -> None:
    if not _address(pairs):
        return
    for i in range(int(n)):
        free_detections(pairs[i].dets, pairs[i].num)
    _PAIRS.pop(_address(pairs), None)


# ============================================================================ NMS in place
def _zero_objectness_last(objectness: np.ndarray) -> tuple[np.ndarray, int]:
    """Upstream's first pass of do_nms_sort / do_nms_obj: each box with objectness 0 is
    swapped with the last one not yet moved. -> (the new order, how many lead with
    objectness != 0)."""
    n = len(objectness)
    if np.all(objectness != 0):
        return np.arange(n), n
    order, i, k = list(range(n)), 0, n - 1
    while i <= k:
        if objectness[order[i]] == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return np.asarray(order), k + 1


def _nms_in_place(dets, total, classes, thresh, by_objectness: bool) -> None:
    """upstream do_nms_sort (per class) or do_nms_obj (by objectness) on a DETECTION array:
    suppressed probs (and, by objectness, objectness) become 0 and the structs end up in the
    order upstream's sorts leave them."""
    total = int(total)
    if total <= 0:
        return
    table = _detection_table(dets, total)
    classes = _class_count(table, classes)
    rows = _ProbRows(dets, table, classes)
    order, lead = _zero_objectness_last(table["objectness"])
    front = order[:lead]
    if lead == 0:
        table[:] = table[order]
        return
    part = Detections(table["bbox"][front], table["objectness"][front], rows.read()[front])
    if by_objectness:
        kept = nms_obj(part, classes, thresh)
        sorted_front = np.argsort(-part.objectness, kind="stable")
        table["objectness"][front] = kept.objectness
        table["sort_class"][front] = -1
    else:
        kept = nms(part, classes, thresh, "default")
        # one stable sort per class, by that class's prob, as upstream's qsort calls;
        # an all-zero column leaves the order as it is
        sorted_front = np.arange(lead)
        for k in range(classes):
            if part.probs[:, k].any():
                sorted_front = class_sort(sorted_front, part.probs[:, k])
        if classes:
            table["sort_class"][front] = classes - 1
    rows.write(front, kept.probs)
    table[:] = table[np.concatenate([front[sorted_front], order[lead:]])]


def do_nms_sort(dets, total, classes, thresh) -> None:
    _nms_in_place(dets, total, classes, float(thresh), by_objectness=False)


def do_nms_obj(dets, total, classes, thresh) -> None:
    _nms_in_place(dets, total, classes, float(thresh), by_objectness=True)


# ============================================================================ Python helpers
def bbox2points(bbox):
    """(centre x, centre y, w, h) -> (xmin, ymin, xmax, ymax) rounded, for cv2.rectangle."""
    x, y, w, h = bbox
    return round(x - w / 2), round(y - h / 2), round(x + w / 2), round(y + h / 2)


def class_colors(names):
    """{name: random (B, G, R)}; seed `random` first for the same colours every run."""
    colors = {}
    for name in names:
        colors[name] = tuple(random.randint(0, 255) for _ in range(3))
    return colors


def print_detections(detections, coordinates=False):
    print("\nObjects:")
    for label, confidence, (x, y, w, h) in detections:
        if coordinates:
            print(f"{label}: {confidence}%    (left_x: {x:.0f}   top_y:  {y:.0f}   "
                  f"width:   {w:.0f}   height:  {h:.0f})")
        else:
            print(f"{label}: {confidence}%")


def draw_boxes(detections, image, colors):
    """Draw each (label, confidence, bbox) on the BGR/RGB uint8 `image` in place; -> image."""
    import cv2

    for label, confidence, bbox in detections:
        left, top, right, bottom = bbox2points(bbox)
        color = colors[label]
        cv2.rectangle(image, (left, top), (right, bottom), color, 1)
        cv2.putText(image, f"{label} [{float(confidence):.2f}]", (left, top - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 2)
    return image


def decode_detection(detections):
    """Confidences 0..1 -> percentage strings with at most 2 decimals ('58.85', '100.0')."""
    return [(str(label), str(round(confidence * 100, 2)), bbox)
            for label, confidence, bbox in detections]


def non_max_suppression_fast(detections, overlap_thresh):
    """Malisiewicz's NMS on tuples whose last item is (x, y, w, h); -> the kept tuples.

    Repeatedly keeps the remaining box with the lowest bottom edge and drops the boxes whose
    overlap (intersection over *their* area, pixel-inclusive +1 sizes) exceeds the threshold.
    """
    if not len(detections):
        return []
    x, y, w, h = np.array([d[-1] for d in detections], dtype=np.float64).T
    x1, y1, x2, y2 = x - w / 2, y - h / 2, x + w / 2, y + h / 2
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    remaining = np.argsort(y2)
    picked = []
    while len(remaining):
        best, others = remaining[-1], remaining[:-1]
        picked.append(best)
        inter_w = np.maximum(0, np.minimum(x2[best], x2[others]) - np.maximum(x1[best], x1[others]) + 1)
        inter_h = np.maximum(0, np.minimum(y2[best], y2[others]) - np.maximum(y1[best], y1[others]) + 1)
        overlap = inter_w * inter_h / area[others]
        remaining = others[overlap <= overlap_thresh]
    return [detections[i] for i in picked]


def remove_negatives(detections, class_names, num):
    """Every (class, box) with prob > 0 among the first `num` detections, box by box:
    -> [(name, prob, (x, y, w, h))]."""
    num = int(num)
    if num <= 0:
        return []
    table = _detection_table(detections, num)
    probs = _ProbRows(detections, table, _class_count(table, len(class_names))).read()
    boxes = list(map(tuple, table["bbox"].tolist()))
    box_index, class_index = np.nonzero(probs > 0)  # box by box, then class by class
    values = probs[box_index, class_index].tolist()
    return [(class_names[k], p, boxes[j])
            for j, k, p in zip(box_index.tolist(), class_index.tolist(), values)]


def remove_negatives_faster(detections, class_names, num):
    """One (name, prob, box) per detection: its best_class_idx (skipped when -1)."""
    num = int(num)
    if num <= 0:
        return []
    table = _detection_table(detections, num)
    out = []
    for j in range(num):
        best = int(table["best_class_idx"][j])
        if best == -1:
            continue
        prob = detections[j].prob[best]
        out.append((class_names[best], prob, tuple(table["bbox"][j].tolist())))
    return out


def detect_image(network, class_names, image, thresh=.5, hier_thresh=.5, nms=.45):
    """Detections in `image`: [(label, confidence string, (x, y, w, h) in image pixels)],
    sorted by the confidence string (as upstream: '9.5' sorts after '58.85')."""
    count = pointer(c_int(0))
    predict_image(network, image)
    dets = get_network_boxes(network, image.w, image.h, thresh, hier_thresh, None, 0, count, 0)
    num = count[0]
    try:
        if nms:
            do_nms_sort(dets, num, len(class_names), nms)
        found = decode_detection(remove_negatives(dets, class_names, num))
    finally:
        free_detections(dets, num)
    return sorted(found, key=lambda d: d[1])


# upstream's `lib`: the C functions by their libdarknet names
lib = types.SimpleNamespace(
    network_width=network_width,
    network_height=network_height,
    copy_image_from_bytes=copy_image_from_bytes,
    network_predict_ptr=network_predict,
    cuda_set_device=set_gpu,
    init_cpu=init_cpu,
    make_image=make_image,
    get_network_boxes=get_network_boxes,
    make_network_boxes=make_network_boxes,
    free_detections=free_detections,
    free_batch_detections=free_batch_detections,
    free_ptrs=free_ptrs,
    reset_rnn=reset_rnn,
    load_network=load_net,
    load_network_custom=load_net_custom,
    free_network_ptr=free_network_ptr,
    do_nms_obj=do_nms_obj,
    do_nms_sort=do_nms_sort,
    free_image=free_image,
    letterbox_image=letterbox_image,
    get_metadata=load_meta,
    load_image_color=load_image,
    rgbgr_image=rgbgr_image,
    network_predict_image=predict_image,
    network_predict_image_letterbox=predict_image_letterbox,
    network_predict_batch=network_predict_batch,
)
