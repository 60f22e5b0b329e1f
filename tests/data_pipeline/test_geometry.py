"""Boxes follow the image through every transform: a filled rectangle drawn on a
synthetic image is still under its label (mean colour inside the box = the
rectangle's colour) after jitter, resize, flip, letter_box, mosaic and mixup."""
import numpy as np
import pytest

from darknet_py.data import DetectionLoader
from scenes import BACKGROUND, COLOURS, RECTS, box_colour_errors, box_interior, boxes_of, write_scene

W, H = 160, 128
OFF = dict(jitter=0, hue=0, saturation=1, exposure=1, flip=0, blur=0, gaussian_noise=0, mixup=0, letter_box=0)


def load(paths, n=8, seed=7, **kw):
    opts = {**OFF, **kw}
    loader = DetectionLoader(paths if isinstance(paths, list) else [paths], width=W, height=H, classes=3,
                             seed=seed, workers=0, bad_list=None, bad_label_list=None, **opts)
    x, truth = loader.load(n)
    return x.numpy(), truth.numpy()


def assert_boxes_on_rectangles(x, truth, min_checked, tol=0.01):
    checked, worst = 0, 0.0
    for xi, ti in zip(x, truth):
        c, errors = box_colour_errors(xi, ti)
        checked += c
        worst = max([worst] + errors)
    assert checked >= min_checked
    assert worst < tol, f"a box is off its rectangle: colour error {worst}"


def test_output_format(scene):
    x, truth = load(scene, jitter=0.3, flip=1)
    assert x.shape == (8, 3, H, W) and truth.shape == (8, 200, 6)
    assert x.dtype == truth.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    for t in truth:
        k = len(boxes_of(t))
        assert not t[k:].any()  # zero rows after the last box
        assert ((t[:k, :4] > 0) & (t[:k, :4] <= 1)).all()


def test_no_augmentation_is_a_plain_resize(scene):
    x, truth = load(scene, n=2)
    assert np.array_equal(x[0], x[1])
    assert_boxes_on_rectangles(x, truth, min_checked=6, tol=1e-6)
    want = {(cls, round((x0 + x1) / 400, 6)) for cls, x0, _, x1, *_ in RECTS}
    assert {(int(r[4]), round(float(r[0]), 6)) for r in boxes_of(truth[0])} == want


@pytest.mark.parametrize("kw", [dict(jitter=0.3), dict(jitter=0.3, flip=1), dict(resize=1.5),
                                dict(resize=0.5), dict(jitter=0.2, resize=1.3, flip=1)],
                         ids=["jitter", "jitter+flip", "resize1.5", "resize0.5", "all"])
def test_crop_scale_flip_keep_boxes_on_rectangles(scene, kw):
    x, truth = load(scene, n=12, **kw)
    assert_boxes_on_rectangles(x, truth, min_checked=20)


def test_jitter_moves_boxes_and_clamps_them(scene):
    _, truth = load(scene, n=16, jitter=0.45)
    rows = np.concatenate([boxes_of(t) for t in truth])
    assert len({round(float(v), 4) for v in rows[:, 0]}) > 10  # boxes really move
    left, right = rows[:, 0] - rows[:, 2] / 2, rows[:, 0] + rows[:, 2] / 2
    assert (left >= -1e-6).all() and (right <= 1 + 1e-6).all()  # clamped to the image
    assert (rows[:, 2] >= 1 / W).all() and (rows[:, 3] >= 1 / H).all()  # lowest_w / lowest_h


def test_flip_mirrors_image_and_boxes(scene):
    x0, t0 = load(scene, n=1)
    x, truth = load(scene, n=12, flip=1)
    flipped = [np.array_equal(xi, x0[0][:, :, ::-1]) for xi in x]
    plain = [np.array_equal(xi, x0[0]) for xi in x]
    assert all(f or p for f, p in zip(flipped, plain)) and any(flipped) and any(plain)
    want = sorted((int(r[4]), round(1 - float(r[0]), 5)) for r in boxes_of(t0[0]))
    for xi, ti, f in zip(x, truth, flipped):
        if f:
            assert sorted((int(r[4]), round(float(r[0]), 5)) for r in boxes_of(ti)) == want


def test_letter_box_keeps_aspect_ratio_and_pads_with_mean(tmp_path):
    rects = [(0, 20, 10, 80, 60, (230, 30, 30)), (1, 110, 20, 190, 90, (30, 220, 40))]
    path = write_scene(tmp_path, size=(200, 100), rects=rects)
    x, truth = load(path, n=2, letter_box=1)
    assert_boxes_on_rectangles(x, truth, min_checked=4, tol=1e-6)
    # 200 x 100 into 160 x 128: a 160 x 80 picture between bands of the mean colour
    areas = [(x1 - x0) * (y1 - y0) for _, x0, y0, x1, y1, _ in rects]
    colours = np.array([rgb for *_, rgb in rects] + [BACKGROUND], dtype=np.float64)
    weights = np.array(areas + [200 * 100 - sum(areas)], dtype=np.float64)
    mean = np.round(weights @ colours / weights.sum()) / 255
    for band in (x[0][:, :20, :], x[0][:, -20:, :]):
        assert np.allclose(band.reshape(3, -1).T, mean, atol=1e-6)
    sizes = {cls: (x1 - x0, y1 - y0) for cls, x0, y0, x1, y1, _ in rects}
    for r in boxes_of(truth[0]):  # a box keeps its pixel aspect ratio
        bw, bh = sizes[int(r[4])]
        assert r[2] * W / (r[3] * H) == pytest.approx(bw / bh, rel=0.03)


def test_mosaic_with_bound_keeps_boxes_on_rectangles(scene):
    x, truth = load(scene, n=12, jitter=0.3, flip=1, mixup=3, mosaic_bound=1)
    assert_boxes_on_rectangles(x, truth, min_checked=30)
    assert max(len(boxes_of(t)) for t in truth) > len(RECTS)  # some samples are mosaics
    assert (truth[:, :, 5] == 0).any()


def test_mosaic_without_bound_only_clips_to_the_image(scene):
    """Same draws with and without mosaic_bound: identical images; each bounded box lies
    inside the unbounded box it came from (upstream only clips the latter to the image),
    up to the one pixel that the bounded edges lose to int truncation."""
    xa, ta = load(scene, n=8, jitter=0.3, flip=1, mixup=3, mosaic_bound=1)
    xb, tb = load(scene, n=8, jitter=0.3, flip=1, mixup=3, mosaic_bound=0)
    assert np.array_equal(xa, xb)
    for a, b in zip(ta, tb):
        ea = _edges(boxes_of(a))
        eb = _edges(boxes_of(b))
        for row in ea:
            px, py = 1.001 / W, 1.001 / H
            inside = (eb[:, 4] == row[4]) & (eb[:, 0] <= row[0] + px) & (eb[:, 1] >= row[1] - px) \
                & (eb[:, 2] <= row[2] + py) & (eb[:, 3] >= row[3] - py)
            assert inside.any()


def _edges(rows):
    return np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 0] + rows[:, 2] / 2,
                     rows[:, 1] - rows[:, 3] / 2, rows[:, 1] + rows[:, 3] / 2, rows[:, 4]], axis=1)


def test_mosaic_pieces_fill_the_image(tmp_path):
    """Plain-colour images: every mosaic pixel comes from one of them (or its mean-colour
    jitter border), none is left black."""
    paths = [write_scene(tmp_path, f"{i}.png", rects=[], background=c)
             for i, c in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)])]
    x, _ = load(paths, n=6, jitter=0.3, mixup=3)
    assert (x.max(axis=1) > 0.9).all()


def test_mixup_blends_two_images_and_appends_boxes(tmp_path):
    """Black backgrounds: inside a box the blend is 0.5 * its colour (0.5 + 0.5 when the
    same image was drawn twice); the second image's rows have track_id 0."""
    a = write_scene(tmp_path, "a.png", rects=[RECTS[0]], background=(0, 0, 0))
    b = write_scene(tmp_path, "b.png", rects=[RECTS[2]], background=(0, 0, 0))
    x, truth = load([a, b], n=16, mixup=1)
    mixed = 0
    for xi, ti in zip(x, truth):
        rows = boxes_of(ti)
        classes = sorted(int(r[4]) for r in rows)
        if len(rows) == 2:
            mixed += 1
            assert ti[0, 5] != 0 and ti[1, 5] == 0
            for r in rows:
                ys, xs = box_interior(r, W, H)
                mean = xi[:, ys, xs].reshape(3, -1).mean(axis=1)
                scale = 1.0 if classes[0] == classes[1] else 0.5
                assert np.allclose(mean, scale * COLOURS[int(r[4])], atol=1e-5)
        else:
            assert len(rows) == 1
            assert_boxes_on_rectangles(xi[None], ti[None], min_checked=1, tol=1e-6)
    assert 0 < mixed < 16


def test_colour_blur_noise_change_pixels_not_boxes(scene):
    x0, t0 = load(scene, n=1, seed=3)
    x, truth = load(scene, n=8, seed=3, hue=0.1, saturation=1.5, exposure=1.5, blur=1, gaussian_noise=20)
    assert not any(np.array_equal(xi, x0[0]) for xi in x)
    want = sorted(map(tuple, boxes_of(t0[0])[:, :5].tolist()))
    for ti in truth:
        assert sorted(map(tuple, boxes_of(ti)[:, :5].tolist())) == want


def test_fixed_seed_is_repeatable(scene):
    a = load(scene, n=4, seed=11, jitter=0.3, flip=1, mixup=3, hue=0.1, saturation=1.5, exposure=1.5)
    b = load(scene, n=4, seed=11, jitter=0.3, flip=1, mixup=3, hue=0.1, saturation=1.5, exposure=1.5)
    c = load(scene, n=4, seed=12, jitter=0.3, flip=1, mixup=3, hue=0.1, saturation=1.5, exposure=1.5)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
