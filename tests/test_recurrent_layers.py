"""[conv_lstm], [history], [local], [normalization]/[lrn] against upstream darknet's own
outputs (tests/data/recurrent/README.md: how they were made, upstream's commit).

Each case is a small cfg holding these layers, its init.weights and three input frames;
upstream parsed it as its detector does for inference (batch 1, time_steps 1), loaded the
weights, and ran network_predict on the three frames in turn, the recurrent state carried
from one to the next. Checked here: the layer table, the .weights layout (upstream's
save_weights wrote back exactly init.weights, so ours must too), and every layer's output
after every frame.

Tolerance 1e-5 times max(1, the largest |value| of the layer's output): these nets are a few
layers deep with values below 4; the largest difference measured (Intel Xeon, torch 2.13) is
4.8e-7 (f1, f2) and 3.7e-6 on values up to 3.7 (f3, after four frames of state), i.e. float32
rounding. f3 holds what only upstream's CUDA path has (bottleneck=1, lstm_activation other
than tanh); its reference is upstream's CUDA forward transcribed to the CPU (README).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import darknet_py
from darknet_py.cli import main

DATA = Path(__file__).parent / "data" / "recurrent"
CASES = ("f1", "f2", "f3")
TOL = 1e-5
FIELDS = ("type_id", "w", "h", "c", "out_w", "out_h", "out_c", "outputs", "n", "size", "stride", "groups",
          "bn", "activation", "nweights", "inputs")


def _case(name):
    d = DATA / name
    net = darknet_py.load_network(d / f"{name}.cfg", d / "init.weights")
    o = net.options
    frames = np.fromfile(d / "inputs.f32", dtype="<f4").reshape(-1, o.channels, o.height, o.width)
    return d, net, frames


@pytest.mark.parametrize("name", CASES)
def test_summary_matches_upstream(name):
    d, net, _ = _case(name)
    ref = json.loads((d / "upstream" / "summary.json").read_text())["layers"]
    got = net.summary()
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert {k: g[k] for k in FIELDS} == {k: r[k] for k in FIELDS}, r["i"]
        assert abs(g["bflops"] - r["bflops"]) <= 1e-6, r["i"]


@pytest.mark.parametrize("name", CASES)
def test_weights_round_trip_in_upstreams_layout(name, tmp_path):
    d, net, _ = _case(name)
    out = tmp_path / "saved.weights"
    net.save_weights(out)
    assert out.read_bytes() == (d / "init.weights").read_bytes()


@pytest.mark.parametrize("name", CASES)
def test_every_layer_every_frame_matches_upstream(name):
    d, net, frames = _case(name)
    net._keep = set(range(len(net.layers)))  # every layer's output, not only those later layers read
    for t, x in enumerate(frames):
        with torch.inference_mode():
            outs = net(torch.from_numpy(x)[None])
        for i, layer in enumerate(net.layers):
            ref = np.fromfile(d / "upstream" / f"t{t}_layer{i:03d}.f32", dtype="<f4")
            got = outs[i].reshape(-1).float().numpy()
            assert got.shape == ref.shape, (t, i)
            err = float(np.abs(got - ref).max())
            assert err <= TOL * max(1.0, float(np.abs(ref).max())), f"frame {t} layer {i} ({type(layer).__name__}): {err}"


def test_state_carries_and_resets():
    """The second frame differs from a fresh network's answer to it (state carried: the
    check has teeth) and reset_state gives the first frame's output again."""
    d, net, frames = _case("f1")
    a = net.predict_raw(frames[0])
    b = net.predict_raw(frames[1])
    fresh = darknet_py.load_network(d / "f1.cfg", d / "init.weights").predict_raw(frames[1])
    last = len(net.layers) - 1
    assert np.abs(b[last] - fresh[last]).max() > 1e-3
    for layer in net.layers:
        if hasattr(layer, "reset_state"):
            layer.reset_state()
    np.testing.assert_array_equal(net.predict_raw(frames[0])[last], a[last])


def test_history_in_inference_is_the_input_then_zeros():
    net = darknet_py.build_network(DATA / "f1" / "f1.cfg", batch=1)
    h = net.layers[3]
    x = torch.rand(1, h.c, h.h, h.w)
    y = h(x, {})
    assert torch.equal(y[:, :h.c], x) and not y[:, h.c:].any()


def test_history_training_shifts_the_past_in():
    """time_steps=3, history_size=3: step i holds x_i, x_(i-1), x_(i-2); the first steps of
    the first call see zeros, those of the next call the previous call's last steps."""
    cfg = "[net]\nbatch=3\ntime_steps=3\nwidth=2\nheight=2\nchannels=1\n\n[history]\nhistory_size=3\n"
    from darknet_py.cfg import parse_cfg_text
    from darknet_py.network import Network
    net = Network(parse_cfg_text(cfg), "<cfg>", train=True)
    layer = net.layers[0]
    x = torch.arange(3.0).repeat_interleave(4).reshape(3, 1, 2, 2) + 1  # steps 1, 2, 3
    y = layer(x, {})
    assert y[:, :, 0, 0].tolist() == [[1, 0, 0], [2, 1, 0], [3, 2, 1]]
    y = layer(x + 3, {})
    assert y[:, :, 0, 0].tolist() == [[4, 3, 2], [5, 4, 3], [6, 5, 4]]


def test_lrn_is_an_alias_and_unknown_activation_is_named():
    from darknet_py.cfg import CfgError, parse_cfg_text
    from darknet_py.network import Network
    net = Network(parse_cfg_text("[net]\nwidth=4\nheight=4\nchannels=3\n\n[lrn]\n"), "<cfg>")
    assert net.summary()[0]["type_id"] == 11
    with pytest.raises(CfgError, match="lstm_activation"):
        Network(parse_cfg_text("[net]\nwidth=4\nheight=4\nchannels=3\n\n[conv_lstm]\noutput=2\n"
                               "lstm_activation=bogus\n"), "<cfg>")


def test_export_refuses_conv_lstm_naming_the_line(tmp_path, capsys):
    out = tmp_path / "f1.onnx"
    assert main(["export", str(DATA / "f1" / "f1.cfg"), str(DATA / "f1" / "init.weights"), str(out)]) == 1
    err = capsys.readouterr().err
    assert "f1.cfg:28:" in err and "[conv_lstm]" in err and "cannot be exported to ONNX" in err
    assert not out.exists()


def test_export_of_local_normalization_history(tmp_path):
    """The other three export: onnxruntime gives predict_raw's output (f1 without its
    conv_lstm layers)."""
    ort = pytest.importorskip("onnxruntime")
    text = (DATA / "f1" / "f1.cfg").read_text()
    cut = text.index("[conv_lstm]")
    cfg = tmp_path / "nolstm.cfg"
    cfg.write_text(text[:cut] + "[convolutional]\nfilters=6\nsize=1\nstride=1\nactivation=linear\n")
    net = darknet_py.load_network(cfg)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
    for layer in net.layers:
        if hasattr(layer, "fuse"):
            layer.fuse()
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16)).astype(np.float32)
    want = net.predict_raw(x)[len(net.layers) - 1]
    path = tmp_path / "n.onnx"
    names = net.export_onnx(path, raw=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[None]})
    assert len(names) == 1
    np.testing.assert_allclose(got[0].reshape(-1), want, atol=1e-5)


def test_weights_loaded_into_a_fused_network_reach_the_inner_layers():
    """load_network without weights gives a fused network with channels_last convolution
    weights; loading the case's weights then must fill them in upstream's (row-major) order
    and reach the conv_lstm layers' inner convolutions (their fused copies made anew)."""
    d, _, frames = _case("f1")
    net = darknet_py.load_network(d / "f1.cfg")
    net.load_weights(d / "init.weights", verbose=False)
    last = len(net.layers) - 1
    ref = np.fromfile(d / "upstream" / f"t0_layer{last:03d}.f32", dtype="<f4")
    assert np.abs(net.predict_raw(frames[0])[last] - ref).max() <= TOL
