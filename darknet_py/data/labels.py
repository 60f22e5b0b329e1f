"""Upstream: replace_image_to_label, custom_hash (src/utils.c) and read_boxes (src/data.c).

A label file has one `class x y w h` line per object, coordinates relative to the image.
Upstream reads it with a bare fscanf loop that silently stops at the first malformed
line; here every line is checked on its own, and a bad one is reported with its file
and line (as an `Issue`) and skipped, so that the rest of the file still counts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32

# The image extensions upstream turns into ".txt" (only at the very end of the name).
IMAGE_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP",
                    ".ppm", ".PPM", ".tiff", ".TIFF")
# Directory renames, applied in upstream's order, each to its first occurrence only.
# Note that a plain "/images/" is NOT renamed: upstream has that line commented out.
DIR_REPLACEMENTS = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)
# read_boxes gives every box a track id: its index plus a per-file hash bucket.
_MAX_OBJ_IMG = 4000


def image_to_label_path(path: str) -> str:
    """Upstream: replace_image_to_label: the label file that belongs to an image.

    Known dataset folders are renamed (COCO images/train2014 etc. -> labels/...,
    VOC JPEGImages -> labels), spaces and tabs around the path are trimmed, and a known
    image extension at the end becomes ".txt"; otherwise the label sits beside its image.
    """
    out = path
    for old, new in DIR_REPLACEMENTS:
        out = out.replace(old, new, 1)
    out = out.strip(" \t")
    for ext in IMAGE_EXTENSIONS:
        if out.endswith(ext):
            out = out[: -len(ext)] + ".txt"
    return out


def label_name_ok(label_path: str) -> bool:
    """Upstream warns "Failed to infer label file name" when the result is not *.txt."""
    return len(label_path) > 4 and label_path.endswith(".txt")


def custom_hash(text: str) -> int:
    """Upstream: custom_hash: djb2 over the path's bytes as C's signed chars, mod 2**64."""
    h = 5381
    for b in os.fsencode(text):
        h = (h * 33 + (b - 256 if b >= 128 else b)) & 0xFFFFFFFFFFFFFFFF
    return h


def track_id_base(label_path: str) -> int:
    """read_boxes' img_hash: (custom_hash(path) % 4000) * 4000."""
    return (custom_hash(label_path) % _MAX_OBJ_IMG) * _MAX_OBJ_IMG


@dataclass(frozen=True)
class Issue:
    """Something wrong with the data, reported once (per `key`) and then skipped.

    kind: "label" (a bad line), "missing_label", "bad_image", "label_name" or "warning";
    bad_list / bad_label_list: the line upstream appends to bad.list / bad_label.list.
    """

    kind: str
    path: str
    line: int | None
    message: str
    bad_list: str | None = None
    bad_label_list: str | None = None

    @property
    def key(self) -> tuple:
        return (self.kind, self.path, self.line)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Labels:
    """The usable boxes of one label file, in file order.

    ids: int64 (k,); xywh: float32 (k, 4); ltrb: float32 (k, 4) as read_boxes computes
    them (x -+ w/2, y -+ h/2); track: int64 (k,) upstream's track ids.
    """

    ids: np.ndarray
    xywh: np.ndarray
    ltrb: np.ndarray
    track: np.ndarray
    issues: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def empty_labels(issues=()) -> Labels:
    z = np.zeros((0, 4), dtype=F32)
    return Labels(np.zeros(0, np.int64), z, z.copy(), np.zeros(0, np.int64), list(issues))


def read_labels(label_path: str, classes: int) -> Labels:
    """Upstream: read_boxes, plus the class and coordinate checks of fill_truth_detection.

    A missing label file makes the image a negative (upstream prints "Can't open label
    file" and appends the name to bad.list); so does an empty one, silently.
    """
    if not label_name_ok(label_path):
        return empty_labels([Issue(
            "label_name", label_path, None,
            "Failed to infer label file name (check image extension is supported); "
            "the image is used as a negative")])
    try:
        with open(label_path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        return empty_labels([Issue(
            "missing_label", label_path, None,
            f"Can't open label file ({e.strerror or e}); the image is used as a negative",
            bad_list=label_path)])
    rows, issues = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        row, problem = _parse_line(fields, classes)
        if problem:
            issues.append(Issue("label", label_path, lineno, f"{problem}; line skipped",
                                bad_label_list=f"{label_path} {problem} (line {lineno})"))
        else:
            rows.append(row)
    if not rows:
        return empty_labels(issues)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    xywh = np.array([r[1:] for r in rows], dtype=F32)
    x, y, w, h = xywh.T
    two = F32(2)
    ltrb = np.stack([x - w / two, x + w / two, y - h / two, y + h / two], axis=1)
    track = np.arange(len(ids), dtype=np.int64) + track_id_base(label_path)
    return Labels(ids, xywh, ltrb.astype(F32), track, issues)


# cached_labels keeps at most this many files' boxes (a few hundred bytes each)
_CACHE_FILES = 1 << 18
_cache: dict = {}


def cached_labels(label_path: str, classes: int) -> Labels:
    """read_labels, read again only when the file's size or modification time changed: the
    loader reads the same few files over and over (every mosaic piece). Callers must not
    modify the arrays."""
    try:
        st = os.stat(label_path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return read_labels(label_path, classes)  # reported as read_labels reports it
    key = (label_path, classes)
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    labels = read_labels(label_path, classes)
    if len(_cache) >= _CACHE_FILES:
        _cache.clear()
    _cache[key] = (stamp, labels)
    return labels


def _parse_line(fields: list[str], classes: int):
    """(class, x, y, w, h) or (None, the reason the line is unusable)."""
    if len(fields) != 5:
        return None, f"Wrong annotation: expected 5 values 'class x y w h', found {len(fields)}"
    try:
        cls = int(fields[0])
    except ValueError:
        return None, f"Wrong annotation: class_id '{fields[0]}' is not an integer"
    coords = []
    for name, text in zip("xywh", fields[1:]):
        try:
            v = float(text)
        except ValueError:
            return None, f"Wrong annotation: {name} '{text}' is not a number"
        if not math.isfinite(v):
            return None, f"Wrong annotation: {name} '{text}' is not a number"
        coords.append(v)
    if not 0 <= cls < classes:
        return None, (f"Wrong annotation: class_id = {cls}. But class_id should be "
                      f"[from 0 to {classes - 1}]")
    # Coordinates are stored as float32 (fscanf's %f); check the stored values.
    bad = [f"{n} = {F32(v):f}" for n, v in zip("xywh", coords) if not 0 < F32(v) <= 1]
    if bad:
        return None, f"Wrong annotation: {', '.join(bad)}: coordinates must be in (0, 1]"
    return (cls, *coords), None
