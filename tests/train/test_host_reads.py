"""A training step reads the device a bounded number of times, whatever the depth of the network.

On a GPU every read of a device value from Python (.item(), .tolist(), bool(), int(), float(),
nonzero, a boolean-mask index) makes the host wait for the GPU. Counted here on the CPU by
patching those entry points during one train_batch (after a warm-up): the yolo layers plan
their truth assignments on the host (numpy) and read their statistics once, and the update
checks every weight for NaN/inf with one read, so the count is subdivisions x detection layers
+ 1, for 38 layers as for 112. (.numpy() is not counted: it only works on host tensors.)
"""
import io
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _is_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


@pytest.fixture
def count_reads(monkeypatch):
    counts = Counter()
    for name in ("item", "tolist", "__bool__", "nonzero", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def patched(self, *a, _name=name, _original=original, **k):
            counts[_name] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, patched)
    for name in ("__getitem__", "__setitem__"):
        original = getattr(torch.Tensor, name)

        def patched(self, index, *a, _name=name, _original=original):
            if _is_mask(index):
                counts[f"{_name}[bool]"] += 1
            return _original(self, index, *a)
        monkeypatch.setattr(torch.Tensor, name, patched)
    original_nonzero = torch.nonzero
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: (counts.update(["torch.nonzero"]), original_nonzero(*a, **k))[1])
    return counts


@pytest.mark.parametrize("cfg", ["yolov4-tiny", "yolov4-csp-s-mish"])
def test_train_batch_reads_the_device_a_bounded_number_of_times(cfg, count_reads):
    from train import bench_cfg, build, synthetic_batch  # benchmarks/train.py

    from darknet_py.train.loop import Trainer

    subdivisions, size = 2, 64  # small: the count does not depend on the size
    net = build(bench_cfg(cfg, size, 2, 3, 100).replace("subdivisions=1", f"subdivisions={subdivisions}"))
    net.initialize(0)
    trainer = Trainer(net)
    x, truth = synthetic_batch(2, size, 90, 3, np.random.default_rng(0))
    trainer.train_batch(x, truth, io.StringIO())  # warm-up: nothing counted yet
    count_reads.clear()
    trainer.train_batch(x, truth, io.StringIO())
    heads = sum(l.type_name == "yolo" for l in net.layers)
    assert sum(count_reads.values()) <= subdivisions * heads + 1, dict(count_reads)
