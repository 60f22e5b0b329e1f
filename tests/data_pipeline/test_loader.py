"""DetectionLoader plumbing: worker threads and processes, sizes, seeds, options from a network,
cutmix / letter_box+mosaic handling, -show_imgs previews, multi-scale sizes."""
import multiprocessing as mp
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from darknet_py.data import DetectionLoader, MultiScale, loader_from_net, sizes_from_net
from darknet_py.data.detection import LETTERBOX_MOSAIC_MESSAGE, PREVIEW_BOX_RGB, draw_preview
from darknet_py.network import build_network

ROOT = Path(__file__).resolve().parents[2]
QUIET = dict(bad_list=None, bad_label_list=None)


def test_batches_sizes_and_prefetch(scene):
    sizes = iter([(96, 64), (64, 96), (128, 128)] * 10)
    loader = DetectionLoader([scene], width=96, height=96, classes=3, mixup=3, jitter=0.3, seed=0,
                             workers=2, **QUIET)
    try:
        got = [next(s) for s in [loader.batches(4, lambda: next(sizes))] for _ in range(3)][0:3]
    finally:
        loader.close()
    assert [tuple(x.shape) for x, _ in got] == [(4, 3, 64, 96), (4, 3, 96, 64), (4, 3, 128, 128)]
    assert all(t.shape == (4, 200, 6) for _, t in got)


def test_batches_are_the_same_with_any_worker_count(scene):
    def take(workers, kind="thread"):
        loader = DetectionLoader([scene], width=64, height=64, classes=3, jitter=0.3, flip=1, mixup=3,
                                 hue=0.1, saturation=1.5, exposure=1.5, seed=42, workers=workers, kind=kind,
                                 **QUIET)
        try:
            stream = loader.batches(3)
            return [next(stream) for _ in range(3)]
        finally:
            loader.close()

    a, b = take(0), take(2)
    for (xa, ta), (xb, tb) in zip(a, b):
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ta.numpy(), tb.numpy())
    c = take(2, "process")
    for (xa, ta), (xc, tc) in zip(a, c):
        assert np.array_equal(xa.numpy(), xc.numpy()) and np.array_equal(ta.numpy(), tc.numpy())


def _loader_threads():
    return {t for t in threading.enumerate() if t.name.startswith("darknet-loader")}


def test_close_stops_worker_threads(scene):
    before = _loader_threads()
    loader = DetectionLoader([scene], width=64, height=64, classes=3, seed=0, workers=2, **QUIET)
    stream = loader.batches(2)
    next(stream)
    assert len(_loader_threads() - before) == 2
    loader.close()
    deadline = time.monotonic() + 5
    while _loader_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _loader_threads() - before


def test_close_stops_worker_processes(scene):
    before = set(mp.active_children())
    loader = DetectionLoader([scene], width=64, height=64, classes=3, seed=0, workers=2, kind="process", **QUIET)
    stream = loader.batches(2)
    next(stream)
    assert len(set(mp.active_children()) - before) == 2
    loader.close()
    assert not set(mp.active_children()) - before


def test_batch_size_from_sizes_fn(scene):
    loader = DetectionLoader([scene], width=64, height=64, classes=3, seed=0, workers=0, **QUIET)
    x, _ = next(loader.batches(4, lambda: (64, 32, 3)))
    assert tuple(x.shape) == (3, 3, 32, 64)


def test_cutmix_is_refused_with_upstreams_message(scene, capsys):
    loader = DetectionLoader([scene], width=64, height=64, classes=3, mixup=2, seed=0, workers=0, **QUIET)
    assert "cutmix=1 - isn't supported for Detector" in capsys.readouterr().out
    assert loader.options.mixup == 0
    both = DetectionLoader([scene], width=64, height=64, classes=3, mixup=4, seed=0, workers=0, **QUIET)
    assert both.options.mixup == 3  # mosaic + cutmix -> mosaic only


def test_letter_box_with_mosaic_is_an_error(scene):
    with pytest.raises(ValueError, match=re.escape(LETTERBOX_MOSAIC_MESSAGE)):
        DetectionLoader([scene], width=64, height=64, classes=3, mixup=3, letter_box=1)


def test_show_imgs_writes_previews(scene, in_tmp, capsys):
    loader = DetectionLoader([scene], width=96, height=64, classes=3, jitter=0, flip=0, show_imgs=True,
                             seed=0, workers=0, **QUIET)
    loader.load(3)
    files = sorted(p.name for p in in_tmp.glob("aug_*.jpg"))
    assert len(files) == 3 and all(re.fullmatch(r"aug_\d+_[012]_\d+\.jpg", f) for f in files)
    assert "You use flag -show_imgs" in capsys.readouterr().out
    assert cv2.imread(str(in_tmp / files[0])).shape == (64, 96, 3)


def test_preview_draws_boxes_in_upstreams_colour():
    x = np.zeros((3, 64, 96), np.float32)
    truth = np.zeros((4, 6), np.float32)
    truth[0, :4] = [0.25, 0.5, 0.25, 0.5]  # columns 12..36, rows 16..48
    rgb = draw_preview(x, truth)[:, :, ::-1]
    assert PREVIEW_BOX_RGB == (106, 156, 206)  # (150, 100, 50) * 255 wrapped to a byte
    assert (rgb[16, 12:37] == PREVIEW_BOX_RGB).all() and (rgb[16:49, 36] == PREVIEW_BOX_RGB).all()
    assert rgb[17:48, 13:36].max() == 0 and rgb[:16].max() == 0


def test_loader_from_net_reads_net_and_last_yolo_layer(tmp_path, scene):
    cfg = (ROOT / "cfg" / "yolov4-tiny.cfg").read_text()
    cfg = cfg.replace("width=416", "width=64").replace("height=416", "height=64").replace("random=0", "random=1")
    cfg = cfg.replace("[net]", "[net]\nmosaic=1\nmosaic_bound=1\nblur=3\ngaussian_noise=5\nletter_box=0", 1)
    p = tmp_path / "net.cfg"
    p.write_text(cfg)
    net = build_network(p)
    loader = loader_from_net(net, [scene], 80, seed=0, workers=0, **QUIET)
    o = loader.options
    last = [l for l in net.layers if l.type_name == "yolo"][-1]
    assert (loader.width, loader.height, o.channels) == (64, 64, 3)
    assert (o.jitter, o.resize, o.max_boxes, o.classes) == (last.jitter, last.resize, last.max_boxes, 80)
    assert (o.mixup, o.mosaic_bound, o.blur, o.gaussian_noise) == (3, 1, 3, 5)
    assert (o.hue, o.saturation, o.exposure, o.flip) == (net.options.hue, net.options.saturation,
                                                         net.options.exposure, net.options.flip)
    x, truth = loader.load(2)
    assert tuple(x.shape) == (2, 3, 64, 64) and tuple(truth.shape) == (2, last.max_boxes, 6)
    sizes = sizes_from_net(net, seed=0)
    assert isinstance(sizes, MultiScale) and sizes() == (128, 128)  # random=1: round(1.4 * 64 / 32 + 1) * 32, the largest


def test_multiscale_follows_upstream_schedule():
    ms = MultiScale(416, 416, random=1, resize_step=32, max_batches=1000, seed=3)
    sizes = [ms() for _ in range(1000)]
    assert sizes[0] == (608, 608)  # round(1.4 * 416 / 32 + 1) * 32: first iteration uses the largest
    for k in range(0, 1000, 10):  # a new size every 10 iterations
        assert len(set(sizes[k:k + 10])) == 1
    assert all(w == h and w % 32 == 0 and 288 <= w <= 608 for w, h in sizes)
    assert len(set(sizes)) > 3
    assert all(s == (608, 608) for s in sizes[910:])  # the last 100 iterations use the largest
    fixed = MultiScale(320, 320, random=1.2, resize_step=32, max_batches=10**6, seed=1)
    assert fixed() == (416, 416)  # round(1.2 * 320 / 32 + 1) * 32
