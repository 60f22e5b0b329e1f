"""The command line: upstream's output lines, files written, and errors without tracebacks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = Path(__file__).parent / "data" / "map"


def run(args, cwd, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def mapdir(tmp_path):
    d = tmp_path / "map"
    shutil.copytree(MAP, d)
    return d


def upstream_detection_lines(log):
    lines = log.read_text().splitlines()
    i = next(i for i, l in enumerate(lines) if "Predicted in" in l)
    return lines[i + 1:]


def test_detector_test_prints_upstream_lines(mapdir):
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "val/v1_flip.png",
             "-dont_show", "-ext_output"], mapdir)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    i = next(i for i, l in enumerate(out) if l.startswith("val/v1_flip.png: Predicted in "))
    assert out[i + 1:] == upstream_detection_lines(MAP / "test_ext.log")
    assert " Detection layer: 30 - type = 28 " in out and " Detection layer: 37 - type = 28 " in out
    assert (mapdir / "predictions.jpg").stat().st_size > 1000
    assert "Traceback" not in r.stderr


def test_detector_test_reads_paths_from_stdin_and_writes_json(mapdir):
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "-dont_show",
             "-out", "result.json"], mapdir, stdin="val/v1_flip.png\nval/v0.png\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Enter Image Path: ") == 3
    assert "val/v1_flip.png: Predicted in" in r.stdout and "val/v0.png: Predicted in" in r.stdout
    assert "truck: 59%" in r.stdout
    doc = json.loads((mapdir / "result.json").read_text())
    assert [d["frame_id"] for d in doc] == [1, 2]
    assert doc[0]["filename"] == "val/v1_flip.png"
    assert any(o["name"] == "truck" and abs(o["confidence"] - 0.59) < 0.01 for o in doc[0]["objects"])


@pytest.mark.parametrize("mutation,needle", [
    (("map-yolov4-tiny.cfg", "filters=24", "filters=2x4"), "map-yolov4-tiny.cfg:"),
    (("map-yolov4-tiny.cfg", "[maxpool]", "[maxpol]"), "unknown section [maxpol]"),
    (("obj.data", "names=obj.names", "names=missing.names"), "missing.names"),
])
def test_bad_input_is_one_line_no_traceback(mapdir, mutation, needle):
    f, old, new = mutation
    p = mapdir / f
    p.write_text(p.read_text().replace(old, new, 1))
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "val/v0.png", "-dont_show"],
            mapdir)
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_weights_and_image(mapdir):
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "nope.weights", "val/v0.png"], mapdir)
    assert r.returncode == 1 and "nope.weights" in r.stderr and "Traceback" not in r.stderr
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "val/nope.png"], mapdir)
    assert r.returncode == 1 and "nope.png" in r.stderr and "Traceback" not in r.stderr


def test_error_line_names_file_line_key(mapdir):
    p = mapdir / "map-yolov4-tiny.cfg"
    text = p.read_text()
    p.write_text(text.replace("filters=24", "filters=2x4", 1))
    line = next(i for i, l in enumerate(p.read_text().splitlines(), 1) if "filters=2x4" in l)
    r = run(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "val/v0.png"], mapdir)
    assert f"map-yolov4-tiny.cfg:{line}: key 'filters'" in r.stderr


def test_usage(tmp_path):
    r = run([], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
    r = run(["detector", "test"], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
