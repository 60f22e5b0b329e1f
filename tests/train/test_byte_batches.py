"""A GPU is handed the loader's bytes and converts them itself (a quarter of the copy): the
batch it trains on, and so the step, are the float batch's bit for bit. Checked here on the
CPU through the same Trainer.network_input."""
import os
from pathlib import Path

import numpy as np
import torch

from darknet_py.data import DetectionLoader, loader_from_net, read_list, read_obj_data
from darknet_py.network import build_network
from darknet_py.train.loop import Trainer

CASE = Path(__file__).resolve().parent.parent / "data" / "train" / "t2-yolov4-tiny-ciou"


def _loaders(paths, **kw):
    common = dict(width=96, height=64, classes=3, seed=3, workers=0, bad_list=None, bad_label_list=None,
                  jitter=0.3, hue=0.1, saturation=1.5, exposure=1.5, flip=1, **kw)
    return DetectionLoader(paths, **common), DetectionLoader(paths, uint8=True, **common)


def test_byte_batches_are_the_float_batches(monkeypatch):
    monkeypatch.chdir(CASE)
    paths = read_list(read_obj_data("obj.data").train)
    for mixup, as_bytes in ((3, True), (0, True), (1, False)):  # mixup=1 blends: no byte holds it
        floats, bytes_ = _loaders(paths, mixup=mixup)
        (xf, tf), (xb, tb) = floats.load(4), bytes_.load(4)
        assert (xb.dtype == torch.uint8) == as_bytes and xb.shape == xf.shape
        trainer = Trainer(build_network(next(CASE.glob("*.cfg")), train=True))
        assert torch.equal(trainer.network_input(xb), trainer.network_input(xf))
        # NCHW bytes take the lookup a GPU uses
        assert torch.equal(trainer.network_input(xb.contiguous()), trainer.network_input(xf))
        assert torch.equal(tb, tf)


def test_a_step_on_bytes_is_the_step_on_floats(monkeypatch):
    monkeypatch.chdir(CASE)
    net_f = build_network(next(CASE.glob("*.cfg")), train=True)
    net_f.load_weights("init.weights")
    net_b = build_network(next(CASE.glob("*.cfg")), train=True)
    net_b.load_weights("init.weights")
    paths = read_list(read_obj_data("obj.data").train)
    lf = loader_from_net(net_f, paths, seed=1, workers=0, bad_list=None, bad_label_list=None)
    lb = loader_from_net(net_b, paths, seed=1, workers=0, bad_list=None, bad_label_list=None, uint8=True)
    (xf, tf), (xb, tb) = lf.load(2), lb.load(2)
    assert xb.dtype == torch.uint8
    devnull = open(os.devnull, "w")
    loss_f = Trainer(net_f).train_batch(xf, tf, err=devnull)
    loss_b = Trainer(net_b).train_batch(xb, tb, err=devnull)
    assert loss_f == loss_b
    for a, b in zip(net_f.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)
