"""Tests for darknet_py.box (upstream src/box.c)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from darknet_py.box import (
    box_ciou,
    box_ciou_pairwise,
    box_diou,
    box_diou_pairwise,
    box_diounms,
    box_giou,
    box_giou_pairwise,
    box_intersection,
    box_iou,
    box_iou_kind,
    box_iou_kind_pairwise,
    box_iou_pairwise,
    box_union,
    xywh_to_xyxy,
    xyxy_to_xywh,
)

# Boxes are x, y, w, h (centre).
A = np.array([
    [0, 0, 2, 2],    # a0: [-1,1] x [-1,1], area 4
    [1, 1, 2, 2],    # a1: [0,2] x [0,2], area 4
    [5, 5, 1, 1],    # a2: [4.5,5.5]^2, area 1
], np.float32)
B = np.array([
    [0, 0, 2, 2],    # b0: same as a0
    [1, 0, 2, 2],    # b1: [0,2] x [-1,1]
    [0, 0, 4, 4],    # b2: [-2,2]^2, area 16
    [10, 10, 2, 2],  # b3: far away
], np.float32)

# a0-b0: I=4, U=4        -> 1
# a0-b1: I=1*2=2, U=4+4-2=6 -> 1/3
# a0-b2: I=4, U=16       -> 1/4
# a1-b0: I=[0,1]x[0,1]=1, U=7 -> 1/7
# a1-b1: I=[0,2]x[0,1]=2, U=6 -> 1/3
# a1-b2: I=[0,2]x[0,2]=4, U=4+16-4=16 -> 1/4
# a2-*: no overlap       -> 0; *-b3: no overlap -> 0
IOU_3x4 = np.array([
    [1, 1 / 3, 1 / 4, 0],
    [1 / 7, 1 / 3, 1 / 4, 0],
    [0, 0, 0, 0],
], np.float32)


def test_iou_matrix_by_hand():
    got = box_iou_pairwise(A, B)
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, IOU_3x4, rtol=1e-6, atol=1e-7)
    # broadcasting form equals the pairwise one, and the torch one too
    np.testing.assert_array_equal(box_iou(A[:, None], B[None]), got)
    t = box_iou_pairwise(torch.from_numpy(A), torch.from_numpy(B))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), IOU_3x4, rtol=1e-6, atol=1e-7)


def test_intersection_union():
    assert box_intersection(A[0], B[1]) == 2
    assert box_union(A[0], B[1]) == 6
    assert box_intersection(A[2], B[0]) == 0


def test_degenerate_cases_follow_upstream():
    # touching boxes: overlap width 0 -> I = 0 -> iou 0
    assert box_iou([0, 0, 2, 2], [2, 0, 2, 2]) == 0
    # zero-area boxes: I == 0 -> 0 (no division by zero)
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0
    # c == 0 (both boxes a single point): giou/diou/ciou fall back to iou = 0
    assert box_giou([1, 1, 0, 0], [1, 1, 0, 0]) == 0
    assert box_diou([1, 1, 0, 0], [1, 1, 0, 0]) == 0
    # ciou divides by h: upstream's check `c == 0` comes first, so still 0 here
    with np.errstate(divide="ignore", invalid="ignore"):
        assert box_ciou([1, 1, 0, 0], [1, 1, 0, 0]) == 0


def test_giou_by_hand():
    # a0-b1: enclosing box [-1,2]x[-1,1], area 6 = U -> giou = iou = 1/3
    assert box_giou(A[0], B[1]) == pytest.approx(1 / 3, rel=1e-6)
    # a0-b3: enclosing [-1,11]^2 = 144, U = 8 -> 0 - 136/144
    assert box_giou(A[0], B[3]) == pytest.approx(-136 / 144, rel=1e-6)
    np.testing.assert_allclose(box_giou_pairwise(A, B)[0, [1, 3]], [1 / 3, -136 / 144], rtol=1e-6)


def test_diou_uses_upstreams_exponent():
    # a0-b1: enclosing 3 x 2 -> c = 9 + 4 = 13, centre distance^2 d = 1
    # upstream box_diou: iou - (d/c)^0.6 ; box_diounms: iou - (d/c)^beta
    assert box_diou(A[0], B[1]) == pytest.approx(1 / 3 - (1 / 13) ** 0.6, rel=1e-6)
    assert box_diounms(A[0], B[1], 1.0) == pytest.approx(1 / 3 - 1 / 13, rel=1e-6)
    assert box_diounms(A[0], B[1], 0.6) == box_diou(A[0], B[1])
    np.testing.assert_allclose(box_diou_pairwise(A, B)[0, 1], 1 / 3 - (1 / 13) ** 0.6, rtol=1e-6)


def test_ciou_by_hand():
    # same aspect ratio: ar_loss = 0 -> ciou = iou - d/c (no exponent in upstream's ciou)
    assert box_ciou(A[0], B[1]) == pytest.approx(1 / 3 - 1 / 13, rel=1e-6)
    # pred a = [-1,1]x[-1,1] (ar 1), truth b = (0,0,2,4) = [-1,1]x[-2,2] (ar 0.5)
    # I = 4, U = 8 -> iou 0.5 ; same centre -> d = 0
    iou = 0.5
    ar_loss = 4 / math.pi ** 2 * (math.atan(0.5) - math.atan(1.0)) ** 2   # = 0.0419564...
    alpha = ar_loss / (1 - iou + ar_loss + 0.000001)                      # = 0.0774168...
    want = iou - alpha * ar_loss                                          # = 0.496752...
    got = box_ciou(np.float32([0, 0, 2, 2]), np.float32([0, 0, 2, 4]))
    assert got == pytest.approx(want, rel=1e-6)
    assert got == pytest.approx(0.496752, abs=1e-6)
    np.testing.assert_allclose(box_ciou_pairwise(A[:1], np.float32([[0, 0, 2, 4]])), [[want]], rtol=1e-6)


def test_iou_kind_names():
    a, b = np.float32([0, 0, 2, 2]), np.float32([0, 0, 2, 4])
    assert box_iou_kind(a, b, "iou") == box_iou(a, b)
    assert box_iou_kind(a, b, "MSE") == box_iou(a, b)   # upstream's switch: MSE -> box_iou
    assert box_iou_kind(a, b, "giou") == box_giou(a, b)
    assert box_iou_kind(a, b, "diou") == box_diou(a, b)
    assert box_iou_kind(a, b, "ciou") == box_ciou(a, b)
    # enum values IOU=0, GIOU=1, MSE=2, DIOU=3, CIOU=4
    assert box_iou_kind(a, b, 4) == box_ciou(a, b)
    assert box_iou_kind(a, b, 1) == box_giou(a, b)
    assert box_iou_kind_pairwise(A, B, "giou").shape == (3, 4)
    with pytest.raises(ValueError):
        box_iou_kind(a, b, "eiou")


def test_format_conversion_by_hand():
    np.testing.assert_array_equal(xywh_to_xyxy(np.float32([1, 2, 4, 6])), [-1, -1, 3, 5])
    np.testing.assert_array_equal(xyxy_to_xywh(np.float32([-1, -1, 3, 5])), [1, 2, 4, 6])
    t = xywh_to_xyxy(torch.tensor([[1.0, 2.0, 4.0, 6.0]]))
    assert isinstance(t, torch.Tensor) and t.tolist() == [[-1, -1, 3, 5]]


def test_pairwise_shape_checks():
    with pytest.raises(ValueError):
        box_iou_pairwise(A[0], B)


def test_torch_autograd_flows():
    a = torch.tensor([[0.1, 0.2, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.0, 0.0, 1.5, 1.5]], dtype=torch.float64)
    (1 - box_ciou(a, b)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


# ---------------------------------------------------------------- properties
_coord = st.floats(-10, 10, allow_nan=False, width=64)
_size = st.floats(0.01, 10, allow_nan=False, width=64)
_box = st.tuples(_coord, _coord, _size, _size).map(lambda t: np.array(t, np.float64))
_boxes = st.integers(1, 6).flatmap(
    lambda n: arrays(np.float64, (n, 4), elements=st.floats(0.01, 10, width=64)))


@settings(max_examples=200, deadline=None)
@given(_box, _box)
def test_iou_symmetric_and_bounded(a, b):
    ab, ba = box_iou(a, b), box_iou(b, a)
    assert ab == ba
    assert 0 <= ab <= 1 + 1e-12
    assert box_giou(a, b) <= ab + 1e-12
    assert -1 - 1e-12 <= box_giou(a, b)
    assert box_diou(a, b) <= ab + 1e-12
    assert box_ciou(a, b) <= ab + 1e-12
    assert box_ciou(a, b) == pytest.approx(box_ciou(b, a), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(_box)
def test_iou_with_itself_is_one(a):
    assert box_iou(a, a) == pytest.approx(1, abs=1e-9)
    assert box_giou(a, a) == pytest.approx(1, abs=1e-9)
    assert box_diou(a, a) == pytest.approx(1, abs=1e-9)
    assert box_ciou(a, a) == pytest.approx(1, abs=1e-9)
    f = a.astype(np.float32)
    # float32 (as upstream): (y + h/2) - (y - h/2) != h, so only about 1 (up to ~1e-4 here)
    assert box_iou(f, f) == pytest.approx(1, abs=1e-3)


@settings(max_examples=100, deadline=None)
@given(_box)
def test_xywh_xyxy_round_trip(a):
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(a)), a, rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(_boxes, _boxes)
def test_numpy_and_torch_agree(a, b):
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for fn in (box_iou_pairwise, box_giou_pairwise, box_diou_pairwise, box_ciou_pairwise):
        np.testing.assert_allclose(fn(ta, tb).numpy(), fn(a, b), rtol=1e-9, atol=1e-12)
    # float32 too (both libraries compute in float32)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    for fn in (box_iou_pairwise, box_ciou_pairwise):
        got = fn(torch.from_numpy(a32), torch.from_numpy(b32))
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), fn(a32, b32), rtol=1e-5, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(_boxes, _boxes)
def test_pairwise_matches_elementwise(a, b):
    m = box_iou_pairwise(a, b)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            assert m[i, j] == box_iou(a[i], b[j])
