"""ONNX export (darknet_py/outputs/export.py): onnxruntime and OpenCV 5 run the exports with
darknet_py's outputs, and `postprocess` gives get_network_boxes' boxes before NMS.

Every forward fixture is exported once, at its own size with its own weights, with both
predict_raw's outputs and the decoded boxes (raw=True, postprocess=True: the same graph
as either alone, plus the other's outputs), so that each export serves every test here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import cv2  # noqa: E402

from darknet_py.cli import main  # noqa: E402
from darknet_py.outputs.detections import network_boxes  # noqa: E402
from darknet_py.outputs.export import DECODED_TYPES, output_indices  # noqa: E402
from darknet_py.network import build_network  # noqa: E402

FORWARD = Path(__file__).parent / "data" / "forward"
CFG = Path(__file__).resolve().parent.parent / "cfg"
CASES = sorted(p.name for p in FORWARD.iterdir() if p.is_dir() and p.name != "inputs")
DETECTORS = [c for c in CASES if any(f"[{t}]" in (FORWARD / c / f"{c}.cfg").read_text() for t in DECODED_TYPES)]
# stock cfgs that no forward fixture is a resized copy of, at small sizes (multiples of their
# largest stride: the export's cost is per layer, not per pixel), with make_weights' values
# at a gain that keeps them alive and finite (yolov4x-mish at 1.4: mish inputs reach 1.8e3,
# its outputs span -0.5..1.5; the export before the Mish op was 1.76 off in OpenCV there):
# name -> (size, gain)
STOCK = {"yolov4x-mish": (160, 1.4), "yolov7": (160, 1.8), "yolov4-p5": (128, 1.35), "yolov4-p6": (128, 1.35)}
# torch's exporter takes ~40 ms a layer plus the weights' copies (yolov4-p6: 306 layers, 128M
# weights, ~25 s here): these three run with DARKNET_SLOW_TESTS=1. Their layer types are the
# fixtures' and yolov4x-mish's; their activations too (yolov7's swish: sigmoid and mul).
SLOW_STOCK = ("yolov7", "yolov4-p5", "yolov4-p6")
THRESH = 0.25


@dataclass
class Exported:
    x: np.ndarray  # the input (3, S, S)
    path: Path  # the ONNX file: predict_raw's outputs, then (detectors) the boxes
    want: dict  # output name -> darknet_py's value: predict_raw's (flat), or for "boxes"
    #             get_network_boxes' Detections before NMS (relative, no letterbox)
    _ort: dict | None = None

    def run_ort(self):
        if self._ort is None:
            s = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._ort = dict(zip(self.want, s.run(None, {"input": self.x[None]})))
        return self._ort

    def run_opencv(self):
        cv = cv2.dnn.readNetFromONNX(str(self.path))
        cv.setInput(self.x[None])
        return dict(zip(self.want, cv.forward(list(self.want))))

    def raw_errors(self, got: dict) -> dict:
        return {n: float(np.abs(got[n].reshape(-1) - v).max()) for n, v in self.want.items() if n != "boxes"}


def _export(net, x, path, boxes: bool = True) -> Exported:
    """Export net (raw outputs and, for a detector, the boxes) and keep what darknet_py
    computes for x; predict_raw, plus the layer export puts in place of a last [cost]
    (the network keeps that output: Network.output_index)."""
    boxes = boxes and any(l.type_name in DECODED_TYPES for l in net.layers)
    names = net.export_onnx(path, raw=True, postprocess=boxes, thresh=THRESH)
    raw = net.predict_raw(x)
    missing = [i for i in output_indices(net) if i not in raw]
    if missing:
        with torch.inference_mode():
            out = net(torch.from_numpy(x)[None])
        raw.update({i: out[i][0].reshape(-1).numpy() for i in missing})
    want = {n: raw[i] for n, i in zip(names, output_indices(net))}
    if boxes:
        size = x.shape[1]
        want["boxes"] = network_boxes(net, raw, THRESH, 0.5, size, size)[0]
    return Exported(x, path, want)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, forward_case, make_weights):
    """name -> Exported: a forward fixture, or a stock cfg of STOCK."""
    cache = {}

    def get(name):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            if name in STOCK:
                size, gain = STOCK[name]
                net = build_network(CFG / f"{name}.cfg", batch=1, width=size, height=size, quiet=True)
                (tmp / "summary.json").write_text(json.dumps({"layers": net.summary()}))
                net.load_weights(make_weights(tmp / "summary.json", 1, gain, tmp / "w.weights"), verbose=False)
                net.eval().fuse(pack=False)  # predict_raw with F.conv2d: no oneDNN packing of ~100M weights
                dog = FORWARD / "inputs" / f"dog_{size}x{size}.f32"
                x = (np.fromfile(dog, dtype="<f4") if dog.exists()
                     else np.random.default_rng(0).random(3 * size * size, dtype=np.float32)).reshape(3, size, size)
            else:
                _, _, net, x = forward_case(name)
            # the stock cfgs' boxes: the fixtures test the decoding of the same layer types
            cache[name] = _export(net, x, tmp / f"{name}.onnx", boxes=name not in STOCK)
        return cache[name]

    return get


# onnxruntime and darknet_py sum the convolutions in different orders: float32 rounding that
# grows with the network's activations. Measured max |ort - predict_raw|: below 4e-5 on 14
# fixtures (outputs below 15); 1.0e-4, 1.0e-4 and 1.12e-4 on Gaussian_yolov3_BDD, yolov3-spp
# and yolov3, whose first yolo layer's raw tw/th reach 43, 40 and 24 (darknet_py's own output
# is 1.5e-4 from upstream's there); |ort - predict_raw| / max(1, |value|) at most 6.6e-5
# everywhere. Hence 1e-4, relative to the value where that is above 1.
ORT_TOL = 1e-4


@pytest.mark.parametrize("name", CASES + sorted(STOCK))
def test_onnxruntime_matches_predict_raw(name, exported):
    if name in SLOW_STOCK and not os.environ.get("DARKNET_SLOW_TESTS"):
        pytest.skip("a slow export (set DARKNET_SLOW_TESTS=1)")
    e = exported(name)
    got = e.run_ort()
    for n, want in e.want.items():
        if n != "boxes":
            err = np.abs(got[n].reshape(-1) - want) / np.maximum(1, np.abs(want))
            assert err.max() <= ORT_TOL, f"{n}: {err.max():.3g} at value {want[err.argmax()]:.4g}"


@pytest.mark.parametrize("name", DETECTORS)
def test_postprocess_boxes_are_get_network_boxes_before_nms(name, exported):
    e = exported(name)
    rows, dets = e.run_ort()["boxes"][0], e.want["boxes"]  # (B, 5 + classes), Detections
    kept = rows[rows[:, 4] > THRESH]
    assert len(kept) == len(dets)
    np.testing.assert_allclose(kept[:, :2], dets.boxes[:, :2], atol=1e-4)
    # w, h = exp(t) * anchor: raw t 1e-4 apart give sizes 1e-4 apart relative to themselves
    np.testing.assert_allclose(kept[:, 2:4], dets.boxes[:, 2:4], rtol=2e-4)
    np.testing.assert_allclose(kept[:, 4], dets.objectness, atol=1e-4)
    np.testing.assert_allclose(kept[:, 5:], dets.probs, atol=1e-4)


# measured: at most 6e-5 (yolov3-spp), 7.8e-5 on yolov4x-mish; 1e-3 is the bound
@pytest.mark.parametrize("name", CASES + ["yolov4x-mish"])
def test_opencv_matches_predict_raw(name, exported):
    e = exported(name)
    errs = e.raw_errors(e.run_opencv())
    assert max(errs.values()) < 1e-3, errs


MISH_CFG = """[net]
width=8
height=8
channels=1

[convolutional]
filters=1
size=1
activation=mish
"""


def test_mish_above_20_survives_opencv(tmp_path):
    """OpenCV fused darknet_py's clamped mish (Clip, Exp, Add, Log, Tanh, Mul) into its Mish
    layer fed by the Clip: mish(min(x, 20)), so every activation above 20 came out 20 (what
    made yolov4x-mish 1.76 off). The export's Mish op gives x there."""
    (tmp_path / "mish.cfg").write_text(MISH_CFG)
    net = build_network(tmp_path / "mish.cfg", batch=1, quiet=True)
    with torch.no_grad():
        net.layers[0].weights.fill_(200.0)  # input [0, 1] -> [-100, 100]
        net.layers[0].biases.fill_(-100.0)
    net.eval().fuse()
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    e = _export(net, x, tmp_path / "mish.onnx")
    want = e.want["layer000_convolutional"]
    assert want.max() > 99
    for got in (e.run_ort(), e.run_opencv()):
        np.testing.assert_allclose(got["layer000_convolutional"].reshape(-1), want, atol=1e-4, rtol=1e-6)


TINY_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


@pytest.fixture()
def tiny(tmp_path):
    """A three-layer yolo network (cfg, weights) with random values."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    net = build_network(cfg, batch=1, quiet=True).initialize(3)
    with torch.no_grad():
        net.layers[0].rolling_variance.fill_(1.0)
    net.save_weights(tmp_path / "tiny.weights")
    return cfg, tmp_path / "tiny.weights"


def test_cli_export_batch_size_and_outputs(tiny, tmp_path, capsys):
    cfg, weights = tiny
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(cfg), str(weights), str(out), "-width", "96", "-height", "96", "-batch", "2"]) == 0
    assert "Saved" in capsys.readouterr().out
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].shape == [2, 3, 96, 96]
    assert [o.name for o in s.get_outputs()] == ["layer002_yolo"]
    net = build_network(cfg, batch=1, width=96, height=96, quiet=True)
    net.load_weights(weights, verbose=False)
    net.eval()
    x = np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32)
    got = s.run(None, {"input": x})[0]
    for k in range(2):
        np.testing.assert_allclose(got[k], net.predict_raw(x[k])[2], atol=1e-5)


def test_cli_export_dynamic_postprocess(tiny, tmp_path):
    cfg, weights = tiny
    out = tmp_path / "boxes.onnx"
    assert main(["export", "-dynamic", str(cfg), str(weights), str(out), "-postprocess", "-thresh", "0.1"]) == 0
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in s.get_outputs()] == ["boxes"]
    x = np.random.default_rng(2).random((3, 3, 64, 64), dtype=np.float32)
    rows = s.run(None, {"input": x})[0]
    assert rows.shape == (3, 32 * 32 * 3, 5 + 2)
    net = build_network(cfg, batch=1, quiet=True)
    net.load_weights(weights, verbose=False)
    net.eval()
    for k in range(3):
        dets, _, _, _ = network_boxes(net, net.predict_raw(x[k]), 0.1, 0.5, 64, 64)
        kept = rows[k][rows[k][:, 4] > 0.1]
        assert len(kept) == len(dets) > 0
        np.testing.assert_allclose(kept[:, :4], dets.boxes, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(kept[:, 5:], dets.probs, atol=1e-6)


def test_cli_export_refuses_crnn_naming_the_line(tmp_path, capsys):
    cfg = tmp_path / "rnn.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\n\n[crnn]\noutput=4\nhidden=4\npad=1\n")
    out = tmp_path / "rnn.onnx"
    out.write_bytes(b"the user's file")
    assert main(["export", str(cfg), "", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}:6:" in err and "[crnn]" in err and "cannot be exported to ONNX" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"the user's file"
    assert not list(tmp_path.glob("rnn.onnx.*"))  # no temporary file left beside it


def test_cli_export_usage(capsys):
    assert main(["export", "only.cfg"]) == 2
    assert "usage: darknet.py export CFG WEIGHTS OUT.onnx" in capsys.readouterr().err
