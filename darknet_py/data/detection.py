"""Upstream: load_data_detection (src/data.c, the #ifdef OPENCV version) and the argument
checks of load_thread.

One call of `load_sample` is upstream's per-image body of load_data_detection: draw the
augmentation, pick the crop window (jitter, `resize`, letter_box, mosaic corners), build
the truth rows, augment the image, then combine with the other mixup / mosaic images.
`load_batch` stacks n samples. Differences from upstream are deliberate and listed in
the DetectionLoader docstring.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..image import ImageError, to_bgr_uint8
from .augment import ColorJitter, Crop, blend_images, read_image_bgr, render, to_float_into
from .crand import CRandom, F32, c_div, c_int, precalc_random
from .labels import Issue, cached_labels, image_to_label_path
from .truth import blend_truth, blend_truth_mosaic, count_boxes, fill_truth_detection

# mixup codes (upstream's net->mixup): 1 mixup, 2 cutmix, 3 mosaic, 4 mosaic + cutmix.
MIXUP, CUTMIX, MOSAIC, MOSAIC_CUTMIX = 1, 2, 3, 4
CUTMIX_MESSAGE = "\n cutmix=1 - isn't supported for Detector (use cutmix=1 only for Classifier) \n"
LETTERBOX_MOSAIC_MESSAGE = ("Combination: letter_box=1 & mosaic=1 - isn't supported, "
                            "use only 1 of these parameters")
SHOW_IMGS_MESSAGE = ("\nYou use flag -show_imgs, so will be saved aug_...jpg images. "
                     "Click on window and press ESC button \n")
# Mosaic cut points stay in the middle 60% of the image.
_MOSAIC_MIN_OFFSET = F32(0.2)
# The box colour of aug_*.jpg previews: upstream draws (150, 100, 50) into a [0, 1]
# image and its (unsigned char)(255 * v) conversion wraps those modulo 256.
PREVIEW_BOX_RGB = tuple(int(F32(255) * F32(v)) % 256 for v in (150, 100, 50))


class DataError(RuntimeError):
    """Training data that cannot be used at all (e.g. no image in the list is readable)."""


@dataclass(frozen=True)
class AugmentOptions:
    """load_data_detection's arguments (load_args), already normalised by `normalize`."""

    classes: int
    channels: int = 3
    max_boxes: int = 200
    truth_size: int = 6
    jitter: float = 0.0
    resize: float = 1.0
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: int = 0
    blur: int = 0
    gaussian_noise: int = 0
    mixup: int = 0
    letter_box: int = 0
    mosaic_bound: int = 0
    # track=1 (video sequences; see load_batch): augment_speed, the timelines per mini-batch
    # (upstream's args.mini_batch = batch/subdivisions) and the loading threads per batch
    track: int = 0
    augment_speed: int = 2
    track_mini_batch: int = 1
    track_chunks: int = 1


def normalize(opt: AugmentOptions, stream=None) -> AugmentOptions:
    """The fix-ups upstream applies before loading.

    load_thread: exposure / saturation 0 mean 1. Cutmix is refused for detectors with
    upstream's message: cutmix alone becomes no mixing, mosaic+cutmix becomes mosaic.
    letter_box with mosaic is an error, as upstream.
    """
    changes = {"channels": opt.channels or 3}
    if opt.exposure == 0:
        changes["exposure"] = 1.0
    if opt.saturation == 0:
        changes["saturation"] = 1.0
    mixup = opt.mixup
    if mixup in (CUTMIX, MOSAIC_CUTMIX):
        print(CUTMIX_MESSAGE, file=stream or sys.stdout)
        mixup = 0 if mixup == CUTMIX else MOSAIC
    if mixup not in (0, MIXUP, MOSAIC):
        raise ValueError(f"mixup={opt.mixup}: expected 0 (none), 1 (mixup), 2 (cutmix), 3 (mosaic) or 4")
    if mixup == MOSAIC and opt.letter_box:
        raise ValueError(LETTERBOX_MOSAIC_MESSAGE)
    changes["mixup"] = mixup
    out = replace(opt, **changes)
    if out.channels not in (1, 3):
        raise ValueError(f"channels={out.channels}: detector training loads 1 (grey) or 3 (RGB) channels")
    if out.truth_size < 5:
        raise ValueError(f"truth_size={out.truth_size}: must be >= 5 (x, y, w, h, class)")
    if out.max_boxes < 1 or out.classes < 1:
        raise ValueError(f"max_boxes={out.max_boxes}, classes={out.classes}: both must be >= 1")
    return out


@dataclass
class Draws:
    """The per-image random choices of load_data_detection."""

    resize_r1: np.float32
    resize_r2: np.float32
    r: tuple  # r1..r4: left, right, top, bottom jitter
    flip: int
    color: ColorJitter
    blur: int
    gaussian_noise: int


def draw_augmentation(rng: CRandom, opt: AugmentOptions) -> Draws:
    """The random draws of load_data_detection, in upstream's order."""
    resize_r1, resize_r2 = rng.float(), rng.float()
    r = tuple(rng.float() for _ in range(4))
    flip = rng.gen() % 2 if opt.flip else 0
    rng.float()  # r_scale: drawn but unused upstream
    color = ColorJitter(rng.uniform_strong(-opt.hue, opt.hue), rng.scale(opt.saturation),
                        rng.scale(opt.exposure))
    blur = 0
    if opt.blur:
        # 0: none, 1: blur the background, 2: blur the whole image with `blur`
        blur = (0, 1, opt.blur)[rng.int(0, 2)]
    noise = opt.gaussian_noise if opt.gaussian_noise and rng.int(0, 1) == 1 else 0
    return Draws(resize_r1, resize_r2, r, flip, color, blur, noise)


def jitter_offsets(ow: int, oh: int, opt: AugmentOptions, d: Draws) -> list[int]:
    """[pleft, pright, ptop, pbot]: how far each side of the crop moves inwards.

    jitter moves each side by up to jitter * size; `resize` (> 1: zoom both ways, < 1:
    zoom out only) adds a common move to opposite sides, in upstream's float32/int maths.
    """
    dw, dh = c_int(ow * F32(opt.jitter)), c_int(oh * F32(opt.jitter))
    resize = F32(opt.resize)
    down = F32(1) / resize if resize > 1 else resize
    up = F32(1) / resize if resize < 1 else resize
    one, two = F32(1), F32(2)
    min_rdw, min_rdh = (c_int(F32(s) * (one - one / down) / two) for s in (ow, oh))
    max_rdw, max_rdh = (c_int(F32(s) * (one - one / up) / two) for s in (ow, oh))
    r1, r2, r3, r4 = d.r
    off = [c_int(precalc_random(-dw, dw, r1)), c_int(precalc_random(-dw, dw, r2)),
           c_int(precalc_random(-dh, dh, r3)), c_int(precalc_random(-dh, dh, r4))]
    hi_w, hi_h = (0, 0) if resize < 1 else (max_rdw, max_rdh)
    extra = [precalc_random(min_rdw, hi_w, d.resize_r1), precalc_random(min_rdw, hi_w, d.resize_r2),
             precalc_random(min_rdh, hi_h, d.resize_r1), precalc_random(min_rdh, hi_h, d.resize_r2)]
    # C's `int += float`: the sum is taken in float, then truncated
    return [c_int(F32(p) + e) for p, e in zip(off, extra)]


def letterbox_offsets(off: list[int], ow: int, oh: int, w: int, h: int) -> list[int]:
    """letter_box: widen the crop along one axis so it has the network's aspect ratio
    (the added band is filled with the mean colour)."""
    pleft, pright, ptop, pbot = off
    net_ar = F32(w) / F32(h)
    if (F32(ow) / F32(oh)) / net_ar > 1:
        delta = (F32(ow) / net_ar - F32(oh)) / F32(2)
        ptop, pbot = c_int(F32(ptop) - delta), c_int(F32(pbot) - delta)
    else:
        delta = (F32(oh) * net_ar - F32(ow)) / F32(2)
        pleft, pright = c_int(F32(pleft) - delta), c_int(F32(pright) - delta)
    return [pleft, pright, ptop, pbot]


def move_to_corner(off: list[int], flip: int, i_mixup: int) -> list[int]:
    """Mosaic: push a piece's crop toward the mosaic's centre so most of it stays
    visible (upstream does this for half the pieces)."""
    pleft, pright, ptop, pbot = off
    right_piece, bottom_piece = i_mixup in (1, 3), i_mixup in (2, 3)
    # the piece's visible corner is mirrored by flip
    if right_piece == bool(flip):
        pright, pleft = pright + pleft, 0
    else:
        pleft, pright = pleft + pright, 0
    if bottom_piece:
        ptop, pbot = ptop + pbot, 0
    else:
        pbot, ptop = pbot + ptop, 0
    return [pleft, pright, ptop, pbot]


def crop_from_offsets(off: list[int], ow: int, oh: int, dw: int, dh: int, path: str, issues: list):
    """(Crop, offsets): an empty window falls back to the whole image (upstream resets
    swidth, sheight, pleft, ptop but keeps pright and pbot, which mosaic still uses)."""
    pleft, pright, ptop, pbot = off
    swidth, sheight = ow - pleft - pright, oh - ptop - pbot
    if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:
        issues.append(Issue("warning", path, None,
                            f"WARNING: invalid resize (swidth = {swidth}, sheight = {sheight}, pleft = {pleft}, "
                            f"pright = {pright}, ptop = {ptop}, pbot = {pbot}, ow = {ow}, oh = {oh}, "
                            f"jitter offsets up to {dw} x {dh}); the whole image is used"))
        swidth, sheight, pleft, ptop = ow, oh, 0, 0
    return Crop(pleft, ptop, swidth, sheight), [pleft, pright, ptop, pbot]


class ImageSource:
    """Upstream: get_random_paths_custom + load_image_mat_cv: random images from the list.

    An unreadable image is reported (and put on bad.list) and another one is drawn;
    upstream's OpenCV build leaves a hole in the batch instead. `reader(path)` decodes (default:
    read_image_bgr: the images are then in OpenCV's BGR order, `bgr` is True); `check(path)`, when given, returns an Issue for a path that must not be used
    (it is reported and never drawn again) or None.
    """

    def __init__(self, paths, channels: int, reader=None, check=None):
        self.paths = list(paths)
        if not self.paths:
            raise DataError("the image list is empty")
        self.unique = len(set(self.paths))
        self.channels = channels
        self.reader = reader  # None: read_image_bgr (kept picklable for worker processes)
        self.bgr = reader is None
        self.check = check
        self.bad: set[str] = set()

    def draw(self, rng: CRandom, issues: list, path: str | None = None):
        """A random readable image; `path` (track=1's sequence) is tried first."""
        while True:
            if path is None:
                path = self.paths[rng.gen() % len(self.paths)]
            problem = self.check(path) if self.check is not None and path not in self.bad else None
            if problem is not None:
                self.bad.add(path)
                issues.append(problem)
            elif path not in self.bad:
                try:
                    return path, (self.reader(path) if self.reader else read_image_bgr(path, self.channels))
                except ImageError as e:
                    self.bad.add(path)
                    issues.append(Issue("bad_image", path, None,
                                        f"Cannot load image ({e.message}); skipped, another image is used",
                                        bad_list=path))
            if len(self.bad) >= self.unique:
                why = str(issues[-1]) if issues else path
                raise DataError(f"none of the {self.unique} images in the list can be used (see bad.list); "
                                f"e.g. {why}")
            path = None


@dataclass
class Piece:
    """One augmented image (HxWxC uint8 in the source's channel order, or the part `region_of`
    asked for) with its truth and the crop offsets mosaic needs."""

    x: np.ndarray
    truth: np.ndarray
    off: list
    ow: int
    oh: int


def load_piece(src: ImageSource, opt: AugmentOptions, w: int, h: int, rng: CRandom,
               issues: list, use_mixup: int, i_mixup: int, path: str | None = None,
               draws: "Draws | None" = None, region_of=None) -> Piece:
    """One pass of load_data_detection's inner loop for one image (track=1: the sequence's
    `path` and the draws shared by the whole sequence). region_of(off, ow, oh): the part
    (y0, y1, x0, x1) of the augmented image that is used (mosaic), None: all of it."""
    path, img = src.draw(rng, issues, path)
    oh, ow = img.shape[:2]
    d = draws if draws is not None else draw_augmentation(rng, opt)
    off = jitter_offsets(ow, oh, opt, d)
    if opt.letter_box:
        off = letterbox_offsets(off, ow, oh, w, h)
    if use_mixup == MOSAIC and rng.gen() % 2 == 0:
        off = move_to_corner(off, d.flip, i_mixup)
    crop, off = crop_from_offsets(off, ow, oh, c_int(ow * F32(opt.jitter)), c_int(oh * F32(opt.jitter)),
                                  path, issues)
    sx, sy = F32(crop.width) / F32(ow), F32(crop.height) / F32(oh)
    dx, dy = (F32(crop.left) / F32(ow)) / sx, (F32(crop.top) / F32(oh)) / sy
    labels = cached_labels(image_to_label_path(path), opt.classes)
    issues.extend(labels.issues)
    # fill_truth_detection gets 1./sx: a double division narrowed to float
    truth, min_w_h = fill_truth_detection(labels, opt.max_boxes, opt.truth_size, d.flip, dx, dy,
                                          F32(1.0 / float(sx)), F32(1.0 / float(sy)), w, h, rng)
    blur = d.blur
    if min_w_h // 8 < blur and blur > 1:
        blur = min_w_h // 8  # a strong blur would erase small objects
    if d.flip:  # mosaic shifts are measured on the flipped image
        off[0], off[1] = off[1], off[0]
    region = region_of(off, ow, oh) if region_of is not None else None
    x = render(img, w, h, crop, d.flip, d.color, d.gaussian_noise, blur, truth, rng, region, src.bgr)
    return Piece(x, truth, off, ow, oh)


def mosaic_shifts(off: list[int], ow_oh_w_h: tuple, cut_x: int, cut_y: int) -> tuple[int, int, int, int]:
    """(left, right, top, bot) shifts: how much of a piece's jitter border (negative
    offsets) is skipped so that image content, not fill, lands in the mosaic."""
    ow, oh, w, h = ow_oh_w_h
    pleft, pright, ptop, pbot = off
    return (min(cut_x, max(0, c_div(-pleft * w, ow))), min(w - cut_x, max(0, c_div(-pright * w, ow))),
            min(cut_y, max(0, c_div(-ptop * h, oh))), min(h - cut_y, max(0, c_div(-pbot * h, oh))))


def quadrant(w: int, h: int, i_mixup: int, cut_x: int, cut_y: int, shifts) -> tuple[tuple, tuple]:
    """Where mosaic puts piece i_mixup (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right):
    ((y0, y1, x0, x1) in the mosaic, (y0, y1, x0, x1) of the same size in the piece)."""
    left_shift, right_shift, top_shift, bot_shift = shifts
    right_piece, bottom_piece = i_mixup in (1, 3), i_mixup in (2, 3)
    dx0, dx1 = (cut_x, w) if right_piece else (0, cut_x)
    sx0 = left_shift if right_piece else w - cut_x - right_shift
    dy0, dy1 = (cut_y, h) if bottom_piece else (0, cut_y)
    sy0 = top_shift if bottom_piece else h - cut_y - bot_shift
    return (dy0, dy1, dx0, dx1), (sy0, sy0 + dy1 - dy0, sx0, sx0 + dx1 - dx0)


def load_sample(src: ImageSource, opt: AugmentOptions, w: int, h: int, rng: CRandom, issues: list,
                path: str | None = None, draws: "Draws | None" = None):
    """Upstream: load_data_detection for one image: (x float32 (c, h, w) RGB, truth float32
    (max_boxes, truth_size)). mixup / mosaic are applied with probability 1/2."""
    x, truth = _sample(src, opt, w, h, rng, issues, path, draws)
    out = np.empty(x.shape, dtype=F32)
    to_float_into(out, x, src.bgr)
    return out.transpose(2, 0, 1), truth


def _sample(src: ImageSource, opt: AugmentOptions, w: int, h: int, rng: CRandom, issues: list,
            path: str | None, draws: "Draws | None"):
    """load_sample's image as HxWxC in the source's channel order: uint8 (float32 after a mixup),
    and its truth. A mosaic piece is made only for the quadrant it fills."""
    use_mixup = opt.mixup
    if rng.gen() % 2 == 0:
        use_mixup = 0
    mosaic = use_mixup == MOSAIC
    if mosaic:
        lo, hi = _MOSAIC_MIN_OFFSET, F32(1) - _MOSAIC_MIN_OFFSET
        cut_x = rng.int(c_int(w * lo), c_int(w * hi))
        cut_y = rng.int(c_int(h * lo), c_int(h * hi))
    x, truth = None, np.zeros((opt.max_boxes, opt.truth_size), dtype=F32)
    for i_mixup in range(use_mixup + 1):
        first = i_mixup == 0
        region_of = None
        if mosaic:
            def region_of(off, ow, oh, i=i_mixup):
                return quadrant(w, h, i, cut_x, cut_y, mosaic_shifts(off, (ow, oh, w, h), cut_x, cut_y))[1]
        p = load_piece(src, opt, w, h, rng, issues, use_mixup, i_mixup, path if first else None,
                       draws if first else None, region_of)
        if mosaic:
            if x is None:
                x = np.zeros((h, w, opt.channels), dtype=np.uint8)
            shifts = mosaic_shifts(p.off, (p.ow, p.oh, w, h), cut_x, cut_y)
            (y0, y1, x0, x1), _ = quadrant(w, h, i_mixup, cut_x, cut_y, shifts)
            x[y0:y1, x0:x1] = p.x
            blend_truth_mosaic(truth, p.truth, w, h, cut_x, cut_y, i_mixup, shifts, bool(opt.mosaic_bound))
        elif first:
            x, truth = p.x, p.truth
        else:  # mixup: average the two images, append the second one's boxes
            x = blend_images(_as_float(p.x), _as_float(x))
            blend_truth(truth, p.truth)
    return x, truth


def _as_float(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == F32 else np.divide(img, F32(255), dtype=F32)


def load_batch(src: ImageSource, opt: AugmentOptions, n: int, w: int, h: int, seed,
               show_dir: str | None = None, uint8: bool = False):
    """n samples: (x float32 (n, c, h, w) RGB, truth float32 (n, max_boxes, truth_size), issues).
    x is laid out channels-last in memory (a transposed view of (n, h, w, c)): what the network
    takes on the CPU, written once from the uint8 images. uint8: x holds the bytes (a quarter of
    the copy to a GPU, which converts them with augment.BYTE_TO_FLOAT), unless mixup may blend
    images (that makes values no byte holds). With show_dir, each sample is also written there as
    aug_*.jpg."""
    rng = CRandom(seed)
    random_index = rng.gen()
    issues: list = []
    as_bytes = uint8 and opt.mixup != MIXUP and show_dir is None
    xs = np.empty((n, h, w, opt.channels), dtype=np.uint8 if as_bytes else F32)
    ys = np.empty((n, opt.max_boxes, opt.truth_size), dtype=F32)
    planar = xs.transpose(0, 3, 1, 2)
    paths, draws = sequential_paths(src.paths, n, opt, rng) if opt.track else ([None] * n, [None] * n)
    for i in range(n):
        x, ys[i] = _sample(src, opt, w, h, rng, issues, paths[i], draws[i])
        to_float_into(xs[i], x, src.bgr)
        if show_dir is not None:
            save_preview(planar[i], ys[i], os.path.join(show_dir, f"aug_{random_index}_{i}_{rng.gen()}.jpg"))
    return planar, ys, issues


def sequential_paths(paths: list, n: int, opt: AugmentOptions, rng: CRandom) -> tuple[list, list]:
    """Upstream: train_detector with track=1, load_threads and get_sequential_paths: the n
    images of a batch come in `track_chunks` consecutive chunks (upstream's loading threads,
    sequential_subdivisions of them); in each, image i belongs to timeline i % track_mini_batch,
    whose frames are consecutive lines of the list `speed` apart (speed = rand_int(1,
    augment_speed), one per chunk), from a random start; the augmentation is drawn once per
    chunk (load_data_detection's augmentation_calculated) and shared by its images."""
    k, m, mb = max(1, opt.track_chunks), len(paths), max(1, opt.track_mini_batch)
    out_paths, out_draws = [], []
    for c in range(k):
        size = (c + 1) * n // k - c * n // k
        speed = max(1, rng.int(1, opt.augment_speed))
        start = [rng.gen() % m for _ in range(mb)]
        for i in range(size):
            t = i % mb
            out_paths.append(paths[start[t] % m])
            start[t] += speed
        shared = draw_augmentation(rng, opt)
        out_draws += [shared] * size
    return out_paths, out_draws


def draw_preview(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Upstream's -show_imgs picture as HxWx3 uint8 BGR: the augmented image converted
    with (unsigned char)(255 * v), truth boxes drawn as 1-pixel outlines."""
    bgr = to_bgr_uint8(x)
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    ih, iw = bgr.shape[:2]
    colour = PREVIEW_BOX_RGB[::-1]
    for bx, by, bw, bh in truth[:count_boxes(truth), :4].astype(np.float64):
        x1, x2 = (min(max(int(v * iw), 0), iw - 1) for v in (bx - bw / 2.0, bx + bw / 2.0))
        y1, y2 = (min(max(int(v * ih), 0), ih - 1) for v in (by - bh / 2.0, by + bh / 2.0))
        bgr[[y1, y2], x1:x2 + 1] = colour
        bgr[y1:y2 + 1, [x1, x2]] = colour
    return bgr


def save_preview(x: np.ndarray, truth: np.ndarray, path: str) -> None:
    """Write draw_preview's picture as JPEG quality 80 (upstream's save_image)."""
    ok, buf = cv2.imencode(".jpg", draw_preview(x, truth), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if ok:
        buf.tofile(path)
