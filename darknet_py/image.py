"""Upstream: load_image_color, resize_image, letterbox_image (src/image.c); the classifier's
resize_min, crop_image, flip_image, rotate_crop_image, rgb_to_hsv, hsv_to_rgb, distort_image

Images are numpy float32 arrays of shape (C, H, W), RGB, values in [0, 1]: the same
planar layout as upstream's `image` struct, so a network input is `im.ravel()`.

Also here: `save_image` (upstream's uint8 conversion, ".jpg" appended to a bare name),
and the `detector test` output: `print_detections` (the text lines of
draw_detections_v3) and `draw_detections` (its boxes, with the label drawn by OpenCV as
upstream's OpenCV build does in draw_detections_cv_v3).

Every resize uses float32 arithmetic in upstream's order of operations, so the results
match upstream bit for bit up to the compiler's rounding choices.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Mapping, Sequence, TextIO

import cv2
import numpy as np

F32 = np.float32

# Upstream's colour ramp used by get_color (src/image.c), indexed [stop][channel].
UPSTREAM_COLORS = np.array(
    [[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=F32
)
# draw_detections_v3: box line width is int(im.h * .002), at least 1.
LINE_WIDTH_FACTOR = 0.002
# Upstream's `save_image(im, "predictions")` writes JPEG at quality 80.
JPEG_QUALITY = 80
_WRITABLE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_FONT = cv2.FONT_HERSHEY_COMPLEX_SMALL
# uint8 -> float exactly as upstream: (float)v / 255. is a double division, then float.
_U8_TO_F32 = (np.arange(256, dtype=np.float64) / 255.0).astype(F32)


class ImageError(OSError):
    """An image file that is missing, unreadable or cannot be decoded / written."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(message)
        self.path, self.message = os.fspath(path), message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def __reduce__(self):  # picklable, so data-loader worker processes can re-raise it
        return type(self), (self.path, self.message)


# ---------------------------------------------------------------------------- loading


def load_image_color(path: str | os.PathLike, w: int = 0, h: int = 0) -> np.ndarray:
    """Decode `path` to a (3, H, W) float32 RGB image; resize to w x h if both are nonzero.

    Upstream (built without OpenCV) decodes with stb_image forcing 3 channels: grey is
    replicated, alpha is dropped (not composited), 16-bit samples keep their high byte,
    and EXIF orientation is ignored. IMREAD_UNCHANGED gives us the raw samples so we can
    apply the same rules. Upstream prints an error and returns a blank 10x10 image for a
    bad file; we raise ImageError instead.
    """
    rgb = _to_rgb8(_decode(path), path)
    im = np.ascontiguousarray(_U8_TO_F32[rgb].transpose(2, 0, 1))
    if w and h and (w, h) != (im.shape[2], im.shape[1]):
        im = resize_image(im, w, h)
    return im


def _decode(path: str | os.PathLike) -> np.ndarray:
    # np.fromfile + imdecode (not imread) so that missing files are told apart from
    # undecodable ones and non-ASCII paths work.
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(path, e.strerror or str(e)) from e
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if arr is None:
        raise ImageError(path, "cannot decode image data")
    return arr


def _to_rgb8(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """cv2's raw decode (grey, grey+alpha, BGR or BGRA; 8 or 16 bit) -> HxWx3 uint8 RGB."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)  # stb's 16 -> 8 bit conversion keeps the high byte
    elif arr.dtype != np.uint8:
        raise ImageError(path, f"unsupported sample type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] <= 2:  # grey or grey+alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped


# --------------------------------------------------------------------------- resizing


def resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Upstream's two-pass bilinear resize: columns first (into a w x im.h image), then rows.

    Sample positions are `i * (src - 1) / (dst - 1)` in float32, so both corners map
    exactly onto the source corners. The last column is always copied from the last
    source column; the last row gets only the `(1 - dy)` term (upstream skips the second
    tap there). When float32 rounding puts that last row's position just below the last
    source row, upstream's last row comes out nearly black; we reproduce that too.
    """
    im = np.asarray(im, dtype=F32)
    _, ih, iw = im.shape
    if (iw, ih) == (w, h):
        return im.copy()
    part = _interpolate(im, 2, _column_taps(iw, w))
    return _interpolate(part, 1, _row_taps(ih, h))


def _positions(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Upstream's sample positions for destination 0..n_dst-1: integer part and fraction.
    All in float32 in upstream's order: scale = (src-1)/(dst-1), pos = i * scale."""
    scale = F32(n_src - 1) / F32(n_dst - 1)
    pos = np.arange(n_dst, dtype=F32) * scale
    i0 = pos.astype(np.intp)  # C's (int) cast truncates; pos >= 0
    return i0, pos - i0.astype(F32)


def _column_taps(n_src: int, n_dst: int):
    """(i0, i1, w0, w1) per destination column: value = w0*src[i0] + w1*src[i1]."""
    i0 = np.full(n_dst, n_src - 1, dtype=np.intp)
    w0, w1 = np.ones(n_dst, dtype=F32), np.zeros(n_dst, dtype=F32)
    # Upstream copies the last source column into the last column, and into every
    # column when either width is 1 (that also avoids its 0/0 scale).
    if n_dst > 1 and n_src > 1:
        i0[:-1], d = (a[:-1] for a in _positions(n_src, n_dst))
        w0[:-1], w1[:-1] = F32(1) - d, d
    return i0, np.minimum(i0 + 1, n_src - 1), w0, w1


def _row_taps(n_src: int, n_dst: int):
    """(i0, i1, w0, w1) per destination row, as _column_taps."""
    i0 = np.zeros(n_dst, dtype=np.intp)
    w0, w1 = np.ones(n_dst, dtype=F32), np.zeros(n_dst, dtype=F32)
    # A one-row source has scale 0: every row copies it. A one-row destination makes
    # upstream compute 0 * (src-1)/0 = NaN (undefined behaviour); we take the first row,
    # which is what its formula gives for any finite scale.
    if n_dst > 1 and n_src > 1:
        i0, d = _positions(n_src, n_dst)
        # The last row keeps its (1 - dy) weight but upstream skips its second tap.
        w0, w1 = F32(1) - d, np.append(d[:-1], F32(0))
    # Where the second tap would run off the end its weight is 0 (upstream adds 0 times
    # whatever follows in memory): clamping the index gives the same value.
    return i0, np.minimum(i0 + 1, n_src - 1), w0, w1


def _interpolate(a: np.ndarray, axis: int, taps) -> np.ndarray:
    """w0*a[i0] + w1*a[i1] along `axis`, rounded to float32 after each product and the
    sum as upstream's set_pixel / add_pixel do."""
    i0, i1, w0, w1 = taps
    shape = [1] * a.ndim
    shape[axis] = -1
    out = np.take(a, i0, axis=axis)
    out *= w0.reshape(shape)
    second = np.take(a, i1, axis=axis)
    second *= w1.reshape(shape)
    out += second
    return out


def letterbox_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize keeping the aspect ratio and centre it on a w x h canvas filled with 0.5."""
    im = np.asarray(im, dtype=F32)
    c, ih, iw = im.shape
    # Upstream compares the two ratios in float32, then sizes with integer division.
    if F32(w) / F32(iw) < F32(h) / F32(ih):
        new_w, new_h = w, (ih * w) // iw
    else:
        new_w, new_h = (iw * h) // ih, h
    boxed = np.full((c, h, w), 0.5, dtype=F32)
    embed_image(resize_image(im, new_w, new_h), boxed, _c_div(w - new_w, 2), _c_div(h - new_h, 2))
    return boxed


def embed_image(source: np.ndarray, dest: np.ndarray, dx: int, dy: int) -> None:
    """Copy `source` into `dest` (in place) with its top-left at (dx, dy); pixels that
    fall outside `dest` are dropped, as upstream's set_pixel ignores them."""
    _, sh, sw = source.shape
    _, dh, dw = dest.shape
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + sw, dw), min(dy + sh, dh)
    if x0 < x1 and y0 < y1:
        dest[:, y0:y1, x0:x1] = source[:, y0 - dy : y1 - dy, x0 - dx : x1 - dx]


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# -------------------------------------------------------- the classifier's image operations


def resize_min(im: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the shorter side is `size` (the other one by integer division); the
    image itself when nothing changes."""
    _, h, w = im.shape
    if w < h:
        h, w = (h * size) // w, size
    else:
        w, h = (w * size) // h, size
    return im if (w, h) == (im.shape[2], im.shape[1]) else resize_image(im, w, h)


def crop_image(im: np.ndarray, dx: int, dy: int, w: int, h: int) -> np.ndarray:
    """The w x h window at (dx, dy); positions outside the image repeat its edge pixels."""
    _, ih, iw = im.shape
    rows = np.clip(np.arange(h) + dy, 0, ih - 1)
    cols = np.clip(np.arange(w) + dx, 0, iw - 1)
    return np.ascontiguousarray(im[:, rows[:, None], cols[None, :]], dtype=F32)


def flip_image(im: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.ascontiguousarray(im[:, :, ::-1])


def rotate_crop_image(im: np.ndarray, rad: float, s: float, w: int, h: int, dx: float, dy: float,
                      aspect: float) -> np.ndarray:
    """A w x h view of `im` rotated by `rad` about its centre, scaled by s, stretched by
    aspect and shifted by (dx, dy); bilinear, 0 outside the image.

    Upstream's mixed precision: the source position is a double expression (cos, the
    half-size constants) with float terms dx/s*aspect and dy/s, stored as float."""
    c, ih, iw = im.shape
    s, aspect, dx, dy, rad = F32(s), F32(aspect), F32(dx), F32(dy), F32(rad)
    cos, sin = math.cos(float(rad)), math.sin(float(rad))
    u = (np.arange(w, dtype=np.float64) - w / 2.0) / float(s) * float(aspect) + float(dx / s * aspect)
    v = (np.arange(h, dtype=np.float64) - h / 2.0) / float(s) + float(dy / s)
    rx = (cos * u[None, :] - sin * v[:, None] + iw / 2.0).astype(F32)  # (h, w)
    ry = (sin * u[None, :] + cos * v[:, None] + ih / 2.0).astype(F32)
    return bilinear_interpolate(im, rx, ry)


def bilinear_interpolate(im: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Every channel of `im` at the float positions (x, y) (same shape), in float32 as
    upstream: (1-dy)*(1-dx)*p00 + dy*(1-dx)*p01 + (1-dy)*dx*p10 + dy*dx*p11, 0 outside."""
    c, ih, iw = im.shape
    ix, iy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - ix.astype(F32), y - iy.astype(F32)
    one = F32(1)

    def pixel(xx, yy):
        inside = (xx >= 0) & (xx < iw) & (yy >= 0) & (yy < ih)
        vals = im[:, np.clip(yy, 0, ih - 1), np.clip(xx, 0, iw - 1)]
        return np.where(inside, vals, F32(0))

    out = (one - fy) * (one - fx) * pixel(ix, iy)
    out = out + fy * (one - fx) * pixel(ix, iy + 1)
    out = out + (one - fy) * fx * pixel(ix + 1, iy)
    out = out + fy * fx * pixel(ix + 1, iy + 1)
    return out.astype(F32)


def rgb_to_hsv(im: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB -> H, S, V in [0, 1], float32 as upstream (a grey pixel's hue is
    0/0 = NaN there too; its saturation is 0, so the way back ignores it)."""
    r, g, b = im.astype(F32)
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    delta = mx - mn
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(mx == 0, F32(0), delta / mx)
        hue = np.where(r == mx, (g - b) / delta,
                       np.where(g == mx, F32(2) + (b - r) / delta, F32(4) + (r - g) / delta))
    hue = np.where(hue < 0, hue + F32(6), hue)
    hue = (hue.astype(np.float64) / 6.0).astype(F32)  # h/6.: a double division
    hue = np.where(mx == 0, F32(0), hue)
    return np.stack([hue, sat, mx]).astype(F32)


def hsv_to_rgb(im: np.ndarray) -> np.ndarray:
    """The inverse of rgb_to_hsv, float32 as upstream (sector floor(6h), 6 counts as 5)."""
    h6 = F32(6) * im[0]
    s, v = im[1], im[2]
    with np.errstate(invalid="ignore"):
        index = np.floor(np.nan_to_num(h6)).astype(np.int64)
    f = h6 - index.astype(F32)
    one = F32(1)
    p, q, t = v * (one - s), v * (one - s * f), v * (one - s * (one - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v)]
    r, g, b = (np.select([index == k for k in range(5)], [c[i] for c in choices], default=(v, p, q)[i])
               for i in range(3))
    grey = s == 0
    return np.stack([np.where(grey, v, r), np.where(grey, v, g), np.where(grey, v, b)]).astype(F32)


def distort_image(im: np.ndarray, hue: float, sat: float, val: float) -> np.ndarray:
    """Shift the hue by `hue` (wrapping), scale saturation by `sat` and value by `val`
    (grey images: only the value), clamp to [0, 1]. Upstream converts even when nothing
    changes, so its round trip through HSV moves values by float rounding; so does this."""
    im = np.asarray(im, dtype=F32)
    if im.shape[0] >= 3:
        hsv = rgb_to_hsv(im)
        hsv[1] *= F32(sat)
        hsv[2] *= F32(val)
        h = hsv[0] + F32(hue)
        h = np.where(h > 1, h - F32(1), h)
        hsv[0] = np.where(h < 0, h + F32(1), h)
        out = hsv_to_rgb(hsv)
    else:
        out = im.copy()
        out[0] *= F32(val)
    return np.clip(out, F32(0), F32(1))


# ---------------------------------------------------------------------------- saving


def to_bgr_uint8(im: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W, C) uint8 BGR for OpenCV ((H, W) for one channel).

    Upstream converts with `(unsigned char)(255 * val)`: truncation, not rounding. Values
    outside [0, 1] are undefined in C; we clamp them first.
    """
    im = np.asarray(im, dtype=F32)
    u8 = (F32(255) * np.clip(im, 0, 1)).astype(np.uint8).transpose(1, 2, 0)
    if u8.shape[2] == 1:
        return np.ascontiguousarray(u8[:, :, 0])
    return np.ascontiguousarray(u8[:, :, ::-1])


def save_image(im: np.ndarray, path: str | os.PathLike) -> str:
    """Write `im`; a path without a known image extension gets ".jpg" appended, as
    upstream's save_image(im, "predictions") writes predictions.jpg. Returns the path."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _WRITABLE_EXTS:
        path, ext = path + ".jpg", ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext in (".jpg", ".jpeg") else []
    pixels = to_bgr_uint8(im)
    if pixels.ndim == 2 and params:  # upstream's stb JPEG writer stores a grey image as 3 components
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    ok, buf = cv2.imencode(ext, pixels, params)
    if not ok:
        raise ImageError(path, "cannot encode image for this extension")
    try:
        buf.tofile(path)
    except OSError as e:
        raise ImageError(path, e.strerror or str(e)) from e
    return path


# ------------------------------------------------------------------------- detections
#
# A detection is a dict {x, y, w, h (relative centre and size), objectness,
# probs: {class_index: prob}}. Upstream stores these as float32 and compares them with a
# float32 thresh, so every number is narrowed to float32 before it is compared or printed.


def _prob(det: Mapping, j: int) -> np.float32:
    return F32(det["probs"].get(j, 0.0))


def _classes_above(det: Mapping, n_classes: int, thresh: float) -> list[int]:
    t = F32(thresh)
    return sorted(j for j, p in det["probs"].items() if 0 <= j < n_classes and F32(p) > t)


def best_class(det: Mapping, names: Sequence[str], thresh: float) -> int:
    """Upstream's get_actual_detections choice: the most probable class strictly above
    thresh (the first one on ties), skipping classes named "dont_show..."; -1 if none."""
    best, best_p = -1, F32(thresh)
    for j in _classes_above(det, len(names), thresh):
        if _prob(det, j) > best_p and not names[j].startswith("dont_show"):
            best, best_p = j, _prob(det, j)
    return best


def select_detections(dets: Sequence[Mapping], names: Sequence[str], thresh: float):
    """[(det, best_class)] for the detections that have a class to show."""
    chosen = ((d, best_class(d, names, thresh)) for d in dets)
    return [(d, b) for d, b in chosen if b >= 0]


def _c_round(v: float) -> float:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    a = abs(v)
    r = math.floor(a)
    return math.copysign(r + 1.0 if a - r >= 0.5 else r, v)


def _pct(p: np.float32) -> str:
    return f"{float(p * F32(100)):.0f}%"


def detection_lines(dets, names, thresh, im_w, im_h, ext_output) -> list[str]:
    """The lines upstream's draw_detections_v3 prints, without their newlines.

    Detections are ordered by their left edge (upstream qsorts by x - w/2; we sort
    stably where its qsort leaves ties unspecified). Each prints its best class first,
    then every other class above thresh in index order, all with the same box.
    """
    def left_edge(item):
        d = item[0]
        return F32(d["x"]) - F32(d["w"]) / F32(2)

    lines = []
    for det, best in sorted(select_detections(dets, names, thresh), key=left_edge):
        suffix = _box_suffix(det, im_w, im_h) if ext_output else ""
        others = [j for j in _classes_above(det, len(names), thresh) if j != best]
        for j in [best] + others:
            lines.append(f"{names[j]}: {_pct(_prob(det, j))}{suffix}")
    return lines


def _box_suffix(det: Mapping, im_w: int, im_h: int) -> str:
    x, y, w, h = (F32(det[k]) for k in "xywh")
    left = _c_round(float((x - w / F32(2)) * F32(im_w)))
    top = _c_round(float((y - h / F32(2)) * F32(im_h)))
    width = _c_round(float(w * F32(im_w)))
    height = _c_round(float(h * F32(im_h)))
    return (f"\t(left_x: {left:4.0f}   top_y: {top:4.0f}   "
            f"width: {width:4.0f}   height: {height:4.0f})")


def print_detections(dets, names, thresh, im_w, im_h, ext_output, file: TextIO = sys.stdout):
    """Print upstream's `NAME: NN%` lines (with the box when ext_output) for `dets`."""
    for line in detection_lines(dets, names, thresh, im_w, im_h, ext_output):
        print(line, file=file)


def get_color(c: int, x: int, max_: int, colors: np.ndarray = UPSTREAM_COLORS) -> float:
    """Upstream's get_color: channel c of the ramp through `colors` at x / max."""
    ratio = F32(x) / F32(max_) * F32(5)
    i, j = math.floor(ratio), math.ceil(ratio)
    ratio -= F32(i)
    return float((F32(1) - ratio) * colors[i][c] + ratio * colors[j][c])


def class_color(class_id: int, n_classes: int) -> tuple[float, float, float]:
    """The (r, g, b) colour upstream draws a class with."""
    offset = class_id * 123457 % n_classes
    return get_color(2, offset, n_classes), get_color(1, offset, n_classes), get_color(0, offset, n_classes)


def label_text(det: Mapping, best: int, names: Sequence[str], thresh: float) -> str:
    """draw_detections_v3's label: "best: 0.87" then ", other" for each other class
    above thresh (those are not filtered by "dont_show", as upstream)."""
    others = [names[j] for j in _classes_above(det, len(names), thresh) if j != best]
    return ", ".join([f"{names[best]}: {float(_prob(det, best)):.2f}"] + others)


def box_corners(det: Mapping, im_w: int, im_h: int) -> tuple[int, int, int, int]:
    """(left, top, right, bot) in pixels: truncated toward zero, as upstream's int cast,
    with only the outer sides clamped (draw_box clamps the rest)."""
    x, y, w, h = (float(F32(det[k])) for k in "xywh")
    left, right = int((x - w / 2.0) * im_w), int((x + w / 2.0) * im_w)
    top, bot = int((y - h / 2.0) * im_h), int((y + h / 2.0) * im_h)
    return max(left, 0), max(top, 0), min(right, im_w - 1), min(bot, im_h - 1)


def draw_detections(im, dets, names, thresh, colors=None) -> np.ndarray:
    """Return a copy of `im` with upstream's predictions.jpg boxes and labels drawn.

    `colors` optionally maps class index -> (r, g, b) in [0, 1], replacing upstream's
    colour ramp. Boxes are drawn weakest first so the most confident ends on top.
    """
    hwc = np.ascontiguousarray(np.asarray(im, dtype=F32).transpose(1, 2, 0))
    selected = select_detections(dets, names, thresh)
    selected.sort(key=lambda item: _prob(item[0], item[1]))
    for det, best in selected:
        rgb = colors[best] if colors is not None else class_color(best, len(names))
        _draw_one(hwc, det, best, names, thresh, rgb)
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def _draw_one(hwc: np.ndarray, det, best, names, thresh, rgb) -> None:
    im_h, im_w, channels = hwc.shape
    width = max(1, int(im_h * LINE_WIDTH_FACTOR))
    left, top, right, bot = box_corners(det, im_w, im_h)
    if channels == 1:
        # Upstream's black-and-white branch: the shade depends on the width's parity.
        colour = np.array([0.8 if width % 2 else 0.2], dtype=F32)
    else:
        colour = np.asarray(rgb, dtype=F32)[:channels]
    for i in range(width):
        _draw_box(hwc, left + i, top + i, right - i, bot - i, colour)
    _draw_label(hwc, label_text(det, best, names, thresh), left, top, right, width, colour)


def _draw_box(hwc: np.ndarray, x1: int, y1: int, x2: int, y2: int, colour) -> None:
    """One-pixel rectangle outline, corners clamped into the image (upstream's draw_box)."""
    im_h, im_w = hwc.shape[:2]
    x1, x2 = (min(max(v, 0), im_w - 1) for v in (x1, x2))
    y1, y2 = (min(max(v, 0), im_h - 1) for v in (y1, y2))
    hwc[[y1, y2], x1 : x2 + 1] = colour
    hwc[y1 : y2 + 1, [x1, x2]] = colour


def _draw_label(hwc, text, left, top, right, width, colour) -> None:
    """Filled label box above the detection with black text, placed as upstream's
    OpenCV build does (draw_detections_cv_v3)."""
    im_h, im_w = hwc.shape[:2]
    font_scale = float(F32(im_h) / F32(1000))
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, font_scale, 1)
    bg1 = (left, int(top - (3 + 18 * font_scale)))
    bg2 = (left + text_w if right - left < text_w else right, top)
    fill = tuple(float(v) for v in colour)
    cv2.rectangle(hwc, bg1, bg2, fill, width, cv2.LINE_8)
    cv2.rectangle(hwc, bg1, bg2, fill, cv2.FILLED, cv2.LINE_8)
    # Anti-aliasing needs an 8-bit target: render the text's coverage into a mask over
    # the band of rows it can touch, then darken the image by it (the text is black).
    thickness = int(2 * font_scale)  # upstream passes 2 * font_size to an int parameter
    origin_y = top - 4
    y0 = max(origin_y - text_h - thickness - 2, 0)
    y1 = min(origin_y + baseline + thickness + 2, im_h)
    if y0 >= y1:
        return
    coverage = np.zeros((y1 - y0, im_w), dtype=np.uint8)
    cv2.putText(coverage, text, (left, origin_y - y0), _FONT, font_scale, 255, thickness, cv2.LINE_AA)
    hwc[y0:y1] *= (F32(1) - _U8_TO_F32[coverage])[:, :, None]
