"""[rnn], [gru], [lstm] (layers/rnn.py, gru.py, lstm.py, recurrent.py) against upstream:
.weights layout (upstream's own save_weights output reads and writes back byte for byte), the
first layer's output after a sequence of characters (upstream's `rnn vec`, which prints it
with %g: tests/data/rnn/README.md), and the ONNX refusal.
"""
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import darknet_py
from darknet_py.cfg import CfgError
from darknet_py.cli import main
from darknet_py.train.rnn import vec_char_rnn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "rnn"
FW = ["fw_rnn", "fw_rnn_shortcut", "fw_gru", "fw_lstm"]
TRAIN = ["train_rnn", "train_gru", "train_lstm"]


def _vec_line(text: str) -> tuple[str, np.ndarray]:
    line = text.strip().splitlines()[-1].split(",")
    return line[0], np.array(line[1:], dtype=np.float64)


@pytest.mark.parametrize("case", FW)
def test_vec_matches_upstream(case):
    """The state carried over 22 characters ("The " + "ShallIcomparethee" + " "): the values
    upstream printed with %g (6 significant digits). Tolerance: rtol 1e-5, twice %g's relative
    rounding (5e-6), atol 1e-6 for values near 0 (float32 noise over the steps, measured 1e-7)."""
    name, ref = _vec_line((DATA / f"{case}.vec.txt").read_text())
    out = io.StringIO()
    vec_char_rnn(str(DATA / f"{case}.cfg"), str(DATA / f"{case}.weights"), b"The ",
                 stdin=io.BytesIO(b"Shall I compare thee\n"), out=out, err=io.StringIO())
    got_name, got = _vec_line(out.getvalue())
    assert got_name == name == "ShallIcomparethee"
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_vec_resets_the_state_for_each_line():
    """reset_rnn_state before each line: the same line twice gives the same vector."""
    out = io.StringIO()
    vec_char_rnn(str(DATA / "fw_gru.cfg"), str(DATA / "fw_gru.weights"), b"The ",
                 stdin=io.BytesIO(b"ab\nab\n"), out=out, err=io.StringIO())
    a, b = out.getvalue().splitlines()
    assert a == b and a.startswith("ab,")


@pytest.mark.parametrize("case", TRAIN)
def test_upstream_weights_round_trip(case, tmp_path):
    """final.weights was written by upstream's save_weights: it loads (size exactly the
    network's) and is written back byte for byte, inner layers in upstream's order."""
    src = DATA / case / "final.weights"
    net = darknet_py.build_network(DATA / case / f"{case}.cfg", batch=1)
    assert net.weights_file_bytes() == src.stat().st_size
    net.load_weights(src, verbose=False)
    net.save_weights(tmp_path / "w")
    assert (tmp_path / "w").read_bytes()[20:] == src.read_bytes()[20:]


def test_weights_order_is_upstreams():
    """The arrays in file order: rnn input/self/output, gru input_z..state_h, lstm wf..uo
    (sizes distinguish input- from state-side layers: 256 inputs, 24/32 outputs)."""
    rnn = darknet_py.build_network(DATA / "fw_rnn.cfg", batch=1).layers[0]
    assert [tuple(a.shape) for a in rnn.weight_arrays()][:2] == [(32,), (32, 256)]
    assert [l.weights.shape for l in (rnn.input_layer, rnn.self_layer, rnn.output_layer)] == \
        [torch.Size([32, 256]), torch.Size([32, 32]), torch.Size([24, 32])]
    gru = darknet_py.build_network(DATA / "fw_gru.cfg", batch=1).layers[0]
    shapes = [tuple(a.shape) for a in gru.weight_arrays() if a.dim() == 2]
    assert shapes == [(32, 256)] * 3 + [(32, 32)] * 3
    lstm = darknet_py.build_network(DATA / "fw_lstm.cfg", batch=1).layers[0]
    shapes = [tuple(a.shape) for a in lstm.weight_arrays() if a.dim() == 2]
    assert shapes == [(32, 32)] * 4 + [(32, 256)] * 4


def test_state_carries_in_inference_and_resets():
    net = darknet_py.load_network(DATA / "fw_lstm.cfg", DATA / "fw_lstm.weights")
    x = torch.zeros(1, 256)
    x[0, 65] = 1
    layer = net.layers[0]
    with torch.inference_mode():
        a = layer(x).clone()
        b = layer(x).clone()
        layer.reset_state()
        c = layer(x).clone()
    assert not torch.equal(a, b)  # the second call starts from the first one's h and c
    assert torch.equal(a, c)


def test_training_batch_is_time_steps_of_streams():
    """Built for training, a batch is time_steps mini-batches: the rnn state starts at zero for
    each batch, so the same batch twice gives the same output (in the cpu flavor's batch norm
    only the rolling statistics move)."""
    net = darknet_py.build_network(DATA / "train_rnn" / "train_rnn.cfg", train=True)
    net.initialize(1)
    layer = net.layers[0]
    layer.bn_flavor = "cpu"
    assert layer.steps == 16 and net.options.mini_batch == 4 * 16
    x = torch.zeros(64, 256)
    x[torch.arange(64), torch.arange(64) % 50 + 40] = 1
    net.train()
    y1 = layer(x).detach()
    y2 = layer(x).detach()
    assert y1.shape == (64, 64, 1, 1)
    assert torch.equal(y1, y2)
    with pytest.raises(ValueError, match="not a multiple of time_steps=16"):
        layer(torch.zeros(10, 256))


@pytest.mark.parametrize("section", ["rnn", "gru", "lstm"])
def test_export_refuses_naming_the_line(tmp_path, capsys, section):
    cfg = tmp_path / "r.cfg"
    cfg.write_text(f"[net]\ninputs=8\n\n[{section}]\noutput=4\nhidden=4\n\n[softmax]\n")
    out = tmp_path / "r.onnx"
    assert main(["export", str(cfg), "", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{cfg}:4:" in err and f"[{section}]" in err and "cannot be exported to ONNX" in err
    assert "Traceback" not in err and not out.exists()


def test_bad_keys_name_the_line(tmp_path):
    cfg = tmp_path / "r.cfg"
    cfg.write_text("[net]\ninputs=8\n\n[rnn]\noutput=4\nhidden=0\n")
    with pytest.raises(CfgError, match=r"r.cfg:6"):
        darknet_py.build_network(cfg)


def test_get_rnn_data_layout():
    """get_rnn_data by hand: text "abcdefgh", 2 streams at offsets 0 and 5, 3 steps: row
    j*2 + i is step j of stream i; x = that character, y = the next (wrapping round the text)."""
    from darknet_py.train.rnn import get_rnn_data
    text = np.frombuffer(b"abcdefgh", np.uint8).astype(np.int64)
    offsets = [0, 5]
    x, y = get_rnn_data(text, offsets, 256, 2, 3, "t.txt", False)
    assert [chr(c) for c in x.argmax(1)] == ["a", "f", "b", "g", "c", "h"]
    assert [chr(c) for c in y.argmax(1)] == ["b", "g", "c", "h", "d", "a"]
    assert x.sum() == y.sum() == 6 and offsets == [3, 0]


@pytest.mark.parametrize("flavor", ["cudnn", "cpu"])
def test_connected_batch_norm_in_training(flavor):
    """The inner layers' training batch norm, worked from upstream's formulas on 4 rows:
    cudnn (forward_batchnorm_layer_gpu): normalized with the biased variance, rolling
    .99 / .01 (unbiased variance); cpu (forward_connected_layer): normalized with the unbiased
    variance, rolling .95 / .05."""
    net = darknet_py.build_network(DATA / "train_rnn" / "train_rnn.cfg", train=True)
    layer = net.layers[0].input_layer
    layer.bn_flavor = flavor
    net.train()
    with torch.no_grad():
        layer.weights.copy_(torch.eye(64, 256))
        layer.biases.fill_(0.5)
        layer.scales.fill_(2.0)
        layer.rolling_mean.fill_(1.0)
        layer.rolling_variance.fill_(1.0)
    x = torch.zeros(4, 256)
    x[:, 0] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, biased var 3.5, unbiased 14/3
    y = layer(x).reshape(4, 64)[:, 0]
    var = 3.5 if flavor == "cudnn" else 14 / 3
    expect = (x[:, 0] - 3) / torch.sqrt(torch.tensor(var + 1e-5)) * 2 + 0.5
    expect = torch.where(expect > 0, expect, 0.1 * expect)  # leaky
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-6)
    k = 0.01 if flavor == "cudnn" else 0.05
    assert abs(float(layer.rolling_mean[0]) - ((1 - k) * 1 + k * 3)) < 1e-6
    assert abs(float(layer.rolling_variance[0]) - ((1 - k) * 1 + k * 14 / 3)) < 1e-6


def test_transposed_weights_file(tmp_path):
    """A file whose header has major > 1000 holds every inner connected layer's weights as
    (inputs, outputs): load_connected_weights transposes them back."""
    import struct
    net = darknet_py.build_network(DATA / "fw_gru.cfg", batch=1)
    net.load_weights(DATA / "fw_gru.weights", verbose=False)
    parts = [struct.pack("<iiiQ", 1001, 2, 5, 0)]
    for layer in net.layers:
        subs = [getattr(layer, n) for n in getattr(layer, "inner", ())] or [layer]
        for c in subs:
            for a in c.weight_arrays():
                t = a.detach().t() if a is getattr(c, "weights", None) and a.dim() == 2 else a.detach()
                parts.append(t.contiguous().numpy().astype("<f4").tobytes())
    (tmp_path / "t.weights").write_bytes(b"".join(parts))
    other = darknet_py.build_network(DATA / "fw_gru.cfg", batch=1)
    other.load_weights(tmp_path / "t.weights", verbose=False)
    for a, b in zip(net.parameters(), other.parameters()):
        assert torch.equal(a, b)


def _backward_through(section: str, seed: int, scale: float):
    """A fresh [section] layer (6 inputs, 5 outputs, 4 steps of 2 streams), built for training,
    in float64; autograd of -sum(delta * y) for a random delta (upstream's sign: the layer's
    output delta). Returns the layer, x, delta and x with its gradient."""
    from darknet_py.cfg import parse_cfg_text
    from darknet_py.network import Network
    text = f"[net]\ninputs=6\nbatch=2\ntime_steps=4\n\n[{section}]\noutput=5\n"
    net = Network(parse_cfg_text(text, "r.cfg"), "r.cfg", train=True)
    net.initialize(4)
    layer = net.layers[0]
    net.train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    delta = torch.randn(8, 5, generator=g, dtype=torch.float64) * scale
    layer.double()
    xr = x.clone().requires_grad_(True)
    y = layer(xr).reshape(8, 5)
    (-(delta * y).sum()).backward()
    return layer, x, delta, xr


def _lstm_backward_gpu(x, delta, W, U, T, B):
    """A numpy transcription of backward_lstm_layer_gpu (float64) after forward_lstm_layer_gpu
    from h = c = 0 on a fresh layer (dc = 0), linear inner layers without batch norm, each inner
    layer's delta clamped to [-1, 1] by backward_connected_layer_gpu. One deliberate change: at
    the first step the previous h and c are the batch's initial ones (0), where upstream reads
    output[0] and cell[0] (lstm.py's docstring). Returns upstream's sign: state.delta (minus the
    gradient wrt x), weight_updates (minus the gradient) of W[k] (h side) and U[k] (x side), and how
    many inner deltas the clamp changed."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    n = W["f"].shape[0]
    h, c = np.zeros((B, n)), np.zeros((B, n))
    pre, cells, outs = [], [], []
    for t in range(T):
        xt = x[t * B:(t + 1) * B]
        a = {k: h @ W[k].T + xt @ U[k].T for k in "figo"}
        f, i, g, o = sig(a["f"]), sig(a["i"]), np.tanh(a["g"]), sig(a["o"])
        c = f * c + i * g
        h = o * np.tanh(c)
        pre.append((f, i, g, o))
        cells.append(c)
        outs.append(h)
    ldelta = delta.reshape(T, B, n).copy()
    dx = np.zeros_like(x)
    dW = {k: np.zeros_like(W[k]) for k in "figo"}
    dU = {k: np.zeros_like(U[k]) for k in "figo"}
    dc = np.zeros((B, n))
    clamped = 0
    for t in reversed(range(T)):
        f, i, g, o = pre[t]
        c = cells[t]
        prev_h = outs[t - 1] if t else np.zeros((B, n))
        prev_c = cells[t - 1] if t else np.zeros((B, n))
        xt = x[t * B:(t + 1) * B]
        d = ldelta[t]
        tc = np.tanh(c)
        temp2 = d * o * (1 - tc * tc) + dc
        gates = {"o": tc * d * o * (1 - o), "g": temp2 * i * (1 - g * g), "i": temp2 * g * i * (1 - i),
                 "f": temp2 * prev_c * f * (1 - f)}
        for k in "ogif":  # wk then uk, each backward_connected_layer_gpu: clamp, then gemms
            gk = np.clip(gates[k], -1, 1)
            clamped += int((gk != gates[k]).sum())
            dW[k] += gk.T @ prev_h
            if t:
                ldelta[t - 1] += gk @ W[k]
            dU[k] += gk.T @ xt
            dx[t * B:(t + 1) * B] += gk @ U[k]
        dc = temp2 * f
    return dx, dW, dU, clamped


def test_lstm_gradient_is_upstreams_cuda_backward():
    """tinygrad-style: autograd through our LSTM (training, CUDA flavor) against the
    transcription above, on 4 steps of 2 streams; deltas large enough that some inner deltas
    are clamped."""
    layer, x, delta, xr = _backward_through("lstm", seed=5, scale=6)
    W = {k: getattr(layer, "w" + k).weights.detach().numpy() for k in "figo"}
    U = {k: getattr(layer, "u" + k).weights.detach().numpy() for k in "figo"}
    dx, dW, dU, clamped = _lstm_backward_gpu(x.numpy(), delta.numpy(), W, U, 4, 2)
    np.testing.assert_allclose(-xr.grad.numpy(), dx, rtol=1e-9, atol=1e-12)
    for k in "figo":
        np.testing.assert_allclose(-getattr(layer, "w" + k).weights.grad.numpy(), dW[k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(-getattr(layer, "u" + k).weights.grad.numpy(), dU[k], rtol=1e-9, atol=1e-12)
    assert clamped > 0  # the clamp was exercised


def _gru_backward_gpu(x, delta, S, I, T, B):
    """A numpy transcription of backward_gru_layer_gpu (float64) after forward_gru_layer_gpu from
    a zero state, linear inner layers without batch norm, each inner layer's delta clamped to
    [-1, 1] by backward_connected_layer_gpu. One deliberate change: at the first step the
    previous state is the batch's initial one (0), where upstream reads output[0] (gru.py's
    docstring). S[k]: state_k weights, I[k]: input_k weights. Returns state.delta, the weight
    updates of S and I, and how many inner deltas the clamp changed."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    n = S["z"].shape[0]
    s = np.zeros((B, n))
    saved, outs = [], []
    for t in range(T):
        xt = x[t * B:(t + 1) * B]
        z = sig(xt @ I["z"].T + s @ S["z"].T)
        r = sig(xt @ I["r"].T + s @ S["r"].T)
        h = sig(xt @ I["h"].T + (s * r) @ S["h"].T)
        saved.append((z, r, h))
        s = z * s + (1 - z) * h
        outs.append(s)
    ld = delta.reshape(T, B, n).copy()
    dx = np.zeros_like(x)
    dS = {k: np.zeros_like(S[k]) for k in "zrh"}
    dI = {k: np.zeros_like(I[k]) for k in "zrh"}
    clamped = 0

    def clip(v):
        nonlocal clamped
        c = np.clip(v, -1, 1)
        clamped += int((c != v).sum())
        return c

    for t in reversed(range(T)):
        z, r, h = saved[t]
        prev = outs[t - 1] if t else np.zeros((B, n))
        xt = x[t * B:(t + 1) * B]
        dc = ld[t]
        dprev = dc * z  # weighted_delta_gpu
        dh = dc * (1 - z) * h * (1 - h)
        dz = dc * (prev - h) * z * (1 - z)
        sh = clip(dh)  # state_h backward on forgot_state = prev * r
        dS["h"] += sh.T @ (prev * r)
        forgot = sh @ S["h"]
        dprev += forgot * r
        dr = forgot * prev * r * (1 - r)
        for k, d in (("r", dr), ("z", dz)):  # state_r, state_z backward on prev
            dk = clip(d)
            dS[k] += dk.T @ prev
            dprev += dk @ S[k]
        for k, d in (("h", dh), ("r", dr), ("z", dz)):  # input_* backward on x
            dk = clip(d)
            dI[k] += dk.T @ xt
            dx[t * B:(t + 1) * B] += dk @ I[k]
        if t:
            ld[t - 1] += dprev
    return dx, dS, dI, clamped


def test_gru_gradient_is_upstreams_cuda_backward():
    layer, x, delta, xr = _backward_through("gru", seed=6, scale=12)
    S = {k: getattr(layer, f"state_{k}_layer").weights.detach().numpy() for k in "zrh"}
    I = {k: getattr(layer, f"input_{k}_layer").weights.detach().numpy() for k in "zrh"}
    dx, dS, dI, clamped = _gru_backward_gpu(x.numpy(), delta.numpy(), S, I, 4, 2)
    assert clamped > 0
    np.testing.assert_allclose(-xr.grad.numpy(), dx, rtol=1e-9, atol=1e-12)
    for k in "zrh":
        np.testing.assert_allclose(-getattr(layer, f"state_{k}_layer").weights.grad.numpy(), dS[k], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(-getattr(layer, f"input_{k}_layer").weights.grad.numpy(), dI[k], rtol=1e-9, atol=1e-12)
