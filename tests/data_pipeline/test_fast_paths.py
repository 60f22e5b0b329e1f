"""The loader's cheaper ways give the same numbers as the plain ones, in the same run (so the
verdict does not depend on the machine's OpenCV or SIMD): BGR kept until the float conversion,
a mosaic piece made for the rows it fills only, the byte -> float lookup, the channels-last
batch, the label cache, and max-pooling with torch's own padding."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknet_py.data import DetectionLoader, augment, detection, labels
from darknet_py.data.augment import ColorJitter, Crop, add_gaussian_noise, distort_color, render, to_float_into
from darknet_py.data.crand import CRandom
from darknet_py.layers import pooling
from scenes import write_scene


def _textured(directory, name, seed):
    """A textured 150 x 110 JPEG (OpenCV's HSV arithmetic varies along a row only on varied
    pixels) with four labelled boxes."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (110, 150, 3), dtype=np.uint8), (5, 5), 0)
    path = os.path.join(directory, name + ".jpg")
    cv2.imwrite(path, img)
    boxes = [f"{rng.integers(0, 3)} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} "
             f"{rng.uniform(0.05, 0.35):.4f} {rng.uniform(0.05, 0.35):.4f}" for _ in range(4)]
    with open(os.path.join(directory, name + ".txt"), "w") as f:
        f.write("\n".join(boxes) + "\n")
    return path

RNG = np.random.default_rng(11)
JITTERS = [ColorJitter(0.1, 1.5, 0.7), ColorJitter(-0.07, 0.6, 1.4), ColorJitter(0.5, 1.0, 1.0)]


def _image(h=97, w=131):
    return cv2.GaussianBlur(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8), (3, 3), 0)


@pytest.mark.parametrize("jitter", JITTERS)
def test_bgr_colour_step_is_the_rgb_one_swapped(jitter):
    rgb = _image()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    assert np.array_equal(distort_color(bgr, jitter, bgr=True)[:, :, ::-1], distort_color(rgb, jitter))
    a = add_gaussian_noise(rgb, 25, CRandom(3))
    b = add_gaussian_noise(bgr, 25, CRandom(3), bgr=True)
    assert np.array_equal(b[:, :, ::-1], a)


@pytest.mark.parametrize("flip", [0, 1])
@pytest.mark.parametrize("jitter", JITTERS)
def test_a_region_is_the_whole_image_cut(flip, jitter):
    img = _image(240, 320)
    crop = Crop(-17, 9, 301, 250)
    truth = np.zeros((4, 6), np.float32)
    full = render(img, 416, 288, crop, flip, jitter, 0, 0, truth, CRandom(0), bgr=True)
    for region in [(0, 130, 0, 211), (130, 288, 211, 416), (5, 6, 397, 416), (0, 288, 0, 416)]:
        part = render(img, 416, 288, crop, flip, jitter, 0, 0, truth, CRandom(0), region, bgr=True)
        y0, y1, x0, x1 = region
        assert np.array_equal(part, full[y0:y1, x0:x1]), region


def test_float_conversion_is_upstreams_division():
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img[0, :3] = [[0, 128, 255]] * 3
    out = np.empty((37, 53, 3), np.float32)
    to_float_into(out, np.ascontiguousarray(img[:, :, ::-1]), bgr=True)
    assert np.array_equal(out, np.divide(img, np.float32(255), dtype=np.float32))
    strided = np.empty((3, 37, 53), np.float32).transpose(1, 2, 0)  # not contiguous: copied
    to_float_into(strided, img, bgr=False)
    assert np.array_equal(strided, out)
    grey = img[:, :, :1].copy()
    g = np.empty((37, 53, 1), np.float32)
    to_float_into(g, grey, bgr=True)
    assert np.array_equal(g, grey / np.float32(255))


def _whole_then_cut(img, w, h, crop, flip, color, noise, blur, truth, rng, region=None, bgr=False):
    full = render(img, w, h, crop, flip, color, noise, blur, truth, rng, None, bgr)
    if region is None:
        return full
    y0, y1, x0, x1 = region
    return full[y0:y1, x0:x1]


@pytest.mark.parametrize("kw", [dict(mixup=3), dict(mixup=3, blur=1), dict(mixup=3, gaussian_noise=30),
                                dict(mixup=1), dict(mixup=0, letter_box=1)])
def test_batches_equal_the_plain_pipeline(tmp_path, monkeypatch, kw):
    paths = [_textured(str(tmp_path), f"s{i}", i) for i in range(3)]
    opts = dict(jitter=0.3, hue=0.1, saturation=1.5, exposure=1.5, flip=1, resize=1.5, **kw)

    def batch():
        loader = DetectionLoader(paths, width=160, height=96, classes=3, seed=4, workers=0, bad_list=None,
                                 bad_label_list=None, **opts)
        return [tuple(t.numpy().copy() for t in loader.load(6)) for _ in range(2)]

    fast = batch()
    monkeypatch.setattr(detection, "render", _whole_then_cut)
    monkeypatch.setattr(detection, "read_image_bgr", lambda p, c: np.ascontiguousarray(
        augment.read_image(p, c)[:, :, ::-1]))
    plain = batch()
    for (x, t), (px, pt) in zip(fast, plain):
        assert np.array_equal(x, px) and np.array_equal(t, pt)


def test_batch_is_channels_last_rgb(tmp_path):
    path = write_scene(tmp_path)
    loader = DetectionLoader([path], width=64, height=48, classes=3, seed=0, workers=0, bad_list=None,
                             bad_label_list=None, jitter=0, flip=0)
    x, _ = loader.load(2)
    assert x.shape == (2, 3, 48, 64) and x.is_contiguous(memory_format=torch.channels_last)
    want = cv2.resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), (64, 48), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(x[0].numpy(), (want / np.float32(255)).astype(np.float32).transpose(2, 0, 1))


def test_label_cache_sees_a_changed_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.2\n")
    first = labels.cached_labels(str(path), 3)
    assert labels.cached_labels(str(path), 3) is first
    path.write_text("1 0.5 0.5 0.2 0.2\n2 0.25 0.25 0.1 0.1\n")
    os.utime(path, ns=(1, 1))  # a different time stamp even on a coarse clock
    second = labels.cached_labels(str(path), 3)
    assert second.ids.tolist() == [1, 2]
    assert labels.cached_labels(str(path), 2).ids.tolist() == [1]  # classes are part of the key


@pytest.mark.parametrize("size,stride,padding,n,native", [
    (2, 2, 1, 13, True), (3, 1, 2, 13, True), (16, 16, 15, 208, True), (16, 16, 15, 209, False),
    (5, 2, 4, 27, True), (3, 2, 2, 26, True), (2, 1, 1, 7, False), (4, 4, 0, 16, True), (3, 3, 6, 10, False)])
def test_maxpool_with_torchs_padding_is_upstreams(size, stride, padding, n, native):
    """Every window of upstream's padded max-pool, forward and backward, from torch's own padding
    where the sizes allow it (the padded copy otherwise)."""
    sizes = (n, n - 1)
    out = tuple((m + padding - size) // stride + 1 for m in sizes)
    pads = tuple(pooling._pad_amounts(size, stride, padding, m, o) for m, o in zip(sizes, out))
    ceil = pooling._native_padding(size, (stride, stride), pads, sizes, out)
    assert (ceil is not None) == native
    x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    want = F.max_pool2d(pooling._pad(x, pads[1], pads[0], float("-inf")), size, stride)
    assert tuple(want.shape[2:]) == out
    if native:
        got = F.max_pool2d(x, size, stride, (pads[0][0], pads[1][0]), ceil_mode=ceil)
        assert torch.equal(got, want)
        g = torch.randn_like(want)
        (ga,) = torch.autograd.grad(want, x, g)
        (gb,) = torch.autograd.grad(got, x, g)
        assert torch.equal(ga, gb)
