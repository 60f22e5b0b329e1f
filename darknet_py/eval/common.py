"""Pieces shared by the evaluation commands (map, valid, recall, demo, calc_anchors).

Upstream spreads these over src/detector.c, src/data.c (read_boxes, the loader threads of
validate_detector*) and src/utils.c (basecfg). Here:

* `EvalError`: a problem with the user's input, told as one line naming the file; the
  CLI prints it and exits with status 1.
* `load_eval_network`: the network of `detector map/valid/recall/demo`, refusing a
  weights file that does not fit the cfg (upstream would run with garbage).
* `read_valid_list`, `read_truth`: the image list and one image's ground truth, checked.
* `iter_network_inputs`: images decoded and resized (or letterboxed) ahead of use in a
  few threads, in list order, as upstream's four loader threads.
* `predict_many`: the raw detection-layer outputs of one or more prepared images.
* `nms_in_upstream_order`: the cfg's NMS, with the detections permuted as upstream's
  in-place sorts leave its array (the order its results files and its mAP loop see).
"""
from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cfg import CfgError, Section, read_data_cfg
from ..network import announce_detection_layers  # noqa: F401 (re-exported)
from ..outputs.detections import Detections, _front_order, class_sort, apply_nms, zero_objectness_swap

F32 = np.float32


class EvalError(ValueError):
    """Bad evaluation input (list, image, label, weights): one line, naming the file."""


# ------------------------------------------------------------------------------ data file
def data_str(data: Section, key: str, default: str | None, announce: bool = False) -> str | None:
    """option_find_str: the value, or the default (announced on stderr as upstream's
    "KEY: Using default 'VALUE'" when `announce`)."""
    if data.has(key):
        return data.str(key)
    if announce and default is not None:
        print(f"{key}: Using default '{default}'", file=sys.stderr)
    return default


def load_data(data) -> Section:
    """A data file path (obj.data) or an already read Section."""
    if isinstance(data, Section):
        return data
    return read_data_cfg(data)


def read_names_file(data: Section, default: str = "data/names.list") -> tuple[list[str], str]:
    """Upstream get_labels_custom: one name per line (CR/LF removed), trailing blank lines dropped."""
    names_path = data.str("names", "") if data.has("names") else ""
    if not names_path:
        names_path = data.str("labels", default) if data.has("labels") else default
    try:
        text = Path(names_path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        opt = data.find("names")
        raise CfgError(data.path, opt.line if opt else None, "names",
                       f"cannot read names file '{names_path}': {e.strerror or e}") from None
    names = [line.rstrip("\r") for line in text.split("\n")]
    while names and names[-1] == "":
        names.pop()
    return names, names_path


# ------------------------------------------------------------------------------ lists
def read_valid_list(path: str, what: str = "valid") -> list[str]:
    """Upstream get_paths: one image path per line (CR removed, blank lines skipped).
    A missing or empty list is an EvalError naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EvalError(f"{path}: cannot read the {what} image list: {e.strerror or e}") from None
    lines = []
    for line in os.fsdecode(raw).split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            lines.append(line)
    if not lines:
        raise EvalError(f"{path}: the {what} image list is empty")
    return lines


def basecfg(path: str) -> str:
    """Upstream basecfg: the name after the last '/' (then after the last '\\'), cut at
    its first '.'."""
    name = path.rsplit("/", 1)[-1]
    if "/" not in path:
        name = name.rsplit("\\", 1)[-1]
    return name.split(".", 1)[0]


# ------------------------------------------------------------------------------ truth
@dataclass
class Truth:
    """One image's boxes: ids (k,) int64, boxes (k, 4) float32 relative x, y, w, h."""

    ids: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)


def empty_truth() -> Truth:
    return Truth(np.zeros(0, np.int64), np.zeros((0, 4), F32))


def read_truth(image_path: str, classes: int, missing_ok: bool = True, out=None) -> Truth:
    """Upstream read_boxes of the image's label file (replace_image_to_label).

    A missing label file is an image without objects, with upstream's message on stdout.
    A line that is not `class x y w h` with 0 <= class < classes and x, y, w, h in (0, 1]
    (a box outside the image) is an EvalError naming file and line: upstream would read
    such a line (or stop reading at it) without a word and report a wrong mAP.
    """
    from ..data.labels import read_labels, image_to_label_path

    label_path = image_to_label_path(image_path)
    labels = read_labels(label_path, classes)
    for issue in labels.issues:
        if issue.kind == "missing_label" and missing_ok:
            print(f"Can't open label file. (This can be normal only if you use MSCOCO): {label_path} ",
                  file=out or sys.stdout)
            continue
        message = issue.message.replace("; line skipped", "").replace(
            "; the image is used as a negative", "")
        where = issue.path if issue.line is None else f"{issue.path}:{issue.line}"
        raise EvalError(f"{where}: {message} (labels of image {image_path})")
    return Truth(labels.ids.astype(np.int64), labels.xywh.astype(F32))


# ------------------------------------------------------------------------------ network
def detection_layers(net) -> list:
    return [layer for layer in net.layers if layer.is_detector_head]


def network_classes(net) -> int:
    classes = getattr(net.layers[-1], "classes", None)
    if classes is None:
        raise EvalError(f"{net.path}: the last layer [{net.layers[-1].type_name}] has no classes: "
                        "this cfg is not a detector")
    return int(classes)


def load_eval_network(cfg_path: str, weights_path: str | None, device=None):
    """load_network(cfg, weights) for evaluation: batch 1, inference mode, fused, on
    `device` (default: the CPU).

    A weights file that ends before the network does, or holds more numbers than it
    uses, belongs to another cfg: EvalError naming both files."""
    from ..network import build_network

    net = build_network(cfg_path, batch=1)
    if weights_path:
        report = net.load_weights(weights_path, verbose=False)
        if report.partial or report.floats_left:
            have = "fewer" if report.partial else "more"
            raise EvalError(f"{weights_path}: this weights file has {have} numbers than {cfg_path} needs "
                            f"(loaded {report.layers_loaded} of {report.layers_with_weights} layers with weights"
                            + (f", {report.floats_left} numbers left over" if report.floats_left else "")
                            + "): it was made for another cfg")
    net.eval()
    if device is not None:
        net.to(device)
    net.fuse()
    import torch
    if net.device.type == "cpu":
        net.to(memory_format=torch.channels_last)
    if net.options.channels != 3:
        raise EvalError(f"{cfg_path}: channels={net.options.channels}: evaluation reads colour images "
                        "and supports channels=3 only")
    return net


def check_names(names: list[str], names_path: str, classes: int, cfg_path: str, exact: bool = True) -> None:
    """Upstream's "number of names ... isn't equal to classes" check, as an EvalError."""
    bad = len(names) != classes if exact else len(names) < classes
    if bad:
        raise EvalError(f"{names_path}: has {len(names)} names but classes={classes} in {cfg_path}")


# ------------------------------------------------------------------------------ images
@dataclass
class Prepared:
    index: int
    path: str
    width: int
    height: int
    image: np.ndarray | None  # the decoded image (C, H, W), kept only on request
    sized: np.ndarray  # the network input (C, netH, netW)


def _prepare(index: int, path: str, netw: int, neth: int, letter: bool, keep: bool) -> Prepared:
    from .. import image as imagelib

    im = imagelib.load_image_color(path)
    _, h, w = im.shape
    if letter:
        sized = imagelib.letterbox_image(im, netw, neth)
    else:
        sized = imagelib.resize_image(im, netw, neth)
    return Prepared(index, path, w, h, im if keep else None, sized)


def iter_network_inputs(paths: list[str], netw: int, neth: int, letter: bool, workers: int = 4,
                        keep_image: bool = False):
    """Yield a `Prepared` per path, in order, decoded ahead in `workers` threads.

    A missing or undecodable image raises ImageError (naming it) when its turn comes."""
    workers = max(1, min(workers, len(paths)))
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-load") as pool:
        pending: deque = deque()
        it = iter(enumerate(paths))
        try:
            for _ in range(ahead):
                i, p = next(it)
                pending.append(pool.submit(_prepare, i, p, netw, neth, letter, keep_image))
        except StopIteration:
            pass
        while pending:
            fut = pending.popleft()
            try:
                i, p = next(it)
                pending.append(pool.submit(_prepare, i, p, netw, neth, letter, keep_image))
            except StopIteration:
                pass
            try:
                yield fut.result()
            except BaseException:
                for f in pending:
                    f.cancel()
                raise


def batched(iterable, n: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def default_batch(net) -> int:
    """Images per forward pass: 1 on the CPU (upstream's order of arithmetic, batch 1),
    8 on an accelerator where batching pays."""
    return 1 if net.device.type == "cpu" else 8


def predict_many(net, arrays: list[np.ndarray]) -> list[dict]:
    """Network.predict_raw of each prepared input; one forward pass for all of them."""
    if len(arrays) == 1:
        return [net.predict_raw(arrays[0])]
    import torch

    with torch.inference_mode():
        outs = net.forward(net._input_tensor(np.stack(arrays)))
        idx = net.output_indices()
        return [{i: outs[i][b].contiguous().reshape(-1).float().cpu().numpy() for i in idx}
                for b in range(len(arrays))]


class eval_mode:
    """Context: the network in inference mode, put back as it was afterwards (the
    training loop hands its own network to validate_detector_map)."""

    def __init__(self, net):
        self.net = net

    def __enter__(self):
        self.was_training = self.net.training
        self.net.eval()
        return self.net

    def __exit__(self, *exc):
        if self.was_training:
            self.net.train()
        return False


# ------------------------------------------------------------------------------ NMS order
def upstream_order(dets: Detections, classes: int) -> np.ndarray:
    """The permutation upstream's do_nms_sort / diounms_sort leave the array in.

    First the boxes with objectness 0 are swapped to the back (front part in
    `_front_order`'s order, the back in swap order); then the front part is stably
    sorted by prob[k] descending for k = 0 .. classes-1. Each sort uses the probs of class
    k before class k's suppression, which are the decoder's (suppression of class j only
    touches prob[j])."""
    n = len(dets)
    front = _front_order(dets.objectness)
    back = _back_order(dets.objectness)
    if front.size == 0:
        return back
    probs = dets.probs[front]
    perm = np.arange(front.size)
    for k in range(min(classes, dets.classes)):
        perm = class_sort(perm, probs[:, k])
    order = np.concatenate([front[perm], back]).astype(np.int64)
    assert order.size == n
    return order


def _back_order(objectness: np.ndarray) -> np.ndarray:
    order, front = zero_objectness_swap(objectness)
    return order[front:]


def nms_in_upstream_order(dets: Detections, classes: int, thresh: float, kind: str, beta: float) -> Detections:
    """The cfg's NMS (probs of suppressed boxes zeroed), rows in upstream's array order."""
    if thresh:
        kept = apply_nms(dets, classes, thresh, kind, beta)
        return kept.select(upstream_order(dets, classes))
    return dets


def c_nan_str(v: float, fmt: str) -> str:
    """printf of a float as glibc writes NaN on x86 (0/0 gives the negative NaN: "-nan")."""
    if v != v:
        return "-nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return fmt % v
