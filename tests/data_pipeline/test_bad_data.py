"""Bad data never stops a run and never passes silently: bad label lines are reported
with file and line and skipped, unreadable images are reported, put on bad.list as
upstream does, and replaced by another image. Each report appears once."""
from pathlib import Path

import numpy as np
import pytest

from darknet_py.data import DataError, DetectionLoader
from scenes import boxes_of, write_scene


def make_loader(paths, **kw):
    opts = dict(width=96, height=96, classes=3, jitter=0, flip=0, seed=0, workers=0)
    opts.update(kw)
    return DetectionLoader(paths, **opts)


def test_bad_label_lines_are_reported_once_and_skipped(in_tmp, capfd):
    img = write_scene(in_tmp)
    Path(img).with_suffix(".txt").write_text(
        "7 0.5 0.5 0.2 0.2\n0 0.25 x 0.3 0.3\n\n1 0.5 1.2 0.2 0.2\n2 0.5 0.5 0.4 0.4\n")
    loader = make_loader([img])
    _, truth = loader.load(2)
    _, truth2 = loader.load(2)
    err = capfd.readouterr().err
    label = str(Path(img).with_suffix(".txt"))
    for line, words in [(1, "class_id = 7"), (2, "'x' is not a number"), (4, "y = 1.200000")]:
        assert err.count(f"{label}:{line}:") == 1 and words in err  # once, despite 4 loads
    assert "line skipped" in err
    for t in np.concatenate([truth, truth2]):  # the good line is still used
        rows = boxes_of(t)
        assert rows[:, 4].tolist() == [2.0] and rows[0, :4].tolist() == pytest.approx([0.5, 0.5, 0.4, 0.4])
    bad_labels = (in_tmp / "bad_label.list").read_text().splitlines()
    assert len(bad_labels) == 3 and all(b.startswith(label) for b in bad_labels)


def test_unreadable_and_missing_images_go_to_bad_list(in_tmp, capfd):
    good = write_scene(in_tmp)
    (in_tmp / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (in_tmp / "corrupt.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    paths = [good, "missing.jpg", str(in_tmp / "corrupt.jpg")]
    loader = make_loader(paths)
    for _ in range(4):
        x, truth = loader.load(4)
        for t in truth:  # every sample is the good image
            assert len(boxes_of(t)) == 3
    err = capfd.readouterr().err
    assert err.count("missing.jpg: Cannot load image") == 1
    assert err.count("corrupt.jpg: Cannot load image") == 1
    bad = (in_tmp / "bad.list").read_text().splitlines()
    assert sorted(bad) == sorted(["missing.jpg", str(in_tmp / "corrupt.jpg")])


def test_missing_label_file_is_a_reported_negative(in_tmp, capfd):
    img = write_scene(in_tmp, label=False)
    _, truth = make_loader([img]).load(2)
    assert not truth.numpy().any()
    err = capfd.readouterr().err
    assert err.count("Can't open label file") == 1 and "scene.txt" in err
    assert (in_tmp / "bad.list").read_text().splitlines() == [str(in_tmp / "scene.txt")]


def test_empty_label_file_is_a_silent_negative(in_tmp, capfd):
    img = write_scene(in_tmp)
    Path(img).with_suffix(".txt").write_text("")
    _, truth = make_loader([img]).load(2)
    assert not truth.numpy().any() and capfd.readouterr().err == ""


def test_unknown_extension_is_reported(in_tmp, capfd):
    import cv2
    cv2.imwrite(str(in_tmp / "a.webp"), np.zeros((20, 20, 3), np.uint8))
    _, truth = make_loader([str(in_tmp / "a.webp")]).load(1)
    assert not truth.numpy().any()
    assert "Failed to infer label file name" in capfd.readouterr().err


def test_no_readable_image_is_an_error(in_tmp):
    with pytest.raises(DataError, match="none of the 2 images"):
        make_loader(["a.jpg", "b.jpg"]).load(1)


def test_reports_come_back_from_worker_processes(in_tmp, capfd):
    good = write_scene(in_tmp)
    Path(good).with_suffix(".txt").write_text("9 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    loader = make_loader([good, "gone.png"], workers=2)
    try:
        stream = loader.batches(3)
        for _ in range(4):
            next(stream)
    finally:
        loader.close()
    err = capfd.readouterr().err
    assert err.count("gone.png: Cannot load image") == 1
    assert err.count(f"{Path(good).with_suffix('.txt')}:1:") == 1
    assert (in_tmp / "bad.list").read_text().splitlines() == ["gone.png"]
