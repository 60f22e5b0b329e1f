"""Training batch norm (darknet_py/layers/batchnorm.py) against numpy transcriptions of
upstream's arithmetic, written here from the formulas of src/blas.c (mean_cpu, variance_cpu,
normalize_cpu, mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu),
src/batchnorm_layer.c and fast_v_cbn_kernel (src/blas_kernels.cu)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from darknet_py.cfg import parse_cfg_text
from darknet_py.network import Network
from darknet_py.layers.batchnorm import EPS, batch_stats, batchnorm_cbn, batchnorm_cpu, batchnorm_cudnn

RNG = np.random.default_rng(5)
B, C, H, W = 2, 3, 3, 4
N = B * H * W  # upstream's batch*spatial


def case():
    x = RNG.normal(1.0, 2.0, (B, C, H, W))
    scales = RNG.normal(1.0, 0.3, C)
    biases = RNG.normal(0.0, 0.3, C)
    dy = RNG.normal(0.0, 1.0, (B, C, H, W))  # gradient of the loss w.r.t. the output
    return x, scales, biases, dy


def up_cpu(x, scales, biases, dy):
    """Upstream's CPU forward_batchnorm_layer / backward_batchnorm_layer, formula by formula."""
    mean = x.sum((0, 2, 3)) / N  # mean_cpu
    var = ((x - mean[None, :, None, None]) ** 2).sum((0, 2, 3)) / (N - 1)  # variance_cpu: N - 1
    m, v = mean[None, :, None, None], var[None, :, None, None]
    x_norm = (x - m) / np.sqrt(v + EPS)  # normalize_cpu
    y = x_norm * scales[None, :, None, None] + biases[None, :, None, None]
    d_scales = (dy * x_norm).sum((0, 2, 3))  # backward_scale_cpu
    d = dy * scales[None, :, None, None]  # scale_bias(delta, scales)
    mean_delta = d.sum((0, 2, 3)) * (-1 / np.sqrt(var + EPS))  # mean_delta_cpu
    var_delta = (d * (x - m)).sum((0, 2, 3)) * (-0.5 * (var + EPS) ** -1.5)  # variance_delta_cpu
    # normalize_delta_cpu: note sqrt(var) + eps and the division by N, not N - 1
    dx = d / (np.sqrt(v) + EPS) + var_delta[None, :, None, None] * 2 * (x - m) / N + mean_delta[None, :, None, None] / N
    return y, dx, d_scales, mean, var


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def run(fn, x, scales, biases, dy, *extra):
    xt, st, bt = t(x, True), t(scales, True), t(biases, True)
    y = fn(xt, st, bt, *extra)
    y.backward(t(dy))
    return y.detach().numpy(), xt.grad.numpy(), st.grad.numpy(), bt.grad.numpy()


def test_cpu_forward_backward_match_upstream_formulas():
    x, scales, biases, dy = case()
    y_ref, dx_ref, ds_ref, mean, var = up_cpu(x, scales, biases, dy)
    rm, rv = t(np.full(C, 0.5)), t(np.full(C, 2.0))
    y, dx, ds, db = run(batchnorm_cpu, x, scales, biases, dy, rm, rv)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ds, ds_ref, rtol=1e-12)
    # upstream's CPU backward_batchnorm_layer never touches bias_updates
    assert np.all(db == 0)
    # rolling statistics: scal .9 then axpy .1 of the batch mean and the (N - 1) variance
    np.testing.assert_allclose(rm.numpy(), 0.9 * 0.5 + 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), 0.9 * 2.0 + 0.1 * var, rtol=1e-12)


def test_upstream_backward_is_not_autograd_and_differs_exactly_here():
    """Autograd of the same forward (variance / (N-1)) differs from upstream's backward in two
    places only: the variance term's 2*(x-mean)/N (autograd: /(N-1), the N/(N-1) factor) and
    the direct term's 1/(sqrt(var)+eps) (autograd: 1/sqrt(var+eps))."""
    x, scales, biases, dy = case()
    _, dx_up, ds_up, mean, var = up_cpu(x, scales, biases, dy)
    xt, st, bt = t(x, True), t(scales, True), t(biases, True)
    m = xt.mean((0, 2, 3), keepdim=True)
    v = ((xt - m) ** 2).sum((0, 2, 3), keepdim=True) / (N - 1)
    y = (xt - m) / torch.sqrt(v + EPS) * st.view(1, -1, 1, 1) + bt.view(1, -1, 1, 1)
    y.backward(t(dy))
    dx_auto = xt.grad.numpy()
    np.testing.assert_allclose(st.grad.numpy(), ds_up, rtol=1e-12)  # scale gradients agree
    mm, vv = mean[None, :, None, None], var[None, :, None, None]
    d = dy * scales[None, :, None, None]
    var_delta = ((d * (x - mm)).sum((0, 2, 3)) * (-0.5 * (var + EPS) ** -1.5))[None, :, None, None]
    direct = d * (1 / (np.sqrt(vv) + EPS) - 1 / np.sqrt(vv + EPS))
    variance_term = var_delta * 2 * (x - mm) * (1 / N - 1 / (N - 1))  # upstream's term = autograd's * (N-1)/N
    difference = direct + variance_term
    np.testing.assert_allclose(dx_up - dx_auto, difference, rtol=1e-9, atol=1e-13)
    assert np.abs(dx_up - dx_auto).max() > 1e-4  # a real difference, not rounding


def test_cudnn_flavor_is_biased_variance_with_factor_001():
    x, scales, biases, dy = case()
    rm, rv = t(np.full(C, 0.5)), t(np.full(C, 2.0))
    y, dx, ds, db = run(batchnorm_cudnn, x, scales, biases, dy, rm, rv)
    mean = x.mean((0, 2, 3))
    biased = x.var((0, 2, 3))  # numpy's default: / N
    x_norm = (x - mean[None, :, None, None]) / np.sqrt(biased[None, :, None, None] + EPS)
    np.testing.assert_allclose(y, x_norm * scales[None, :, None, None] + biases[None, :, None, None], rtol=1e-12)
    np.testing.assert_allclose(rm.numpy(), 0.99 * 0.5 + 0.01 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), 0.99 * 2.0 + 0.01 * biased * N / (N - 1), rtol=1e-12)
    np.testing.assert_allclose(db, dy.sum((0, 2, 3)), rtol=1e-12)  # the bias gradient exists here
    np.testing.assert_allclose(ds, (dy * x_norm).sum((0, 2, 3)), rtol=1e-12)


def up_cbn(xs, scales, biases, dys, rm, rv):
    """fast_v_cbn_kernel + normalize_scale_bias_kernel over the mini-batches of one iteration,
    and cuDNN's batch-norm backward with that saved mean and inverse std."""
    m_avg = v_avg = np.zeros(C)
    out = []
    for k, (x, dy) in enumerate(zip(xs, dys), 1):
        mean = x.sum((0, 2, 3)) / N
        v_tmp = np.maximum((x ** 2).sum((0, 2, 3)) / (N - 1), mean ** 2)
        a = 1.0 / k
        m_avg = a * mean + (1 - a) * m_avg
        v_avg = a * v_tmp + (1 - a) * v_avg
        var = np.maximum(0.0, v_avg - m_avg ** 2)
        rm = 0.01 * m_avg + 0.99 * rm
        rv = 0.01 * var + 0.99 * rv
        istd = (1 / np.sqrt(var + EPS))[None, :, None, None]
        xhat = (x - m_avg[None, :, None, None]) * istd
        y = xhat * scales[None, :, None, None] + biases[None, :, None, None]
        db = dy.sum((0, 2, 3))
        ds = (dy * xhat).sum((0, 2, 3))
        c = lambda v: v[None, :, None, None]  # noqa: E731
        dx = c(scales) * istd * (dy - c(db) / N - xhat * c(ds) / N)
        out.append((y, dx, ds, db))
    return out, rm, rv


def test_cmbn_two_minibatches_match_fast_v_cbn():
    x1, scales, biases, dy1 = case()
    x2, _, _, dy2 = case()
    ref, rm_ref, rv_ref = up_cbn([x1, x2], scales, biases, [dy1, dy2], np.full(C, 0.5), np.full(C, 2.0))
    rm, rv = t(np.full(C, 0.5)), t(np.full(C, 2.0))
    state = {}
    for k, (x, dy) in enumerate(((x1, dy1), (x2, dy2)), 1):
        got = run(batchnorm_cbn, x, scales, biases, dy, rm, rv, state, k)
        for g, r in zip(got, ref[k - 1]):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm.numpy(), rm_ref, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), rv_ref, rtol=1e-12)


def test_cmbn_first_minibatch_ignores_stale_averages():
    x, scales, biases, dy = case()
    a = run(batchnorm_cbn, x, scales, biases, dy, t(np.zeros(C)), t(np.ones(C)), {}, 1)
    b = run(batchnorm_cbn, x, scales, biases, dy, t(np.zeros(C)), t(np.ones(C)),
            {"m_avg": t(np.full(C, 7.0)), "s_avg": t(np.full(C, 9.0))}, 1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_batch_stats_unbiased():
    x = case()[0]
    mean, var = batch_stats(t(x))
    np.testing.assert_allclose(var.numpy(), x.var((0, 2, 3), ddof=1), rtol=1e-12)
    np.testing.assert_allclose(mean.numpy(), x.mean((0, 2, 3)), rtol=1e-12)


CFG = """[net]
batch=2
width=8
height=8
channels=3

[convolutional]
batch_normalize={bn}
filters=4
size=3
stride=1
pad=1
activation=linear
"""


@pytest.mark.parametrize("bn", [1, 2])
def test_conv_layer_uses_training_bn_only_when_built_for_training(bn):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for train in (False, True):
        net = Network(parse_cfg_text(CFG.format(bn=bn), "t.cfg"), "t.cfg", batch=2, train=train)
        conv = net.layers[0]
        torch.nn.init.normal_(conv.weights, generator=torch.Generator().manual_seed(1))
        conv.rolling_variance.fill_(1.0)  # a fresh layer's is 0, as upstream's calloc
        net.train()
        y = net(x)[0]
        pre = F.conv2d(x, conv.weights, None, 1, 1)
        if train:  # batch statistics: every channel of the output has mean 0
            assert y.mean((0, 2, 3)).abs().max() < 1e-5
            assert not torch.equal(conv.rolling_mean, torch.zeros(4))
        else:  # rolling statistics (0, 1): the convolution itself, nearly
            torch.testing.assert_close(y, pre / (1 + EPS) ** 0.5)
            assert torch.equal(conv.rolling_mean, torch.zeros(4))
        net.eval()
        rm = conv.rolling_mean.clone()
        net(x)
        assert torch.equal(conv.rolling_mean, rm)  # inference leaves the statistics alone

