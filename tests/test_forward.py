"""Inference parity with upstream darknet: every forward case of the parity fixtures.

Weights are regenerated with the fixtures' own generator (tests/data/make_weights.py), the
input is upstream's resized dog image, and every yolo/region/last layer output must match
upstream's l.output within 1e-3; the detections after NMS must be upstream's dets.txt.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import darknet_py

FORWARD = Path(__file__).parent / "data" / "forward"
CASES = sorted(p.name for p in FORWARD.iterdir() if p.is_dir() and p.name != "inputs")


def _case(name, tmp_path_factory, make_weights):
    d = FORWARD / name
    meta = json.loads((d / "meta.json").read_text())
    w = tmp_path_factory.mktemp(name) / "w.weights"
    make_weights(d / "summary.json", meta["seed"], meta["gain"], w)
    net = darknet_py.load_network(d / meta["cfg"], w)
    x = np.fromfile(FORWARD / meta["input"], dtype="<f4").reshape(3, meta["size"], meta["size"])
    return d, meta, net, x


def read_dets(path):
    out = []
    for line in Path(path).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split()
        probs = {int(k): float(v) for k, v in (t.split(":") for t in f[5:])}
        out.append(([float(v) for v in f[:4]], float(f[4]), probs))
    return out


def _size_close(got, want, tol):
    # w and h are exp(t) * anchor: the README's 1e-3 on layer outputs (t) is a 1e-3 on
    # log(w), log(h). Random-weight cases give boxes as large as h = 1.7e8 (t ~ 19), where
    # float32 rounding alone (upstream's own output is 8e-5 from a float64 forward) moves
    # h by ~1e-4 of itself, far above 1e-3 absolute.
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.abs(np.log(got) - np.log(want)) <= tol
    return (np.abs(got - want) <= tol) | ((got > 0) & (want > 0) & logs)


def match_dets(got, expected, tol=1e-3):
    """Match as sets: every expected box has a distinct got box with equal values
    (the first free one in got's order)."""
    assert len(got) == len(expected), f"{len(got)} boxes, upstream kept {len(expected)}"
    boxes = np.array([[g["x"], g["y"], g["w"], g["h"]] for g in got], dtype=np.float64).reshape(-1, 4)
    obj = np.array([g["objectness"] for g in got], dtype=np.float64)
    free = np.ones(len(got), dtype=bool)
    for box, o, probs in expected:
        box = np.asarray(box, dtype=np.float64)
        near = (free & (np.abs(boxes[:, :2] - box[:2]) <= tol).all(1)
                & _size_close(boxes[:, 2:], box[2:], tol).all(1) & (np.abs(obj - o) < tol))
        for j in np.flatnonzero(near):
            g = got[j]["probs"]
            if set(g) == set(probs) and all(abs(g[k] - v) < tol for k, v in probs.items()):
                free[j] = False
                break
        else:
            raise AssertionError(f"upstream box {box.tolist()} obj {o} {probs} not found")


# Random-weight cases whose upstream detections hang on float32 rounding: with 1500 boxes
# near thresh=0.25, a class prob 1e-7 above the threshold (upstream prints 0.2500001) and two
# boxes' probs 9e-7 apart decide the kept set. Float32 forwards that differ only in summation
# order land on either side of it (F.conv2d with unfolded batch norm and mish's tanh form
# keeps upstream's set; the packed convolutions with folded batch norm do not), while a
# float64 forward gives upstream's set exactly (checked below for every case). yolov3-spp is
# as close (it holds with folded batch norm, not with unfolded) and passes here.
ROUNDING_EDGE = {"yolov4-csp-s-mish"}


def _exact_detections(net, x, meta):
    """detect() on a float64 forward of the same network: the decisions exact arithmetic makes."""
    from darknet_py.detections import apply_nms, network_boxes
    import torch
    for layer in net.layers:
        if hasattr(layer, "unfuse"):
            layer.unfuse()
    net.double()
    with torch.inference_mode():
        outs = net(torch.from_numpy(x).double()[None])
    raw = {i: outs[i][0].contiguous().reshape(-1).numpy() for i in net.output_indices()}
    size = meta["size"]
    dets, kind, beta, classes = network_boxes(net, raw, meta["thresh"], 0.5, size, size, False)
    return apply_nms(dets, classes, meta["nms"], kind, beta).to_dicts(meta["thresh"])


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_upstream(name, tmp_path_factory, make_weights):
    d, meta, net, x = _case(name, tmp_path_factory, make_weights)
    out = net.predict_raw(x)
    files = sorted(d.glob("layer*.f32"))
    assert files
    for f in files:
        idx = int(f.name[5:8])
        ref = np.fromfile(f, dtype="<f4")
        assert idx in out, f"layer {idx} output missing"
        assert out[idx].shape == ref.shape
        err = float(np.abs(out[idx] - ref).max())
        assert err < 1e-3, f"layer {idx}: max abs error {err}"
    if not (d / "dets.txt").exists():
        return
    expected = read_dets(d / "dets.txt")
    dets = net.detect(x, thresh=meta["thresh"], nms=meta["nms"])
    try:
        match_dets(dets, expected)
        float32_error = None
    except AssertionError as e:
        float32_error = e
    match_dets(_exact_detections(net, x, meta), expected)
    if float32_error is not None:
        if name in ROUNDING_EDGE:
            pytest.xfail(f"float32 rounding decides this case's kept set: {float32_error}")
        raise float32_error
