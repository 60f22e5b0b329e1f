"""Upstream: load_data_augment, load_image_augment_paths, load_labels_paths, fill_truth_smooth,
fill_hierarchy, get_labels (src/data.c); random_augment_image, random_distort_image
(src/image.c); blur_image (src/image_opencv.cpp); the data side of train_classifier
(src/classifier.c).

A classifier batch: each image is read whole, cropped with a random scale (its shorter side
to a size in [min_crop, max_crop]), aspect, rotation (angle) and shift (random_augment_image,
bilinear, black outside the image), maybe flipped, colour-distorted in float HSV, resized to
the network (darknet's own float image code, darknet_py/image.py) and then, for half of the
images when `mixup` is set, mixed with others: 1 mixup (average), 2 cutmix (a rectangle of
a second image), 3 mosaic (four images, one per quadrant), 4 cutmix or mosaic at random;
labels mixed in proportion. blur (upstream's OpenCV build only) blurs a quarter of them.

The truth of an image is one row of `classes` values: 1 (or 1 - label_smooth_eps) for the
label whose name the image's path contains, label_smooth_eps / (classes - 1) for the others
(fill_truth_smooth); with a hierarchy (a [softmax] tree=) its ancestors are set too and the
groups it says nothing about are marked SECRET_NUM (fill_hierarchy).

Deliberate differences from upstream (as the detector loader, data/loader.py):
- random numbers from numpy (seedable, data/crand.py), not C's rand();
- upstream decides "mix or not" once per loading thread; here each image decides on its own,
  with the same probability 1/2;
- an image whose path names no label or several (upstream: "Too many or too few labels",
  and trains on it anyway) and an unreadable image are reported once and skipped; another
  image is drawn.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..image import ImageError, distort_image, flip_image, load_image_color, resize_image, rotate_crop_image
from .augment import read_image, to_planar
from .crand import CRandom, F32, c_int
from .detection import ImageSource
from .files import DataFileError
from .labels import Issue
from .loader import BatchLoader
from ..layers.softmax import SECRET_NUM  # fill_hierarchy's mark: a tree group the label says nothing about

MIXUP, CUTMIX, MOSAIC, CUTMIX_OR_MOSAIC = 1, 2, 3, 4
# cutmix: the pasted rectangle's sides are 30% to 80% of the image's
_CUTMIX_MIN, _CUTMIX_MAX = F32(0.3), F32(0.8)
# mosaic: the cut point lies in the middle 60% of each side
_MOSAIC_MIN_OFFSET = F32(0.2)
_BLUR_DEFAULT_KSIZE = 15  # blur=1


def read_label_names(path: str) -> list[str]:
    """Upstream: get_labels: one class name per line (CR/LF removed). A blank line would be
    a name every path contains, so it is an error naming the file and line (trailing blank
    lines are ignored)."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise DataFileError(path, f"Couldn't open file: {e.strerror or e}") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in os.fsdecode(raw).split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    for i, line in enumerate(lines):
        if not line.strip():
            raise DataFileError(f"{path}:{i + 1}", "empty label name (every image path would contain it)")
    if not lines:
        raise DataFileError(path, "no labels in the file")
    return lines


@dataclass(frozen=True)
class Hierarchy:
    """A [softmax] tree (upstream's `tree`): each node's parent (-1 for a root), the sizes of
    the sibling groups in order, the names, and which nodes are leaves (those no node names
    as its parent, or those a data file's `leaves` list names: change_leaves)."""

    parents: tuple
    group_sizes: tuple
    names: tuple
    leaf: tuple

    @classmethod
    def from_network(cls, net) -> "Hierarchy | None":
        """The tree of the network's [softmax] layer (upstream's net.hierarchy), or None."""
        for layer in net.layers:
            tree = getattr(layer, "softmax_tree", None)
            if tree is not None:
                sizes = tuple(tree.sizes())
                parents = tuple(tree.parents)
                inner = {p for p in parents if p >= 0}
                return cls(parents, sizes, tuple(tree.names), tuple(i not in inner for i in range(len(parents))))
        return None

    def with_leaves(self, names) -> "Hierarchy":
        names = set(names)
        return replace(self, leaf=tuple(n in names for n in self.names))


def fill_truth(path: str, labels, eps: float = 0.0, hierarchy: Hierarchy | None = None):
    """Upstream: fill_truth_smooth (+ fill_hierarchy): (truth row float32, number of labels
    the path contains). A truth value is "set" for fill_hierarchy when it is not 0."""
    k = len(labels)
    hit = np.array([name in path for name in labels])
    eps = F32(eps)
    other = eps / F32(k - 1) if k > 1 else F32(0)
    truth = np.where(hit, F32(1) - eps, other).astype(F32)
    if hierarchy is not None:
        parents = hierarchy.parents
        for j in np.flatnonzero(truth[:len(parents)]):
            p = parents[j]
            while p >= 0:
                truth[p] = 1
                p = parents[p]
        start = 0
        for size in hierarchy.group_sizes:
            if not truth[start:start + size].any():
                truth[start:start + size] = SECRET_NUM
            start += size
    return truth, int(hit.sum())


@dataclass(frozen=True)
class ClassifierAugment:
    """load_data_augment's arguments (train_classifier's load_args)."""

    labels: tuple
    min_crop: int
    max_crop: int
    angle: float = 0.0
    aspect: float = 1.0
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    flip: int = 1
    mixup: int = 0
    blur: int = 0
    label_smooth_eps: float = 0.0
    hierarchy: Hierarchy | None = None
    dontuse_opencv: bool = False

    @property
    def classes(self) -> int:
        return len(self.labels)

    def problems(self) -> list[tuple[str, str]]:
        """[(cfg key, what is wrong)]: what upstream would crash on or do nothing sensible with."""
        out = []
        if self.mixup not in (0, MIXUP, CUTMIX, MOSAIC, CUTMIX_OR_MOSAIC):
            out.append(("mixup", f"mixup={self.mixup}: expected 0 (none), 1 (mixup), 2 (cutmix), 3 (mosaic) or 4"))
        if self.blur > 1 and self.blur % 2 == 0:
            out.append(("blur", f"blur={self.blur}: the Gaussian kernel size must be odd"))
        if self.min_crop < 1 or self.max_crop < 1:
            out.append(("min_crop", f"min_crop={self.min_crop}, max_crop={self.max_crop}: both must be >= 1"))
        return out

    def check(self) -> "ClassifierAugment":
        for _key, message in self.problems():
            raise ValueError(message)
        return self


def random_augment_image(im: np.ndarray, rng: CRandom, angle: float, aspect: float, low: int, high: int,
                         size: int) -> np.ndarray:
    """Upstream: random_augment_image: a size x size crop of `im` scaled so that its
    shorter side (after the random aspect) is a random length in [low, high], rotated by up to
    `angle` degrees and shifted at random within the scaled image."""
    aspect = rng.scale(aspect)
    r = rng.int(low, high)
    c, h, w = im.shape
    wa = F32(w) * aspect
    shorter = c_int(h if F32(h) < wa else wa)
    scale = F32(r) / F32(shorter)
    rad = F32(float(rng.uniform_strong(-angle, angle)) * 2.0 * math.pi / 360.0)
    dx = F32(float(F32(F32(w) * scale / aspect) - F32(size)) / 2.0)
    dy = F32(float(F32(F32(h) * scale) - F32(size)) / 2.0)
    dx = rng.uniform_strong(-max(dx, F32(0)), max(dx, F32(0)))
    dy = rng.uniform_strong(-max(dy, F32(0)), max(dy, F32(0)))
    return rotate_crop_image(im, rad, scale, size, size, dx, dy, aspect)


def augment_one(im: np.ndarray, opt: ClassifierAugment, w: int, h: int, rng: CRandom) -> np.ndarray:
    """Upstream: load_image_augment_paths' body for one image."""
    crop = random_augment_image(im, rng, opt.angle, opt.aspect, opt.min_crop, opt.max_crop, max(w, h))
    if opt.flip and rng.gen() % 2:
        crop = flip_image(crop)
    hue = rng.uniform_strong(-opt.hue, opt.hue)
    sat, exposure = rng.scale(opt.saturation), rng.scale(opt.exposure)
    crop = distort_image(crop, hue, sat, exposure)
    return resize_image(crop, w, h)


def blur_image(x: np.ndarray, ksize: int) -> np.ndarray:
    """Upstream: blur_image: to 8 bits ((unsigned char)(v*255)), cv::GaussianBlur with a
    ksize x ksize kernel, back to float (v/255)."""
    u8 = (np.clip(x, 0, 1) * F32(255)).astype(np.uint8).transpose(1, 2, 0)
    out = cv2.GaussianBlur(np.ascontiguousarray(u8), (ksize, ksize), 0).reshape(u8.shape)
    return to_planar(out)


class ClassifierSource(ImageSource):
    """Random images from the list with their truth rows; an image whose path matches no
    label or several is reported and never drawn again, as an unreadable one."""

    def __init__(self, paths, opt: ClassifierAugment):
        super().__init__(paths, 3, reader=self._read, check=self._check)
        self.opt = opt
        self.truths: dict[str, np.ndarray] = {}

    def _check(self, path: str) -> Issue | None:
        if path in self.truths:
            return None
        truth, count = fill_truth(path, self.opt.labels, self.opt.label_smooth_eps, self.opt.hierarchy)
        if count != 1:
            found = [name for name in self.opt.labels if name in path]
            what = "no label name" if not found else f"{count} label names ({', '.join(found)})"
            return Issue("label", path, None, f"Too many or too few labels: the path contains {what}; "
                                              "skipped", bad_label_list=path)
        self.truths[path] = truth
        return None

    def _read(self, path: str) -> np.ndarray:
        if self.opt.dontuse_opencv:
            return load_image_color(path)  # stb's decode (upstream's load_image_stb_resize)
        return to_planar(read_image(path, 3))  # load_image_cv: OpenCV's decode, EXIF applied

    def sample(self, rng: CRandom, issues: list, w: int, h: int):
        path, im = self.draw(rng, issues)
        return path, augment_one(im, self.opt, w, h, rng), self.truths[path]


def load_classifier_sample(src: ClassifierSource, w: int, h: int, rng: CRandom, issues: list):
    """One image of load_data_augment: (path, x float32 (3, h, w), truth float32 (classes,))."""
    opt = src.opt
    path, x, y = src.sample(rng, issues, w, h)
    mix = opt.mixup if opt.mixup and rng.int(0, 1) else 0
    if mix == CUTMIX_OR_MOSAIC:
        mix = rng.int(CUTMIX, MOSAIC)
    if mix in (MIXUP, CUTMIX):
        _, x2, y2 = src.sample(rng, issues, w, h)
        if mix == MIXUP:
            x, y = (x + x2) / F32(2), (y + y2) / F32(2)
        else:
            cut_w = rng.int(c_int(F32(w) * _CUTMIX_MIN), c_int(F32(w) * _CUTMIX_MAX))
            cut_h = rng.int(c_int(F32(h) * _CUTMIX_MIN), c_int(F32(h) * _CUTMIX_MAX))
            cut_x, cut_y = rng.int(0, w - cut_w - 1), rng.int(0, h - cut_h - 1)
            x = x.copy()
            x[:, cut_y:cut_y + cut_h, cut_x:cut_x + cut_w] = x2[:, cut_y:cut_y + cut_h, cut_x:cut_x + cut_w]
            alpha = F32(cut_w * cut_h) / F32(w * h)
            y = y * (F32(1) - alpha) + y2 * alpha
    elif mix == MOSAIC:
        others = [src.sample(rng, issues, w, h)[1:] for _ in range(3)]
        cut_x = rng.int(c_int(F32(w) * _MOSAIC_MIN_OFFSET), c_int(F32(w) * (F32(1) - _MOSAIC_MIN_OFFSET)))
        cut_y = rng.int(c_int(F32(h) * _MOSAIC_MIN_OFFSET), c_int(F32(h) * (F32(1) - _MOSAIC_MIN_OFFSET)))
        x = x.copy()
        (x2, y2), (x3, y3), (x4, y4) = others
        x[:, :cut_y, cut_x:] = x2[:, :cut_y, cut_x:]
        x[:, cut_y:, :cut_x] = x3[:, cut_y:, :cut_x]
        x[:, cut_y:, cut_x:] = x4[:, cut_y:, cut_x:]
        area = F32(w * h)
        s1, s2 = F32(cut_x * cut_y) / area, F32((w - cut_x) * cut_y) / area
        s3, s4 = F32(cut_x * (h - cut_y)) / area, F32((w - cut_x) * (h - cut_y)) / area
        y = y * s1 + y2 * s2 + y3 * s3 + y4 * s4
    return path, x.astype(F32), y.astype(F32)


def load_classifier_batch(src: ClassifierSource, n: int, w: int, h: int, seed, show_dir: str | None = None):
    """Upstream: load_data_augment for n images: (x float32 (n, 3, h, w), truth float32
    (n, classes), issues). With show_dir, each image is written there as aug_*.jpg and its
    classes printed (upstream's -show_imgs)."""
    rng = CRandom(seed)
    opt = src.opt
    issues: list = []
    xs = np.empty((n, 3, h, w), dtype=F32)
    ys = np.empty((n, len(opt.labels)), dtype=F32)
    paths = []
    for i in range(n):
        path, xs[i], ys[i] = load_classifier_sample(src, w, h, rng, issues)
        paths.append(path)
    if opt.blur:
        ksize = _BLUR_DEFAULT_KSIZE if opt.blur == 1 else opt.blur
        for i in range(n):
            if rng.gen() % 4 == 0:
                xs[i] = blur_image(xs[i], ksize)
    if show_dir is not None:
        save_previews(xs, ys, paths, show_dir, rng)
    return xs, ys, issues


def save_previews(xs, ys, paths, show_dir: str, rng: CRandom) -> None:
    """-show_imgs: aug_I_NAME_RANDOM.jpg per image and its classes line, as upstream."""
    from ..image import save_image

    for i, (x, y, path) in enumerate(zip(xs, ys, paths)):
        name = os.path.basename(path).split(".", 1)[0]  # basecfg(path)
        try:
            save_image(x, os.path.join(show_dir, f"aug_{i}_{name}_{rng.gen()}.jpg"))
        except ImageError:
            pass
        classes = "".join(f" {j} ({v:f}), " for j, v in enumerate(y) if v > 0)
        print(f"\n Classes: {classes} ")


class _ClassifierBatchMaker:
    """What a worker needs to build a classifier batch (picklable)."""

    def __init__(self, paths, opt: ClassifierAugment, show_dir: str | None):
        self.source = ClassifierSource(paths, opt)
        self.show_dir = show_dir

    def __call__(self, n: int, w: int, h: int, seed):
        x, y, issues = load_classifier_batch(self.source, n, w, h, seed, self.show_dir)
        return torch.from_numpy(x), torch.from_numpy(y), issues


class ClassifierLoader(BatchLoader):
    """Upstream: load_data_augment (CLASSIFICATION_DATA): classifier batches.

    x: float32 torch tensor (n, 3, h, w), RGB in [0, 1]; truth: float32 torch tensor
    (n, classes). Workers, seeds and the reporting of bad data as DetectionLoader's."""

    def __init__(self, paths, width: int, height: int, opt: ClassifierAugment, *, show_imgs: bool = False,
                 show_dir: str = ".", **kwargs):
        self.options = opt.check()
        super().__init__(_ClassifierBatchMaker(paths, opt, show_dir if show_imgs else None), width, height,
                         show_imgs=show_imgs, **kwargs)


def classifier_loader_from_net(net, paths, labels, show_imgs: bool = False, dontuse_opencv: bool = False,
                               **kwargs) -> ClassifierLoader:
    """A ClassifierLoader with the load_args train_classifier fills from [net] (min_crop,
    max_crop, angle, aspect, hue, saturation, exposure, flip, mixup, blur, label_smooth_eps)
    and the network's hierarchy. kwargs go to ClassifierLoader (seed, workers, ...)."""
    o, section = net.options, net.sections[0]
    for key in ("contrastive", "unsupervised"):
        if getattr(o, key):
            raise section.error(key, f"{key}=1 classifier training is not implemented by darknet_py")
    opt = ClassifierAugment(
        labels=tuple(labels), min_crop=o.min_crop, max_crop=o.max_crop, angle=o.angle, aspect=o.aspect,
        hue=o.hue, saturation=o.saturation, exposure=o.exposure, flip=o.flip, mixup=o.mixup, blur=o.blur,
        label_smooth_eps=o.label_smooth_eps, hierarchy=Hierarchy.from_network(net), dontuse_opencv=dontuse_opencv)
    for key, message in opt.problems():  # one line naming the cfg, its line and key
        raise section.error(key, message)
    return ClassifierLoader(paths, o.width, o.height, opt, show_imgs=show_imgs, **kwargs)


__all__ = ["ClassifierAugment", "ClassifierLoader", "classifier_loader_from_net", "ClassifierSource", "Hierarchy",
           "SECRET_NUM", "fill_truth", "load_classifier_batch", "load_classifier_sample", "random_augment_image",
           "read_label_names"]
