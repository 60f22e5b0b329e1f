"""With every augmentation off, the loader reproduces upstream's first training batch
(tests/data/train/*/step1: input.f32 and truth.f32 written by upstream darknet)."""
import json
from pathlib import Path

import numpy as np
import pytest

from darknet_py.data import DetectionLoader, loader_from_net, read_list, read_obj_data
from darknet_py.network import build_network

CASES = sorted(p for p in (Path(__file__).resolve().parent.parent / "data" / "train").iterdir() if p.is_dir())


def _expected(case: Path):
    step = json.loads((case / "step1" / "step.json").read_text())
    n, boxes, size = step["mini_batch"], step["max_boxes"], step["truth_size"]
    x = np.fromfile(case / "step1" / "input.f32", dtype=np.float32)
    x = x.reshape(n, 3, -1)
    side = int(round((x.shape[2]) ** 0.5))
    truth = np.fromfile(case / "step1" / "truth.f32", dtype=np.float32).reshape(n, boxes, size)
    return x.reshape(n, 3, side, side), truth


def _assert_same_batch(x, truth, want_x, want_truth):
    assert x.dtype == np.float32 and truth.dtype == np.float32
    assert x.shape == want_x.shape and truth.shape == want_truth.shape
    assert np.abs(x - want_x).max() < 1e-5
    for got, want in zip(truth, want_truth):
        # upstream shuffles the rows with C's rand(): compare as sets, bit for bit
        assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
        assert not got[3:].any()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_upstream_first_batch(case, monkeypatch):
    monkeypatch.chdir(case)  # list and label paths are relative, as upstream runs there
    data = read_obj_data("obj.data")
    net = build_network(next(case.glob("*.cfg")))
    want_x, want_truth = _expected(case)
    with loader_from_net(net, read_list(data.train), data.classes, seed=0, workers=0,
                         bad_list=None, bad_label_list=None) as loader:
        assert (loader.options.jitter, loader.options.flip, loader.options.mixup) == (0, 0, 0)
        x, truth = loader.load(len(want_x))
    _assert_same_batch(x.numpy(), truth.numpy(), want_x, want_truth)


def test_recomputed_w_as_upstream(monkeypatch):
    """w = right - left after correct_boxes: 0.586 becomes 0.58599997 as upstream."""
    case = CASES[0]
    monkeypatch.chdir(case)
    loader = DetectionLoader(read_list("train.txt"), width=128, height=128, classes=3, jitter=0, flip=0,
                             seed=1, workers=0, bad_list=None, bad_label_list=None)
    _, truth = loader.load(1)
    widths = set(truth[0, :3, 2].tolist())
    assert float(np.float32(0.58599997)) in widths and float(np.float32(0.586)) not in widths


def test_same_batch_through_worker_processes(monkeypatch):
    case = CASES[0]
    monkeypatch.chdir(case)
    want_x, want_truth = _expected(case)
    loader = DetectionLoader(read_list("train.txt"), width=128, height=128, classes=3, jitter=0, flip=0,
                             hue=0, saturation=1, exposure=1, mixup=0, blur=0, letter_box=0, seed=5,
                             workers=2, bad_list=None, bad_label_list=None)
    try:
        stream = loader.batches(len(want_x))
        for _ in range(3):
            x, truth = next(stream)
            _assert_same_batch(x.numpy(), truth.numpy(), want_x, want_truth)
    finally:
        loader.close()
