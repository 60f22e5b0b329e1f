"""Upstream's device rules, and networks that keep their state on every device.

- with CUDA present every command uses GPU 0 unless -gpus / -i / -nogpu say otherwise
  (checked here with CUDA's presence faked; the device check script runs it on a GPU);
- load_network(device=) and Network.to() in any order: the fused (and, on the CPU, packed)
  weights follow the move, here to the `meta` device and to float64 and back;
- share_index keeps its batch-norm buffers shared after a move, and a resized network (random=1)
  shares every parameter and buffer with the one it came from, [crnn]'s inner convolutions
  included: a crnn detector trained across a resize saves the weights it trained.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

import darknet_py
from darknet_py import devices
from darknet_py.cfg import parse_cfg_text
from darknet_py.network import Network

ROOT = Path(__file__).resolve().parent.parent

CRNN_CFG = """[net]
batch=2
subdivisions=1
width=64
height=64
channels=3
learning_rate=0.01
momentum=0.9
decay=0.0005
max_batches=10

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[crnn]
batch_normalize=1
size=3
pad=1
output=8
hidden=8
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
share_index=2

[convolutional]
filters=24
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=3
num=3
random=1
"""


@pytest.fixture
def cuda(monkeypatch):
    """CUDA present with two devices, as far as device selection can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_gpu_0_unless_told_otherwise(cuda):
    assert devices.select_device() == torch.device("cuda", 0)
    assert devices.select_device(gpus=[1, 0]) == torch.device("cuda", 1)
    assert devices.select_device(index=1) == torch.device("cuda", 1)
    assert devices.select_device(gpus=[0], index=1) == torch.device("cuda", 0)  # -gpus wins, as upstream
    assert devices.select_device(nogpu=True, gpus=[1]) == torch.device("cpu")
    with pytest.raises(devices.DeviceError, match="GPU 2"):
        devices.select_device(index=2)


def test_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.select_device(gpus=[1], index=1) == torch.device("cpu")
    assert devices.parse_gpus("0, 2") == [0, 2] and devices.parse_gpus("") is None
    with pytest.raises(devices.DeviceError):
        devices.parse_gpus("a,b")


def test_fused_weights_follow_the_network():
    net = darknet_py.load_network(ROOT / "cfg" / "yolov4-tiny.cfg")
    x = np.random.default_rng(0).random((3, 416, 416), dtype=np.float32)
    want = net.predict_raw(x)
    conv = net.layers[0]
    net.double()
    assert conv._fused[0].dtype == torch.float64 and conv._packed is None
    net.float()
    assert conv._fused[0].dtype == torch.float32 and (conv._packed is not None) == (want is not None)
    got = net.predict_raw(x)
    for i in want:
        np.testing.assert_array_equal(got[i], want[i])
    net.to("meta")
    assert conv.weights.device.type == "meta" and conv._fused[0].device.type == "meta" and conv._packed is None


def _net(train=True):
    return Network(parse_cfg_text(CRNN_CFG, "crnn.cfg"), "crnn.cfg", train=train)


def test_share_index_buffers_stay_shared_after_a_move():
    net = _net().to(torch.float64)
    a, b = net.layers[2], net.layers[3]
    assert b.rolling_mean is a.rolling_mean and b.rolling_variance is a.rolling_variance
    assert b.scales is a.scales and b.conv_weight() is a.weights


def test_resized_shares_every_parameter_and_buffer():
    net = _net()
    small = net.resized(96, 96)
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), small.named_parameters()):
        assert n1 == n2 and p1 is p2, n1
    for (n1, b1), (n2, b2) in zip(net.named_buffers(), small.named_buffers()):
        assert n1 == n2 and b1 is b2, n1
    assert len(list(net.layers[1].parameters())) > 4  # the crnn's inner convolutions are in there


def test_crnn_detector_trained_across_a_resize_saves_what_it_trained(tmp_path):
    import io

    from darknet_py.train.loop import Trainer

    net = _net()
    net.initialize(seed=0)
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    trainer = Trainer(net)
    rng = np.random.default_rng(0)
    truth = np.zeros((2, 90, 6), np.float32)
    truth[:, 0, :5] = [0.5, 0.5, 0.3, 0.4, 1]
    err = io.StringIO()
    trainer.train_batch(rng.random((2, 3, 64, 64), dtype=np.float32), truth, err)
    trainer.resize(96, 96)
    trainer.train_batch(rng.random((2, 3, 96, 96), dtype=np.float32), truth, err)
    trainer.resize(64, 64)
    trainer.train_batch(rng.random((2, 3, 64, 64), dtype=np.float32), truth, err)
    trained = dict(trainer.net.named_parameters())
    crnn = [n for n in trained if n.startswith("layers.1.")]
    assert crnn and all(not torch.equal(trained[n], init[n]) for n in crnn if n.endswith("weights"))
    path = tmp_path / "w.weights"
    trainer.net.save_weights(path)
    again = _net(train=False)
    again.load_weights(path, verbose=False)
    for n, p in again.named_parameters():
        assert torch.equal(p, trained[n]), n
