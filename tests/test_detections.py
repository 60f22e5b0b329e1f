"""Tests for darknet_py.outputs.detections (upstream get_network_boxes + NMS)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darknet_py.box import box_diou, box_iou
from darknet_py.outputs.detections import (
    Detections,
    correct_yolo_boxes,
    detection_detections,
    diounms_sort,
    do_nms_sort,
    gaussian_yolo_detections,
    nms,
    nms_obj,
    region_detections,
    yolo_detections,
)

F = np.float32


def logit(p):
    return math.log(p / (1 - p))


# =================================================================== [yolo] by hand
def _yolo_2x2():
    """n=2 anchors, classes=2, 2x2 grid: l.output[anchor, channel, row, col] with
    channels x, y, w, h, obj, c0, c1; logistic already applied to x, y, obj, classes."""
    out = np.zeros((2, 7, 2, 2), F)
    out[:, 4] = 0.1                     # objectness below thresh everywhere ...
    # ... but anchor 0 at (row 0, col 1)
    out[0, :, 0, 1] = [0.5, 0.25, 0.0, math.log(2.0), 0.9, 0.5, 0.2]
    # ... and anchor 1 at (row 1, col 0)
    out[1, :, 1, 0] = [0.0, 1.0, math.log(0.5), 0.0, 0.3, 0.9, 0.95]
    return out


YOLO_KW = dict(w=2, h=2, n=2, classes=2, anchors=[10, 20, 30, 40, 50, 60], mask=[1, 2],
               netw=100, neth=100, imw=100, imh=100, thresh=0.25)


def test_yolo_two_anchor_2x2_by_hand():
    d = yolo_detections(_yolo_2x2().ravel(), **YOLO_KW)
    assert len(d) == 2 and d.uc is None
    # cell-major order: cell 1 (row 0, col 1) before cell 2 (row 1, col 0)
    # det 0: anchor mask[0]=1 -> (30, 40): x=(1+.5)/2, y=(0+.25)/2, w=e^0*30/100, h=2*40/100
    # det 1: anchor mask[1]=2 -> (50, 60): x=(0+0)/2, y=(1+1)/2, w=.5*50/100, h=1*60/100
    np.testing.assert_allclose(d.boxes, [[0.75, 0.125, 0.3, 0.8], [0.0, 1.0, 0.25, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(d.objectness, [0.9, 0.3], rtol=1e-6)
    # probs = obj*class if > .25: .9*.5=.45, .9*.2=.18 -> 0 ; .3*.9=.27, .3*.95=.285
    np.testing.assert_allclose(d.probs, [[0.45, 0.0], [0.27, 0.285]], rtol=1e-6)
    assert d.boxes.dtype == np.float32 and d.probs.dtype == np.float32


def test_yolo_new_coords_by_hand():
    out = _yolo_2x2()
    out[0, 2:4, 0, 1] = [0.5, 0.25]   # new_coords: w = tw^2*4*anchor/netw
    d = yolo_detections(out.ravel(), **YOLO_KW, new_coords=True)
    np.testing.assert_allclose(d.boxes[0], [0.75, 0.125, 0.25 * 4 * 30 / 100, 0.0625 * 4 * 40 / 100],
                               rtol=1e-6)


def test_yolo_letterbox_and_pixels():
    # image 200x100 into a 100x100 net: netw/imw = .5 < neth/imh = 1 -> new_w=100, new_h=50
    # x unchanged, y = (y - (100-50)/2/100) / .5, h /= .5 ; then pixels: *200 / *100
    kw = dict(YOLO_KW, imw=200, imh=100)
    d = yolo_detections(_yolo_2x2().ravel(), **kw, letter=True)
    np.testing.assert_allclose(d.boxes[0], [0.75, (0.125 - 0.25) * 2, 0.3, 1.6], rtol=1e-6)
    p = yolo_detections(_yolo_2x2().ravel(), **kw, letter=True, relative=False)
    np.testing.assert_allclose(p.boxes[0], [150, -25, 60, 160], rtol=1e-6)
    # without letterbox the relative boxes are unchanged
    q = yolo_detections(_yolo_2x2().ravel(), **kw)
    np.testing.assert_allclose(q.boxes[0], [0.75, 0.125, 0.3, 0.8], rtol=1e-6)
    np.testing.assert_allclose(correct_yolo_boxes(q.boxes, imw=200, imh=100, netw=100, neth=100,
                                                  relative=False)[0], [150, 12.5, 60, 80], rtol=1e-6)


def test_yolo_rejects_wrong_size():
    with pytest.raises(ValueError):
        yolo_detections(np.zeros(10, F), **YOLO_KW)


# =================================================================== [Gaussian_yolo] by hand
def test_gaussian_yolo_by_hand():
    # n=1, classes=1, 1x2 grid (h=1, w=2): channels mu_x, s_x, mu_y, s_y, mu_w, s_w, mu_h, s_h, obj, c0
    out = np.zeros((1, 10, 1, 2), F)
    out[0, 8] = [0.1, 0.8]                        # only col 1 passes thresh .25
    out[0, :, 0, 1] = [0.5, 0.1, 0.5, 0.2, 0.0, 0.3, math.log(2), 0.4, 0.8, 0.9]
    d = gaussian_yolo_detections(out.ravel(), w=2, h=1, n=1, classes=1, anchors=[1, 1, 20, 40],
                                 mask=[1], netw=80, neth=80, imw=80, imh=80, thresh=0.25)
    assert len(d) == 1
    # x=(1+.5)/2, y=(0+.5)/1, w=e^0*20/80, h=2*40/80
    np.testing.assert_allclose(d.boxes, [[0.75, 0.5, 0.25, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(d.uc, [[0.1, 0.2, 0.3, 0.4]], rtol=1e-6)
    # prob = obj*class*(1 - mean(uc)) = .8*.9*(1-.25) = .54
    np.testing.assert_allclose(d.probs, [[0.54]], rtol=1e-6)
    lt = gaussian_yolo_detections(out.ravel(), w=2, h=1, n=1, classes=1, anchors=[1, 1, 20, 40],
                                  mask=[1], netw=80, neth=80, imw=80, imh=80, thresh=0.25,
                                  yolo_point="left_top")
    np.testing.assert_allclose(lt.boxes, [[0.75 + 0.125, 0.5 + 0.5, 0.25, 1.0]], rtol=1e-6)


# =================================================================== [region] by hand
def test_region_by_hand():
    # 2x1 grid (w=2, h=1), n=1, classes=2, coords=4; CPU layout: per cell, per anchor
    # x, y, w, h (raw), obj (logistic applied), classes (softmaxed)
    out = np.array([
        logit(0.5), logit(0.25), 0.0, math.log(2), 0.5, 0.6, 0.4,     # cell 0
        logit(0.75), logit(0.5), math.log(0.5), 0.0, 0.2, 0.5, 0.5,   # cell 1
    ], F)
    d = region_detections(out, w=2, h=1, n=1, classes=2, coords=4, anchors=[1.5, 0.5],
                          netw=64, neth=64, imw=64, imh=64, thresh=0.25)
    assert len(d) == 2                       # all w*h*n boxes, objectness 1
    np.testing.assert_array_equal(d.objectness, [1, 1])
    # x=(col+sig(tx))/w, y=(row+sig(ty))/h, w=e^tw*1.5/2, h=e^th*.5/1
    np.testing.assert_allclose(d.boxes, [[0.25, 0.25, 0.75, 1.0], [0.875, 0.5, 0.375, 0.5]], rtol=1e-6)
    # prob = obj*class > .25: .3, .2->0 ; .1, .1 -> 0
    np.testing.assert_allclose(d.probs, [[0.3, 0.0], [0.0, 0.0]], rtol=1e-6)
    with pytest.raises(NotImplementedError):
        region_detections(out, w=2, h=1, n=1, classes=2, coords=4, anchors=[1.5, 0.5], netw=64,
                          neth=64, imw=64, imh=64, thresh=0.25, softmax_tree=object())


def test_region_get_region_detections_path():
    # anchor-major layout (entry_index): [anchor][entry][cell], 2 cells, 1 anchor
    out = np.array([[logit(0.5), logit(0.75)], [logit(0.25), logit(0.5)],
                    [0.0, math.log(0.5)], [math.log(2), 0.0],
                    [0.5, 0.2], [0.6, 0.5], [0.4, 0.5]], F).ravel()
    d = region_detections(out, w=2, h=1, n=1, classes=2, coords=4, anchors=[1.5, 0.5],
                          netw=64, neth=64, imw=64, imh=64, thresh=0.25,
                          path="get_region_detections")
    np.testing.assert_allclose(d.boxes, [[0.25, 0.25, 0.75, 1.0], [0.875, 0.5, 0.375, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(d.objectness, [0.5, 0.0])    # scale > thresh ? scale : 0
    np.testing.assert_allclose(d.probs, [[0.3, 0.0], [0.0, 0.0]], rtol=1e-6)


# =================================================================== [detection] by hand
def test_detection_layer_by_hand():
    # side=1, n=2, classes=2: [class probs][2 confidences][2 boxes x 4]
    out = np.array([0.7, 0.3, 0.5, 0.2, 0.5, 0.5, 0.4, 0.6, 0.25, 0.5, 0.1, 0.2], F)
    d = detection_detections(out, side=1, n=2, classes=2, sqrt=True, imw=100, imh=50, thresh=0.1)
    # pixels: x=(.5+0)/1*100, y=.5*50, w=.4^2*100, h=.6^2*50 ; x=25, y=25, w=1, h=2
    np.testing.assert_allclose(d.boxes, [[50, 25, 16, 18], [25, 25, 1, 2]], rtol=1e-5)
    np.testing.assert_allclose(d.objectness, [0.5, 0.2])
    # prob = conf*class > .1: .35, .15 ; .14, .06 -> 0
    np.testing.assert_allclose(d.probs, [[0.35, 0.15], [0.14, 0.0]], rtol=1e-6)


# =================================================================== Detections
def test_detections_container():
    a = Detections([[0, 0, 1, 1]], [0.9], [[0.5, 0.1]])
    b = Detections([[1, 1, 1, 1], [2, 2, 1, 1]], [0.8, 0.7], [[0.0, 0.6], [0.2, 0.0]])
    c = Detections.concat([a, b])
    assert len(c) == 3 and c.classes == 2 and c.boxes.dtype == np.float32
    assert len(Detections.concat([], classes=3)) == 0
    dicts = c.to_dicts(0.25)
    assert [sorted(d["probs"]) for d in dicts] == [[0], [1]]      # third box has nothing > .25
    assert dicts[1] == {"x": 1.0, "y": 1.0, "w": 1.0, "h": 1.0,
                        "objectness": pytest.approx(0.8), "probs": {1: pytest.approx(0.6)}}
    assert len(c.to_dicts(0.25, keep_empty=True)) == 3
    assert len(c.kept(0.25)) == 2


# =================================================================== NMS by hand
def _pair(prob_a, prob_b):
    # a0 = [-1,1]^2 and b1 = [0,2]x[-1,1]: iou = 1/3, diou = 1/3 - (1/13)^.6 = 0.118
    return Detections([[0, 0, 2, 2], [1, 0, 2, 2]], [1, 1], [[prob_a], [prob_b]])


def test_nms_kinds_by_hand():
    d = _pair(0.9, 0.8)
    assert nms(d, 1, 0.3, "default").probs[:, 0].tolist() == pytest.approx([0.9, 0.0])
    assert nms(d, 1, 0.3, "cornersnms").probs[:, 0].tolist() == pytest.approx([0.9, 0.0])
    # greedynms thresholds box_diou (0.118) -> nothing suppressed at .3
    assert nms(d, 1, 0.3, "greedynms").probs[:, 0].tolist() == pytest.approx([0.9, 0.8])
    assert nms(d, 1, 0.1, "greedynms").probs[:, 0].tolist() == pytest.approx([0.9, 0.0])
    # diounms: iou - (d/c)^beta: beta 1 -> .256 (kept at .3), beta 2 -> .327 (suppressed)
    assert nms(d, 1, 0.3, "diounms", beta=1.0).probs[:, 0].tolist() == pytest.approx([0.9, 0.8])
    assert nms(d, 1, 0.3, "diounms", beta=2.0).probs[:, 0].tolist() == pytest.approx([0.9, 0.0])
    assert nms(d, 1, 0.3, 2, beta=2.0).probs[:, 0].tolist() == pytest.approx([0.9, 0.0])
    # the higher prob wins whatever the order
    assert nms(_pair(0.5, 0.8), 1, 0.3).probs[:, 0].tolist() == pytest.approx([0.0, 0.8])
    # do_nms_sort / diounms_sort spellings
    np.testing.assert_array_equal(do_nms_sort(d, 1, 0.3).probs, nms(d, 1, 0.3).probs)
    np.testing.assert_array_equal(diounms_sort(d, 1, 0.1, "greedynms").probs,
                                  nms(d, 1, 0.1, "greedynms").probs)
    # input is not modified
    assert d.probs[:, 0].tolist() == pytest.approx([0.9, 0.8])
    with pytest.raises(ValueError):
        nms(d, 1, 0.3, "softnms")


def test_nms_chain_and_objectness_zero():
    # three boxes in a row, each overlapping the next by iou 1/3: the best (middle)
    # suppresses both neighbours ; a box with objectness 0 takes no part at all
    d = Detections([[0, 0, 2, 2], [1, 0, 2, 2], [2, 0, 2, 2], [1, 0, 2, 2]],
                   [1, 1, 1, 0], [[0.5], [0.9], [0.6], [0.95]])
    r = nms(d, 1, 0.3)
    assert r.probs[:, 0].tolist() == pytest.approx([0.0, 0.9, 0.0, 0.95])
    # a suppressed box does not suppress: 0 (.9) kills 1 (.8), which would have killed 2
    d = Detections([[0, 0, 2, 2], [1, 0, 2, 2], [2, 0, 2, 2]], [1, 1, 1], [[0.9], [0.8], [0.7]])
    assert nms(d, 1, 0.3).probs[:, 0].tolist() == pytest.approx([0.9, 0.0, 0.7])


def test_nms_ties_resolve_like_upstreams_stable_qsort():
    # class 0 sorts box B before box A; class 1 has an exact tie between A and B, so
    # upstream's (stable, merge-sort) qsort keeps B first and B suppresses A
    d = Detections([[0, 0, 2, 2], [0.1, 0, 2, 2]], [1, 1], [[0.5, 0.7], [0.9, 0.7]])
    r = nms(d, 2, 0.45)
    assert r.probs.tolist() == [[0.0, 0.0], [pytest.approx(0.9), pytest.approx(0.7)]]


def test_nms_classes_limit():
    d = Detections([[0, 0, 2, 2], [0, 0, 2, 2]], [1, 1], [[0.9, 0.9], [0.8, 0.8]])
    r = nms(d, 1, 0.45)
    assert r.probs.tolist() == [[pytest.approx(0.9), pytest.approx(0.9)],
                                [0.0, pytest.approx(0.8)]]


def test_nms_obj_by_hand():
    d = Detections([[0, 0, 2, 2], [0.2, 0, 2, 2], [5, 5, 1, 1], [0, 0, 2, 2]],
                   [0.6, 0.9, 0.5, 0.0], [[0.6, 0.3], [0.9, 0.0], [0.5, 0.5], [0.0, 0.0]])
    r = nms_obj(d, 2, 0.45)
    np.testing.assert_allclose(r.objectness, [0.0, 0.9, 0.5, 0.0])
    np.testing.assert_allclose(r.probs, [[0, 0], [0.9, 0], [0.5, 0.5], [0, 0]])


# =================================================================== NMS properties
_pos = st.floats(0, 4, allow_nan=False, width=32)
_sz = st.floats(0.25, 3, allow_nan=False, width=32)
_prob = st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9]) | st.floats(0.25, 1, width=32)


@st.composite
def _dets(draw):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(1, 3))
    boxes = [[draw(_pos), draw(_pos), draw(_sz), draw(_sz)] for _ in range(n)]
    obj = [draw(st.sampled_from([0.0, 0.5, 1.0])) for _ in range(n)]
    probs = [[draw(_prob) for _ in range(c)] for _ in range(n)]
    return Detections(boxes, obj, probs)


@settings(max_examples=150, deadline=None)
@given(_dets(), st.sampled_from(["default", "greedynms", "diounms", "cornersnms"]),
       st.sampled_from([0.3, 0.45, 0.6]))
def test_nms_idempotent_and_consistent(d, kind, thresh):
    r = nms(d, d.classes, thresh, kind)
    # only zeroes, never changes anything else
    np.testing.assert_array_equal(r.boxes, d.boxes)
    np.testing.assert_array_equal(r.objectness, d.objectness)
    assert np.all((r.probs == d.probs) | (r.probs == 0))
    # boxes with objectness 0 untouched
    np.testing.assert_array_equal(r.probs[d.objectness == 0], d.probs[d.objectness == 0])
    # idempotent
    np.testing.assert_array_equal(nms(r, r.classes, thresh, kind).probs, r.probs)
    # survivors of a class do not overlap beyond thresh (by the kind's measure)
    measure = box_diou if kind == "greedynms" else box_iou
    for k in range(d.classes):
        alive = np.flatnonzero((r.probs[:, k] > 0) & (d.objectness != 0))
        for i in alive:
            for j in alive:
                if i != j and kind != "diounms":
                    assert measure(r.boxes[i], r.boxes[j]) <= np.float32(thresh)
    # nms_obj likewise idempotent
    o = nms_obj(d, d.classes, thresh)
    np.testing.assert_array_equal(nms_obj(o, o.classes, thresh).objectness, o.objectness)


# =================================================================== upstream golden files
DATA = Path(__file__).parent / "data" / "forward"

YOLOV3_ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
CSP_ANCHORS = [12, 16, 19, 36, 40, 28, 36, 75, 76, 55, 72, 146, 142, 110, 192, 243, 459, 401]
BDD_ANCHORS = [7, 10, 14, 24, 27, 43, 32, 97, 57, 64, 92, 109, 73, 175, 141, 178, 144, 291]
V2_TINY_ANCHORS = [0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778,
                   9.77052, 9.16828]

# Read by hand from each case's cfg: (layer file, kind, params); then the NMS kind.
CASES = {
    "yolov4-tiny": ([("layer030_yolo.f32", "yolo", dict(mask=[3, 4, 5], anchors=YOLOV3_ANCHORS, classes=80)),
                     ("layer037_yolo.f32", "yolo", dict(mask=[1, 2, 3], anchors=YOLOV3_ANCHORS, classes=80))],
                    ("greedynms", 0.6)),
    "yolov3-tiny": ([("layer016_yolo.f32", "yolo", dict(mask=[3, 4, 5], anchors=YOLOV3_ANCHORS, classes=80)),
                     ("layer023_yolo.f32", "yolo", dict(mask=[0, 1, 2], anchors=YOLOV3_ANCHORS, classes=80))],
                    ("default", 0.6)),
    "yolov2-tiny": ([("layer015_region.f32", "region", dict(n=5, coords=4, anchors=V2_TINY_ANCHORS, classes=80))],
                    ("default", 0.6)),
    "yolov4-csp": ([("layer144_yolo.f32", "yolo", dict(mask=[0, 1, 2], anchors=CSP_ANCHORS, classes=80, new_coords=True)),
                    ("layer159_yolo.f32", "yolo", dict(mask=[3, 4, 5], anchors=CSP_ANCHORS, classes=80, new_coords=True)),
                    ("layer174_yolo.f32", "yolo", dict(mask=[6, 7, 8], anchors=CSP_ANCHORS, classes=80, new_coords=True))],
                   ("diounms", 0.6)),
    "Gaussian_yolov3_BDD": ([("layer082_Gaussian_yolo.f32", "Gaussian_yolo", dict(mask=[6, 7, 8], anchors=BDD_ANCHORS, classes=10)),
                             ("layer094_Gaussian_yolo.f32", "Gaussian_yolo", dict(mask=[3, 4, 5], anchors=BDD_ANCHORS, classes=10)),
                             ("layer106_Gaussian_yolo.f32", "Gaussian_yolo", dict(mask=[0, 1, 2], anchors=BDD_ANCHORS, classes=10))],
                            ("default", 0.6)),
}


def _cfg_sections(path):
    """Minimal cfg reader, only to cross-check the hand-copied table above."""
    secs = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            secs.append((line.strip("[]"), {}))
        elif "=" in line and secs:
            k, v = line.split("=", 1)
            secs[-1][1][k.strip()] = v.strip()
    return [s for s in secs if s[0] in ("yolo", "region", "Gaussian_yolo")]


def _read_dets_txt(path):
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        t = line.split()
        probs = {int(k): float(v) for k, v in (x.split(":") for x in t[5:])}
        rows.append((np.array([float(x) for x in t[:5]]), probs))
    return rows


def _grid(nfloats, per_cell):
    hw = nfloats // per_cell
    side = int(round(math.sqrt(hw)))
    assert side * side * per_cell == nfloats
    return side


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_get_network_boxes_and_nms(case):
    d = DATA / case
    if not d.is_dir():
        pytest.skip(f"no data for {case}")
    meta = json.loads((d / "meta.json").read_text())
    size, thresh = meta["size"], meta["thresh"]
    layers, (nms_kind, beta) = CASES[case]

    # the table above agrees with the cfg
    secs = _cfg_sections(d / meta["cfg"])
    assert [s[0] for s in secs] == [kind for _, kind, _ in layers]
    for (typ, opts), (_, _, p) in zip(secs, layers):
        assert [float(a) for a in opts["anchors"].split(",")] == pytest.approx(p["anchors"])
        assert int(opts["classes"]) == p["classes"]
        if "mask" in p:
            assert [int(m) for m in opts["mask"].split(",")] == p["mask"]
        assert bool(int(opts.get("new_coords", 0))) == p.get("new_coords", False)
        assert opts.get("nms_kind", "default") == nms_kind

    net = dict(netw=size, neth=size, imw=size, imh=size, thresh=thresh)  # relative=1, letter=0
    parts = []
    for fname, kind, p in layers:
        out = np.fromfile(d / fname, dtype=np.float32)
        if kind == "region":
            s = _grid(out.size, p["n"] * (p["coords"] + 1 + p["classes"]))
            parts.append(region_detections(out, w=s, h=s, **p, **net))
        elif kind == "yolo":
            s = _grid(out.size, len(p["mask"]) * (5 + p["classes"]))
            parts.append(yolo_detections(out, w=s, h=s, n=len(p["mask"]), **p, **net))
        else:
            s = _grid(out.size, len(p["mask"]) * (9 + p["classes"]))
            parts.append(gaussian_yolo_detections(out, w=s, h=s, n=len(p["mask"]), **p, **net))
    dets = Detections.concat(parts)
    got = nms(dets, dets.classes, meta["nms"], nms_kind, beta).to_dicts(thresh)
    want = _read_dets_txt(d / "dets.txt")

    assert len(got) == len(want), (len(got), len(want))
    g = np.array([[x["x"], x["y"], x["w"], x["h"], x["objectness"]] for x in got])
    used = np.zeros(len(got), bool)
    worst = 0.0
    for vals, probs in want:
        # within 1e-3 (relative beyond 1: dets.txt prints 7 significant digits)
        err = (np.abs(g - vals) / np.maximum(1.0, np.abs(vals))).max(axis=1)
        err[used] = np.inf
        j = int(np.argmin(err))
        assert err[j] <= 1e-3, (vals, g[j])
        assert set(got[j]["probs"]) == set(probs), (vals, sorted(got[j]["probs"]), sorted(probs))
        for k, pv in probs.items():
            assert got[j]["probs"][k] == pytest.approx(pv, abs=1e-3)
        used[j] = True
        worst = max(worst, float(err[j]))
    assert used.all()
    assert worst < 1e-5  # in practice ~6e-7: float32 printed with 7 digits
