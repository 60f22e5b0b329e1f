"""Truth rows (upstream: randomize_boxes, correct_boxes, fill_truth_detection,
blend_truth, blend_truth_mosaic) and the image operations of image_data_augmentation."""
import numpy as np
import pytest

from darknet_py.data.augment import ColorJitter, add_gaussian_noise, apply_blur, distort_color
from darknet_py.data.crand import CRandom
from darknet_py.data.labels import read_labels
from darknet_py.data.truth import (blend_truth, blend_truth_mosaic, correct_boxes, fill_truth_detection,
                                   randomize_order)

F32 = np.float32


def labels_from(tmp_path, lines, classes=3):
    p = tmp_path / "l.txt"
    p.write_text("\n".join(lines) + "\n")
    return read_labels(str(p), classes)


def test_correct_boxes_float32_arithmetic(tmp_path):
    lab = labels_from(tmp_path, ["0 0.449 0.482 0.586 0.530"])
    dx, dy, sx, sy = F32(0.1), F32(-0.05), F32(1.25), F32(0.8)
    out = correct_boxes(lab, np.array([0]), dx, dy, sx, sy, flip=True)[0]
    x, y, w, h = F32(0.449), F32(0.482), F32(0.586), F32(0.530)
    left, right = (x - w / F32(2)) * sx - dx, (x + w / F32(2)) * sx - dx
    top, bot = (y - h / F32(2)) * sy - dy, (y + h / F32(2)) * sy - dy
    left, right = F32(1) - right, F32(1) - left
    left, right, top, bot = (F32(min(max(v, 0), 1)) for v in (left, right, top, bot))
    assert out.tolist() == [(left + right) / F32(2), (top + bot) / F32(2), right - left, bot - top]
    assert out.dtype == np.float32


def test_fill_truth_cuts_to_max_boxes_before_filtering(tmp_path):
    lines = [f"{i % 3} {0.05 + i * 0.09:.3f} 0.5 0.05 0.05" for i in range(10)]
    lab = labels_from(tmp_path, lines)
    truth, _ = fill_truth_detection(lab, 4, 6, False, 0, 0, 1, 1, 128, 128, CRandom(0))
    assert (truth[:, 0] > 0).all() and truth.shape == (4, 6)
    assert set(truth[:, 5].astype(int)) <= set(lab.track.tolist())


def test_boxes_below_one_pixel_are_dropped(tmp_path):
    lab = labels_from(tmp_path, ["0 0.5 0.5 0.005 0.2", "1 0.3 0.3 0.2 0.2", "2 0.7 0.7 0.2 0.007"])
    truth, min_w_h = fill_truth_detection(lab, 10, 6, False, 0, 0, 1, 1, 128, 128, CRandom(0))
    assert truth[:1, 4].tolist() == [1] and not truth[1:].any()
    assert min_w_h == int(F32(0.2) * F32(128))  # 25: the smallest side of kept boxes


def test_boxes_outside_the_crop_are_clamped_or_dropped(tmp_path):
    lab = labels_from(tmp_path, ["0 0.1 0.5 0.1 0.2", "1 0.6 0.5 0.4 0.2"])
    # crop the right half (dx = 0.5, sx = 2): box 0 falls outside, box 1 is cut at the left
    truth, _ = fill_truth_detection(lab, 10, 6, False, F32(1), 0, F32(2), 1, 128, 128, CRandom(0))
    assert truth[0, 4] == 1 and not truth[1:].any()
    assert truth[0, :4].tolist() == pytest.approx([0.3, 0.5, 0.6, 0.2])


def test_randomize_order_is_upstreams_swap_shuffle():
    rng = CRandom(0)
    orders = {tuple(randomize_order(3, rng)) for _ in range(300)}
    assert orders == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}


def test_blend_truth_appends_what_fits_without_track_ids():
    acc = np.zeros((3, 6), F32)
    acc[0] = [0.5, 0.5, 0.1, 0.1, 1, 77]
    new = np.zeros((3, 6), F32)
    new[:3] = [[0.2, 0.2, 0.1, 0.1, 0, 5], [0.3, 0.3, 0.1, 0.1, 2, 6], [0.4, 0.4, 0.1, 0.1, 2, 7]]
    blend_truth(acc, new)
    assert acc[:, 4].tolist() == [1, 0, 2] and acc[:, 5].tolist() == [77, 0, 0]


def test_blend_truth_mosaic_shifts_and_bounds():
    w = h = 100
    piece = np.zeros((4, 6), F32)
    piece[0] = [0.9, 0.9, 0.1, 0.1, 2, 9]  # bottom-right of the piece
    piece[1] = [0.1, 0.1, 0.1, 0.1, 1, 9]  # top-left: not in the visible part of piece 0
    acc = np.zeros((4, 6), F32)
    # piece 0 (top-left quadrant, cut at 40, 60): its right/bottom part is shown
    blend_truth_mosaic(acc, piece, w, h, 40, 60, 0, (0, 0, 0, 0), mosaic_bound=False)
    xb, yb = F32(0.9) - F32(100 - 40) / F32(100), F32(0.9) - F32(100 - 60) / F32(100)
    assert acc[0, :5].tolist() == [xb, yb, F32(0.1), F32(0.1), 2] and not acc[1:].any()
    # a box crossing the cut keeps its size without mosaic_bound, is cut with it
    piece[0] = [0.95, 0.5, 0.2, 0.2, 0, 0]  # x 0.85..1.05 of the piece -> 0.25..0.45 in the mosaic
    free, bound = np.zeros((4, 6), F32), np.zeros((4, 6), F32)
    blend_truth_mosaic(free, piece[:1], w, h, 40, 60, 0, (0, 0, 0, 0), mosaic_bound=False)
    blend_truth_mosaic(bound, piece[:1], w, h, 40, 60, 0, (0, 0, 0, 0), mosaic_bound=True)
    xb = F32(0.95) - F32(60) / F32(100)
    left = int((xb - F32(0.2) / F32(2)) * F32(100))  # 24: upstream truncates 24.999998
    assert free[0, 2] == F32(0.2) and bound[0, 2] == F32(40 - left) / F32(100)  # right edge at the cut
    assert bound[0, 0] == (F32(40 + left) / F32(2)) / F32(100)


def test_colour_identity_is_a_no_op_and_exposure_scales_value():
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert distort_color(img, ColorJitter()) is img
    grey = np.full((4, 4, 1), 101, np.uint8)
    assert (distort_color(grey, ColorJitter(0, 1, 0.5)) == 50).all()  # rint(50.5) = 50, half to even
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200
    assert (distort_color(red, ColorJitter(0, 1, 1.25)) == [250, 0, 0]).all()
    assert (distort_color(red, ColorJitter(1 / 3, 1, 1))[..., 1] > 150).all()  # hue +120 deg: green


def test_background_blur_keeps_box_pixels():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    truth = np.zeros((2, 6), F32)
    truth[0, :4] = [0.5, 0.5, 0.5, 0.5]  # pixels 16..48
    out = apply_blur(img, 1, truth)
    assert np.array_equal(out[16:48, 16:48], img[16:48, 16:48])
    assert not np.array_equal(out[:10], img[:10])
    whole = apply_blur(img, 5, truth)
    assert not np.array_equal(whole[16:48, 16:48], img[16:48, 16:48])


def test_gaussian_noise_only_brightens():
    img = np.full((32, 32, 3), 100, np.uint8)
    out = add_gaussian_noise(img, 20, CRandom(0))
    assert (out >= img).all() and (out > img).mean() > 0.4


from hypothesis import given, settings, strategies as st  # noqa: E402

from darknet_py.data.labels import Labels  # noqa: E402

_coord = st.floats(0.0625, 1.0, allow_nan=False, width=32)


def _labels(rows):
    ids = np.array([r[0] for r in rows], np.int64)
    xywh = np.array([r[1:] for r in rows], F32).reshape(-1, 4)
    x, y, w, h = xywh.T
    ltrb = np.stack([x - w / F32(2), x + w / F32(2), y - h / F32(2), y + h / F32(2)], 1).astype(F32)
    return Labels(ids, xywh, ltrb.reshape(-1, 4), np.arange(len(rows)), [])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 2), _coord, _coord, _coord, _coord), max_size=12),
       crop=st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(0.4, 2.5), st.floats(0.4, 2.5)),
       flip=st.booleans(), max_boxes=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_truth_rows_are_valid_for_any_crop(rows, crop, flip, max_boxes, seed):
    dx, dy, sx, sy = (F32(v) for v in crop)
    truth, min_w_h = fill_truth_detection(_labels(rows), max_boxes, 6, flip, dx, dy, sx, sy, 64, 48, CRandom(seed))
    k = int((truth[:, 0] != 0).sum())
    assert not truth[k:].any() and k <= min(max_boxes, len(rows))
    x, y, w, h = truth[:k, :4].T
    assert ((x - w / 2 >= -1e-6) & (x + w / 2 <= 1 + 1e-6) & (y - h / 2 >= -1e-6) & (y + h / 2 <= 1 + 1e-6)).all()
    assert (w >= F32(1) / F32(64)).all() and (h >= F32(1) / F32(48)).all()
    assert set(truth[:k, 4].astype(int)) <= {r[0] for r in rows}
    assert (min_w_h == 0) == (k == 0)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(_coord, _coord, st.floats(0.02, 0.9), st.floats(0.02, 0.9)), min_size=1, max_size=6),
       cut=st.tuples(st.integers(20, 80), st.integers(20, 80)), i_mixup=st.integers(0, 3),
       shifts=st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)))
def test_mosaic_bound_keeps_boxes_in_their_quadrant(rows, cut, i_mixup, shifts):
    piece = np.zeros((8, 6), F32)
    piece[:len(rows), :4] = rows
    piece[:len(rows), 4] = 1
    acc = np.zeros((8, 6), F32)
    cut_x, cut_y = cut
    blend_truth_mosaic(acc, piece, 100, 100, cut_x, cut_y, i_mixup, shifts, mosaic_bound=True)
    k = int((acc[:, 0] != 0).sum())
    assert not acc[k:].any()
    x0, x1 = (cut_x, 100) if i_mixup in (1, 3) else (0, cut_x)
    y0, y1 = (cut_y, 100) if i_mixup in (2, 3) else (0, cut_y)
    x, y, w, h = acc[:k, :4].T * 100
    eps = 1e-3
    assert ((x - w / 2 >= x0 - eps) & (x + w / 2 <= x1 + eps) & (y - h / 2 >= y0 - eps) & (y + h / 2 <= y1 + eps)).all()
