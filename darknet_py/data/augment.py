"""Upstream: load_image_mat_cv, image_data_augmentation, blend_images_cv, mat_to_image
(src/image_opencv.cpp): the OpenCV build's image side of load_data_detection.

Images stay HxWxC uint8 (as upstream's cv::Mat) through crop, resize, flip, HSV, blur and
noise, with the same OpenCV calls, and become float32 only at the end. The detection loader keeps
OpenCV's BGR order throughout (every step is the same per channel, or takes the order as a flag)
and swaps to RGB while converting to float; `render` can compute the colour steps for the rows
of the image that are used only (a mosaic piece): OpenCV converts row by row, so those rows get
the same pixels (see render for why not columns).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..image import ImageError
from .crand import CRandom
from .truth import count_boxes

F32 = np.float32
# mat_to_image divides in float32: data / 255.0f.
_255 = F32(255)
# Upstream's whole-image blur for blur=1 uses a fixed 17x17 Gaussian.
_BACKGROUND_BLUR_KSIZE = 17
# cv::randn's sigma is limited to this by upstream.
_MAX_NOISE = 127


def read_image(path: str, channels: int) -> np.ndarray:
    """Upstream: load_image_mat_cv: HxWx3 uint8 RGB (or HxWx1 grey for channels < 3).

    cv::imread with IMREAD_COLOR (EXIF orientation applied, 16-bit reduced to 8) and
    the BGR -> RGB swap. Raises ImageError naming the file when it cannot be read.
    """
    img = read_image_bgr(path, channels)
    return img if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image_bgr(path: str, channels: int) -> np.ndarray:
    """read_image without the swap: HxWx3 uint8 in OpenCV's BGR order (or HxWx1 grey)."""
    if not os.path.isfile(path):
        raise ImageError(path, "No such file" if not os.path.exists(path) else "not a regular file")
    flag = cv2.IMREAD_COLOR if channels >= 3 else cv2.IMREAD_GRAYSCALE
    try:
        mat = cv2.imread(path, flag)
    except cv2.error as e:  # OpenCV can throw on some corrupt files
        raise ImageError(path, f"OpenCV error: {e}") from None
    if mat is None or mat.size == 0:
        raise ImageError(path, "cannot decode image data")
    return mat[:, :, None] if mat.ndim == 2 else mat


@dataclass
class Crop:
    """The source window of the augmented image: may extend past the image (jitter)."""

    left: int
    top: int
    width: int
    height: int


@dataclass
class ColorJitter:
    """Hue shift (fraction of the hue circle), saturation and exposure factors."""

    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0

    def is_identity(self) -> bool:
        return F32(self.saturation) == 1 and F32(self.exposure) == 1 and F32(self.hue) == 0


def crop_and_resize(img: np.ndarray, crop: Crop, w: int, h: int) -> np.ndarray:
    """The crop + cv::resize(INTER_LINEAR) of image_data_augmentation.

    Parts of the window outside the image are filled with the image's mean colour.
    """
    ih, iw, c = img.shape
    x0, y0 = max(crop.left, 0), max(crop.top, 0)
    x1, y1 = min(crop.left + crop.width, iw), min(crop.top + crop.height, ih)
    if x0 >= x1 or y0 >= y1:  # the window misses the image: all fill
        canvas = np.empty((crop.height, crop.width, c), dtype=np.uint8)
        canvas[...] = _mean_colour(img)
    elif (x0 - crop.left, y0 - crop.top, crop.width, crop.height) == (0, 0, x1 - x0, y1 - y0):
        canvas = img[y0:y1, x0:x1]  # wholly inside: a view, no copy
    else:
        canvas = cv2.copyMakeBorder(img[y0:y1, x0:x1], y0 - crop.top, crop.top + crop.height - y1,
                                    x0 - crop.left, crop.left + crop.width - x1, cv2.BORDER_CONSTANT,
                                    value=[int(v) for v in _mean_colour(img)])
    sized = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
    return sized.reshape(h, w, c)


def _mean_colour(img: np.ndarray) -> np.ndarray:
    """cv::mean(img) as the uint8 that Mat::setTo stores (rounded, saturated)."""
    return np.rint(np.asarray(cv2.mean(img)[:img.shape[2]])).clip(0, 255).astype(np.uint8)


def distort_color(img: np.ndarray, jitter: ColorJitter, bgr: bool = False) -> np.ndarray:
    """image_data_augmentation's HSV step on uint8 (OpenCV's 8-bit HSV: H in [0, 180)).

    S and V are scaled with saturation (Mat *= double rounds to nearest), H is shifted
    by 179 * hue with cv::add (saturating; OpenCV's HSV->RGB wraps hues >= 180).
    Grey images only get the exposure factor. bgr: the image is in BGR order (OpenCV's
    conversions take the order as a flag: the same pixels, swapped).
    """
    if jitter.is_identity():
        return img
    if img.shape[2] < 3:
        return _scale_u8(img, jitter.exposure)
    to_hsv, from_hsv = (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR) if bgr else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
    hue, sat, val = cv2.split(cv2.cvtColor(img, to_hsv))
    hue = cv2.add(hue, (float(F32(179) * F32(jitter.hue)), 0, 0, 0))
    sat = _scale_u8(sat, jitter.saturation)
    val = _scale_u8(val, jitter.exposure)
    return cv2.cvtColor(cv2.merge([hue.reshape(sat.shape), sat, val]), from_hsv)


def _scale_u8(a: np.ndarray, factor: float) -> np.ndarray:
    """cv::Mat::convertTo(-1, factor) on uint8: float32 product, round half to even,
    saturate. convertScaleAbs does the same arithmetic (the abs is a no-op here)."""
    if factor < 0:
        return np.zeros_like(a)
    return cv2.convertScaleAbs(a, alpha=float(factor)).reshape(a.shape)


def apply_blur(img: np.ndarray, blur: int, truth: np.ndarray) -> np.ndarray:
    """image_data_augmentation's blur: blur=1 blurs the background only (17x17 Gaussian,
    the truth boxes keep their sharp pixels); blur>1 blurs everything with kernel
    (blur/2)*2+1."""
    if not blur:
        return img
    ksize = _BACKGROUND_BLUR_KSIZE if blur == 1 else (blur // 2) * 2 + 1
    out = cv2.GaussianBlur(img, (ksize, ksize), 0).reshape(img.shape)
    if blur == 1:
        rows, cols = img.shape[:2]
        for x, y, w, h in truth[:count_boxes(truth), :4]:
            # int casts of upstream's double (left/top) and float (width/height) maths
            left = int((float(x) - float(w) / 2.0) * cols)
            top = int((float(y) - float(h) / 2.0) * rows)
            x0, y0 = max(left, 0), max(top, 0)
            x1, y1 = min(left + int(w * F32(cols)), cols), min(top + int(h * F32(rows)), rows)
            if x0 < x1 and y0 < y1:
                out[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    return out


def add_gaussian_noise(img: np.ndarray, sigma: int, rng: CRandom, bgr: bool = False) -> np.ndarray:
    """image_data_augmentation's noise: cv::randn into a uint8 Mat (so negative samples
    saturate to 0: the noise only brightens), then a saturating add. The draws are laid out
    as on an RGB image (bgr: the image is BGR, so they are swapped to match)."""
    if not sigma:
        return img
    sigma = min(max(sigma, 0), _MAX_NOISE)
    noise = np.clip(np.rint(rng.normal(sigma, img.shape)), 0, 255).astype(np.uint8)
    if bgr and img.shape[2] == 3:
        noise = np.ascontiguousarray(noise[:, :, ::-1])
    return cv2.add(img, noise).reshape(img.shape)


def to_planar(img: np.ndarray) -> np.ndarray:
    """Upstream: mat_to_image: HxWxC uint8 -> CxHxW float32 = value / 255.0f."""
    planes = np.ascontiguousarray(img.transpose(2, 0, 1))  # transpose the bytes, not the floats
    return np.divide(planes, _255, dtype=F32)


# mat_to_image's value / 255.0f for each byte value, looked up (cv2.LUT, or on a GPU by the
# trainer) instead of divided
BYTE_TO_FLOAT = np.arange(256, dtype=F32) / _255
_TO_FLOAT = BYTE_TO_FLOAT.reshape(1, 256)


def bytes_to_float(u8: np.ndarray) -> np.ndarray:
    """BYTE_TO_FLOAT of every byte of a C-contiguous uint8 array (one cv2.LUT call)."""
    flat = u8.reshape(-1, u8.shape[-1]) if u8.ndim > 1 else u8.reshape(1, -1)
    return cv2.LUT(flat, _TO_FLOAT).reshape(u8.shape)


def to_float_into(out: np.ndarray, img: np.ndarray, bgr: bool) -> None:
    """mat_to_image into `out` (HxWxC float32): uint8 / 255.0f, or a float image copied; bgr:
    swapped to RGB on the way. A uint8 `out` takes the bytes as they are (the conversion is
    then the trainer's, with BYTE_TO_FLOAT)."""
    swap = bgr and img.shape[2] == 3
    if out.dtype == np.uint8 or img.dtype != np.uint8:  # bytes kept, or a blended float image
        out[...] = img[:, :, ::-1] if swap else img
        return
    if swap:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    dst = out.reshape(img.shape) if out.flags.c_contiguous else None
    got = cv2.LUT(img, _TO_FLOAT, dst=dst)
    if dst is None or not np.shares_memory(got, out):  # OpenCV wrote elsewhere
        out[...] = got.reshape(out.shape)


def render(img: np.ndarray, w: int, h: int, crop: Crop, flip: bool, color: ColorJitter, gaussian_noise: int,
           blur: int, truth: np.ndarray, rng: CRandom, region: tuple | None = None, bgr: bool = False) -> np.ndarray:
    """Upstream: image_data_augmentation: crop, resize to w x h, flip, HSV, blur, noise, as HxWxC
    uint8 in the image's channel order. region (y0, y1, x0, x1): only that part is returned,
    and without blur or noise only its rows get the colour step. OpenCV converts an image row
    by row (its HSV -> RGB arithmetic depends on the column: 64-pixel blocks from the row's
    start, vector or scalar), so whole rows give the same pixels and cut columns would not;
    blur needs the neighbours and noise draws for the whole image, so with either the whole
    image is made and cut."""
    sized = crop_and_resize(img, crop, w, h)
    if flip:
        sized = cv2.flip(sized, 1).reshape(sized.shape)
    rows_first = region is not None and not blur and not gaussian_noise
    if rows_first:
        sized = sized[region[0]:region[1]]
    sized = distort_color(np.ascontiguousarray(sized), color, bgr)
    sized = apply_blur(sized, blur, truth)
    sized = add_gaussian_noise(sized, gaussian_noise, rng, bgr)
    if region is not None:
        y0, y1, x0, x1 = region
        sized = sized[:, x0:x1] if rows_first else sized[y0:y1, x0:x1]
    return sized


def blend_images(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Upstream: blend_images_cv(new, 0.5, old, 0.5): cv::addWeighted in float32."""
    half = F32(0.5)
    return new * half + old * half

