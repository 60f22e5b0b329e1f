"""Upstream's update rule (darknet_py/train/sgd.py) against numpy transcriptions of
update_convolutional_layer_gpu, adam_update_gpu, update_shortcut_layer_gpu,
update_network_gpu's skips and the EMA of train_network_waitkey.

Gradients are set by hand; upstream's update buffer receives minus the gradient."""
import numpy as np
import torch

from darknet_py.cfg import parse_cfg_text
from darknet_py.network import Network
from darknet_py.train.sgd import UpstreamSGD

NET = """[net]
batch=4
subdivisions=2
width=2
height=2
channels=2
momentum=0.9
decay=0.0005
{net}

[convolutional]
batch_normalize=1
filters=2
size=1
activation=linear
learning_rate=0.5
{l0}

[convolutional]
filters=2
size=1
activation=linear
{l1}

[shortcut]
from=-2
weights_type=per_feature
activation=linear
{l2}

[connected]
output=3
activation=linear
{l3}
"""
B = 4  # update batch: mini_batch (4/2) * subdivisions (2)
MOM, DECAY = 0.9, 0.0005


def make(net="", **layer_keys):
    text = NET.format(net=net, **{f"l{i}": layer_keys.get(f"l{i}", "") for i in range(4)})
    n = Network(parse_cfg_text(text, "t.cfg"), "t.cfg", train=True)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in n.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return n


def params(net):
    c0, c1, sc, fc = net.layers
    return {"w0": c0.weights, "b0": c0.biases, "s0": c0.scales, "w1": c1.weights, "b1": c1.biases,
            "sw": sc.weights, "fw": fc.weights, "fb": fc.biases}


def set_grads(net, seed):
    g = torch.Generator().manual_seed(seed)
    grads = {}
    for k, p in params(net).items():
        p.grad = torch.randn(p.shape, generator=g)
        grads[k] = p.grad.numpy().astype(np.float64)
    return grads


def snapshot(net):
    return {k: p.detach().numpy().astype(np.float64) for k, p in params(net).items()}


def up_momentum(w, u, g, lr_b, decay_b=0.0, clamp=None):
    """axpy(-decay*batch, w, u); axpy(lr/batch, u, w); scal(momentum, u), u already holding -g."""
    u = u - g
    if clamp is not None:
        u = np.clip(u, -clamp, clamp)  # constrain_ongpu(updates, 1): shortcut only
    u = u - decay_b * w
    return w + lr_b * u, MOM * u


def test_sgd_two_iterations():
    net = make()
    sgd = UpstreamSGD(net)
    w = snapshot(net)
    u = {k: np.zeros_like(v) for k, v in w.items()}
    rate = 0.01
    for it in (1, 2):
        g = set_grads(net, it)
        sgd.step(rate, it)
        lr0 = rate * 0.5  # learning_rate=0.5 in the first layer's section scales its rate
        w["w0"], u["w0"] = up_momentum(w["w0"], u["w0"], g["w0"], lr0 / B, DECAY * B)  # weights: decay
        w["b0"], u["b0"] = up_momentum(w["b0"], u["b0"], g["b0"], lr0 / B)  # biases, scales: none
        w["s0"], u["s0"] = up_momentum(w["s0"], u["s0"], g["s0"], lr0 / B)
        w["w1"], u["w1"] = up_momentum(w["w1"], u["w1"], g["w1"], rate / B, DECAY * B)
        w["b1"], u["b1"] = up_momentum(w["b1"], u["b1"], g["b1"], rate / B)
        w["sw"], u["sw"] = up_momentum(w["sw"], u["sw"], g["sw"], rate / B, clamp=1.0)  # no decay
        # [connected]: upstream's make_connected_layer never sets l.train, so
        # update_network(_gpu) skips it: never updated
        got = snapshot(net)
        for k in w:
            np.testing.assert_allclose(got[k], w[k], rtol=1e-6, atol=1e-7, err_msg=f"{k} at iteration {it}")
    assert all(p.grad is None for p in net.parameters())


def test_gradients_accumulate_over_subdivisions():
    """Two backward passes before one step count as their sum (upstream's buffer += -grad).
    The loss's gradient stays below 1: the [connected] layer clamps the gradient at its output
    to [-1, 1] (upstream's constrain_ongpu), which would cut a gradient of 2 down to 1."""
    a, b = make(), make()
    ga, gb = UpstreamSGD(a), UpstreamSGD(b)
    x = torch.randn(2, 2, 2, 2, generator=torch.Generator().manual_seed(9))
    for _ in range(2):
        (0.25 * a(x)[3].sum()).backward()
    (0.5 * b(x)[3].sum()).backward()
    ga.step(0.01, 1)
    gb.step(0.01, 1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_loss_scale_cancels_in_sgd():
    a, b = make(), make("loss_scale=8")
    for net in (a, b):
        sgd = UpstreamSGD(net)
        for it in (1, 2):
            set_grads(net, it)
            sgd.step(0.01, it)
    # conv arrays: the buffer holds loss_scale * -grad, the rate is divided by loss_scale.
    # Not so for the shortcut: its buffer is clamped at 1 before scaling back.
    for p, q in list(zip(a.parameters(), b.parameters()))[:5]:
        torch.testing.assert_close(p, q)


def test_adam():
    net = make("adam=1\nB1=0.8\nB2=0.99\neps=0.001")
    sgd = UpstreamSGD(net)
    w = snapshot(net)
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    rate = 0.01
    for t in (1, 2):
        g = set_grads(net, t)
        sgd.step(rate, t)
        for k, lr in (("w0", rate * 0.5), ("b0", rate * 0.5), ("s0", rate * 0.5), ("w1", rate), ("b1", rate)):
            # adam_update_gpu: d = weight_updates - decay*batch*w (decay on biases and scales too)
            d = -g[k] - DECAY * B * w[k]
            m[k] = 0.8 * m[k] + 0.2 * d
            v[k] = 0.99 * v[k] + 0.01 * d * d
            mhat, vhat = m[k] / (1 - 0.8 ** t), v[k] / (1 - 0.99 ** t)
            w[k] = w[k] + lr * mhat / (np.sqrt(vhat) + 0.001)  # rate NOT divided by batch
        got = snapshot(net)
        for k in ("w0", "b0", "s0", "w1", "b1"):
            np.testing.assert_allclose(got[k], w[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} at t={t}")


def updated(net, before):
    return {k for k, p in snapshot(net).items() if not np.array_equal(p, before[k])}


def test_frozen_layers_and_update_flags():
    # stopbackward=1 on layer 1: layer 0 is built with train=0 and never updated
    net = make(l1="stopbackward=1")
    before = snapshot(net)
    set_grads(net, 1)
    UpstreamSGD(net).step(0.01, 1)
    assert updated(net, before) == {"w1", "b1", "sw"}
    # train_only_bn on layer 2 reaches layers 0..2; upstream's update then skips them whole
    net = make(l2="train_only_bn=1")
    before = snapshot(net)
    set_grads(net, 1)
    UpstreamSGD(net).step(0.01, 1)
    assert updated(net, before) == set()
    # burnin_update=1 with burn_in=3: skipped while 1*3 > iteration; the buffer keeps growing
    net = make("burn_in=3", l1="burnin_update=1\ndont_update=0")
    sgd = UpstreamSGD(net)
    w1 = net.layers[1].weights.detach().clone()
    for it in (1, 2):
        set_grads(net, it)
        sgd.step(0.01, it)
    assert torch.equal(net.layers[1].weights, w1)
    g = set_grads(net, 3)["w1"]
    sgd.step(0.01, 3)
    g_all = sum(set_grads(make(), s)["w1"] for s in (1, 2)) + g
    u = -g_all - DECAY * B * w1.numpy()
    np.testing.assert_allclose(net.layers[1].weights.detach().numpy(), w1.numpy() + 0.01 / B * u, rtol=1e-5)
    # dont_update=2: updated only once iteration > 2
    net = make(l2="dont_update=2")
    sgd = UpstreamSGD(net)
    for it, moves in ((1, False), (2, False), (3, True)):
        before = snapshot(net)
        set_grads(net, it)
        sgd.step(0.01, it)
        assert ("sw" in updated(net, before)) == moves
        assert "fw" not in updated(net, before)


def test_nan_updates_reset_and_nan_weights_replaced():
    net = make()
    conv = net.layers[1]
    with torch.no_grad():
        conv.weights[0, 1, 0, 0] = float("nan")  # flat index 1
    set_grads(net, 1)
    conv.weights.grad[1, 0, 0, 0] = float("inf")  # flat index 2
    w = conv.weights.detach().numpy().astype(np.float64).reshape(-1)
    g = conv.weights.grad.numpy().astype(np.float64).reshape(-1)
    UpstreamSGD(net).step(0.01, 1)
    u = -g
    u[2] = 0.0  # reset_nan_and_inf(weight_updates)
    w[1] = 1 / (1 + 1)  # fix_nan_and_inf(weights): 1/(index+1)
    expect, _ = up_momentum(w, np.zeros_like(w), -u, 0.01 / B, DECAY * B)
    np.testing.assert_allclose(conv.weights.detach().numpy().reshape(-1), expect, rtol=1e-6)


def test_clip_and_grad_centr():
    text = """[net]
batch=2
width=1
height=1
channels=32
decay=0.0005
[convolutional]
batch_normalize=1
filters=2
size=1
activation=linear
grad_centr=1
clip=0.05
"""
    net = Network(parse_cfg_text(text, "t.cfg"), "t.cfg", train=True)
    conv = net.layers[0]
    with torch.no_grad():
        conv.weights.copy_(torch.linspace(-0.1, 0.1, 64).view(2, 32, 1, 1))
    conv.weights.grad = torch.linspace(-3, 5, 64).view(2, 32, 1, 1)
    w = conv.weights.detach().numpy().reshape(2, 32).astype(np.float64)
    g = conv.weights.grad.numpy().reshape(2, 32).astype(np.float64)
    UpstreamSGD(net).step(0.1, 1)
    u = -g
    u = u - u.mean(1, keepdims=True)  # gradient_centralization_gpu: 32 weights per filter
    u = u - DECAY * 2 * w
    expect = np.clip(w + 0.1 / 2 * u, -0.05, 0.05)  # constrain_ongpu(weights, clip)
    np.testing.assert_allclose(conv.weights.detach().numpy().reshape(2, 32), expect, rtol=1e-6, atol=1e-8)


def test_shared_conv_updated_twice():
    text = """[net]
batch=1
width=2
height=2
channels=2
momentum=0.9
decay=0.0005
[convolutional]
filters=2
size=1
activation=linear
[convolutional]
filters=2
size=1
activation=linear
share_index=0
"""
    net = Network(parse_cfg_text(text, "t.cfg"), "t.cfg", train=True)
    w0 = net.layers[0].weights
    with torch.no_grad():
        w0.fill_(0.5)
    w0.grad = torch.full_like(w0, 2.0)
    UpstreamSGD(net).step(0.1, 1)
    # both layers run update_convolutional_layer_gpu on the same arrays and buffers
    w, u = up_momentum(np.full(4, 0.5), np.zeros(4), np.full(4, 2.0), 0.1, DECAY)
    w, u = up_momentum(w, u, np.zeros(4), 0.1, DECAY)
    np.testing.assert_allclose(w0.detach().numpy().reshape(-1), w, rtol=1e-6)


def test_ema():
    """ema_alpha=0.75, max_batches=2004: averaging from iteration 1002 (first: a copy, then
    the update), applied at 2004 - 1000 = 1004, untouched afterwards."""
    net = make("ema_alpha=0.75\nmax_batches=2004")
    sgd = UpstreamSGD(net)
    conv_keys = ("w0", "b0", "s0", "w1", "b1")
    ema = None
    for it in range(1000, 1007):
        set_grads(net, it)
        sgd.step(0.01, it)
        got = snapshot(net)
        if it < 1002:
            assert not sgd.ema
            continue
        if ema is None:
            ema = {k: got[k] for k in conv_keys}  # ema_update(net, 0)
        if it == 1004:  # ema_apply: the network takes the averages
            for k in conv_keys:
                np.testing.assert_allclose(got[k], ema[k], rtol=1e-6)
            after_apply = got
        elif it < 1004:
            ema = {k: 0.75 * ema[k] + 0.25 * got[k] for k in conv_keys}
        layer_ema = {**dict(zip(("b0", "s0"), sgd.ema_arrays(net.layers[0])[:2])),
                     "w0": sgd.ema_arrays(net.layers[0])[-1], "b1": sgd.ema_arrays(net.layers[1])[0],
                     "w1": sgd.ema_arrays(net.layers[1])[-1]}
        for k in conv_keys:
            np.testing.assert_allclose(layer_ema[k].detach().numpy(), ema[k], rtol=1e-6, err_msg=f"{k} at {it}")
    # shortcut and connected weights have no average; after the apply point nothing changes it
    assert all(p not in sgd.ema for p in (net.layers[2].weights, net.layers[3].weights))
    assert not np.array_equal(snapshot(net)["w0"], after_apply["w0"])  # training goes on
