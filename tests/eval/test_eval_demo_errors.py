"""detector demo on a small synthetic video; bad input to the evaluation commands; detector
test reading a list of images from standard input."""
import io
import json

import cv2
import pytest

from evalkit import CFG, MAP, WEIGHTS, run_cli

from darknet_py import cli

FRAMES = ["val/v0.png", "val/v1_flip.png", "val/v2_shift.png", "val/v3_vflip.png"]


def make_video(d, name="in.avi"):
    """The four val images as a lossless (FFV1) video, so frame i is image i exactly."""
    w = cv2.VideoWriter(str(d / name), cv2.VideoWriter_fourcc(*"FFV1"), 5, (128, 128))
    if not w.isOpened():
        w = cv2.VideoWriter(str(d / name), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 128))
    assert w.isOpened()
    for f in FRAMES:
        w.write(cv2.imread(str(d / f)))
    w.release()
    return name


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_cli_demo_writes_annotated_video(evaldir):
    video = make_video(evaldir)
    r = run_cli(["detector", "demo", "obj.data", CFG, WEIGHTS, video, "-out_filename", "out.mp4", "-dont_show",
                 "-ext_output", "-json_file_output", "frames.json"], evaldir)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert out.startswith("Demo\nvideo file: in.avi\nVideo stream: 128 x 128 \n")
    assert out.count("Objects:") == 4 and out.count("\nFPS:") == 4 and out.count("cvWriteFrame") == 4
    frames = out.split("Objects:")[1:]
    assert "truck: 59% \t(left_x:   87   top_y:" in frames[1]  # detector test says truck: 59% too
    assert "dog: " in frames[0] and "bicycle: " in frames[0]
    assert "output_video_writer closed." in out
    assert count_frames(evaldir / "out.mp4") == 4
    assert [p.name for p in evaldir.iterdir() if "tmp" in p.name] == []
    doc = json.loads((evaldir / "frames.json").read_text())
    assert [f["frame_id"] for f in doc] == [1, 2, 3, 4]
    assert any(o["name"] == "truck" for o in doc[1]["objects"])
    # the annotated frames differ from the input where boxes were drawn
    cap = cv2.VideoCapture(str(evaldir / "out.mp4"))
    ok, first = cap.read()
    assert ok and first.shape == (128, 128, 3)


def test_demo_prefix_writes_frames(evaldir, eval_net):
    from darknet_py.eval.demo import demo

    video = make_video(evaldir)
    out = io.StringIO()
    res = demo(CFG, WEIGHTS, ["bicycle", "dog", "truck"], 3, video, prefix="frame", out=out, net=eval_net)
    assert res["frames"] == 4
    assert sorted(p.name for p in evaldir.glob("frame_*.jpg")) == [f"frame_{i:08d}.jpg" for i in range(1, 5)]


def cli_main(argv, capsys):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _write(p, text):
    p.write_text(text)
    return p.name


CASES = ["empty_list", "missing_list", "missing_image", "label_outside", "bad_class", "short_weights",
         "long_weights", "names_mismatch"]
# detector valid reads no labels and detector recall no names: those pairs do not apply
APPLICABLE = [(case, command) for command in ("map", "valid", "recall") for case in CASES
              if not (command == "valid" and case in ("label_outside", "bad_class"))
              and not (command == "recall" and case == "names_mismatch")]


@pytest.mark.parametrize("case,command", APPLICABLE)
def test_bad_input_one_line_exit_1(evaldir, capsys, case, command):
    data = "obj.data"
    weights = WEIGHTS
    needle = None
    if case == "empty_list":
        _write(evaldir / "empty.txt", "\n")
        data = _write(evaldir / "x.data", "classes=3\nvalid=empty.txt\nnames=obj.names\n")
        needle = "empty.txt: the valid image list is empty"
    elif case == "missing_list":
        data = _write(evaldir / "x.data", "classes=3\nvalid=nope.txt\nnames=obj.names\n")
        needle = "nope.txt"
    elif case == "missing_image":
        _write(evaldir / "m.txt", "val/v0.png\nval/missing.png\n")
        data = _write(evaldir / "x.data", "classes=3\nvalid=m.txt\nnames=obj.names\n")
        needle = "val/missing.png"
    elif case in ("label_outside", "bad_class"):
        (evaldir / "o").mkdir()
        (evaldir / "o" / "a.png").write_bytes((evaldir / "val" / "v0.png").read_bytes())
        line = "0 0.5 0.5 1.2 0.3\n" if case == "label_outside" else "5 0.5 0.5 0.2 0.3\n"
        _write(evaldir / "o" / "a.txt", "1 0.3 0.3 0.1 0.1\n" + line)
        _write(evaldir / "o.txt", "o/a.png\n")
        data = _write(evaldir / "x.data", "classes=3\nvalid=o.txt\nnames=obj.names\n")
        needle = "o/a.txt:2:"
    elif case == "short_weights":
        weights = _write(evaldir / "short.weights", "")
        (evaldir / weights).write_bytes((evaldir / WEIGHTS).read_bytes()[:20000])
        needle = "short.weights: this weights file has fewer numbers than map-yolov4-tiny.cfg needs"
    elif case == "long_weights":
        weights = "long.weights"
        (evaldir / weights).write_bytes((evaldir / WEIGHTS).read_bytes() * 2)
        needle = "long.weights: this weights file has more numbers than map-yolov4-tiny.cfg needs"
    elif case == "names_mismatch":
        _write(evaldir / "two.names", "a\nb\n")
        data = _write(evaldir / "x.data", "classes=3\nvalid=val.txt\nnames=two.names\n")
        needle = "two.names: has 2 names but classes=3"
    rc, out, err = cli_main(["detector", command, data, CFG, weights], capsys)
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    error_lines = [l for l in err.splitlines() if l.startswith("Error: ")]
    assert len(error_lines) == 1 and needle in error_lines[0], err


def test_demo_and_anchors_bad_input(evaldir, capsys):
    rc, out, err = cli_main(["detector", "demo", "obj.data", CFG, WEIGHTS, "nope.mp4", "-dont_show"], capsys)
    assert rc == 1 and "nope.mp4" in err and "Traceback" not in err
    rc, out, err = cli_main(["detector", "calc_anchors", "obj.data", "-num_of_clusters", "3"], capsys)
    assert rc == 1 and "set -width and -height" in err
    _write(evaldir / "val" / "v0.txt", "0 0.5 0.5 0 0.3\n")  # a box of width 0
    _write(evaldir / "y.data", "classes=3\ntrain=val.txt\n")
    rc, out, err = cli_main(["detector", "calc_anchors", "y.data", "-num_of_clusters", "1", "-width", "64",
                             "-height", "64"], capsys)
    assert rc == 1 and "val/v0.txt:1: Wrong label" in err


def test_detector_test_list_on_stdin(evaldir):
    """`detector test ... -dont_show -ext_output < list`: upstream's lines for every image."""
    r = run_cli(["detector", "test", "obj.data", CFG, WEIGHTS, "-dont_show", "-ext_output"], evaldir,
                stdin="val/v1_flip.png\nval/v0.png\n")
    assert r.returncode == 0, r.stderr
    log = (MAP / "test_ext.log").read_text().splitlines()
    i = next(k for k, l in enumerate(log) if "Predicted in" in l)
    expected_v1 = log[i + 1:]
    lines = r.stdout.splitlines()
    a = next(k for k, l in enumerate(lines) if "val/v1_flip.png: Predicted in" in l)
    b = next(k for k, l in enumerate(lines) if "val/v0.png: Predicted in" in l)
    got_v1 = [l for l in lines[a + 1:b] if not l.startswith(("Enter Image Path", " Detection layer"))]
    assert got_v1 == expected_v1
    assert r.stdout.count("Enter Image Path: ") == 3
    assert any(l.startswith("truck: 99%") for l in lines[b + 1:])
