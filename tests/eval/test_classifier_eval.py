"""Classifier pieces worked by hand: top_k (upstream's tie order), hierarchy_predictions, the
[softmax] / [cost] training deltas and the gradient the network hands back through them."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from darknet_py.cfg import parse_cfg_text
from darknet_py.data.classifier import Hierarchy
from darknet_py.eval.classifier import hierarchy_predictions, top_k
from darknet_py.network import Network


def upstream_top_k(a, k):
    """src/utils.c top_k, line by line: the specification."""
    index = [-1] * k
    for i in range(len(a)):
        curr = i
        for j in range(k):
            if index[j] < 0 or a[curr] > a[index[j]]:
                index[j], curr = curr, index[j]
    return index


def test_top_k_ties_as_upstream():
    # [0, 0, 1], k=2: the second 0 (cat) stays where the first (bird) would have gone
    assert top_k([0.0, 0.0, 1.0], 2) == [2, 1]
    assert top_k([0.1, 0.7, 0.2], 3) == [1, 2, 0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(1, 12))
def test_top_k_matches_upstream(values, k):
    k = min(k, len(values))
    a = np.float32(values)
    assert top_k(a, k) == upstream_top_k(a, k)


def test_hierarchy_predictions():
    tree = Hierarchy(parents=(-1, -1, 0, 0), group_sizes=(2, 2), names=("animal", "vehicle", "dog", "cat"),
                     leaf=(False, True, True, True))
    p = np.float32([0.6, 0.4, 0.75, 0.25])
    # children times their parent: dog 0.75 * 0.6 = 0.45, cat 0.25 * 0.6 = 0.15
    np.testing.assert_allclose(hierarchy_predictions(p, tree, False), [0.6, 0.4, 0.45, 0.15], rtol=1e-6)
    np.testing.assert_allclose(hierarchy_predictions(p, tree, True), [0, 0.4, 0.45, 0.15], rtol=1e-6)


NET = """
[net]
batch=2
width=1
height=1
channels=4
[connected]
output=3
activation=linear
[softmax]
temperature={t}
[cost]
type={cost}
scale={scale}
"""


def net_for(t=1.0, cost="sse", scale=1.0):
    return Network(parse_cfg_text(NET.format(t=t, cost=cost, scale=scale), "hand.cfg"), "hand.cfg", train=True,
                   quiet=True)


def test_softmax_and_cost_deltas_by_hand():
    net = net_for()
    softmax, cost = net.layers[1], net.layers[2]
    p = torch.tensor([[0.7, 0.2, 0.1]])
    t = torch.tensor([[0.0, 0.0, 1.0]])
    delta, c = softmax.loss_delta(p, t)
    np.testing.assert_allclose(delta, [[-0.7, -0.2, 0.9]], rtol=1e-6)
    assert c == pytest.approx(-np.log(0.1), rel=1e-6)  # -log(p) where the truth is not 0
    t_smooth = torch.tensor([[0.05, 0.05, 0.9]])
    assert softmax.loss_delta(p, t_smooth)[1] == pytest.approx(-np.log([0.7, 0.2, 0.1]).sum(), rel=1e-6)
    delta, c = cost.loss_delta(p, t)
    np.testing.assert_allclose(delta, [[-0.7, -0.2, 0.9]], rtol=1e-6)
    assert c == pytest.approx(0.49 + 0.04 + 0.81, rel=1e-6)
    smooth = net_for(cost="smooth").layers[2]
    delta, c = smooth.loss_delta(torch.tensor([[2.5, 0.0, 0.5]]), torch.tensor([[0.0, 0.0, 1.0]]))
    # |diff| >= 1: error 2|d| - 1, delta sign(d); else d^2 and d
    np.testing.assert_allclose(delta, [[-1, 0, 0.5]])
    assert c == pytest.approx(4 + 0 + 0.25)


@pytest.mark.parametrize("t,scale", [(1.0, 1.0), (2.0, 0.5)])
def test_gradient_reaching_the_softmax_input(t, scale):
    """Upstream hands the softmax's delta (truth - output) plus the cost's scale * (truth - output)
    to the layer before unchanged (axpy: no softmax Jacobian, no 1/temperature); autograd of the
    training forward must give exactly minus that at the softmax input."""
    from darknet_py.train.loop import forward_backward

    net = net_for(t=t, scale=scale)
    net.train()
    x = torch.randn(2, 4, 1, 1)
    truth = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen["z"] = output

    net.layers[0].register_forward_hook(keep)
    forward_backward(net, x, truth)
    z = seen["z"].detach().reshape(2, 3)
    p = torch.softmax(z / t, dim=1)
    expected = -((truth - p) + scale * (truth - p))
    torch.testing.assert_close(seen["z"].grad.reshape(2, 3), expected, rtol=1e-5, atol=1e-6)
