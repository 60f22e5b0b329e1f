"""-mjpeg_port in detector train and classifier train: the chart (what chart.png holds) as
an MJPEG stream, pushed every iteration as upstream's draw_train_loss sends it; a port in use
is reported and training goes on; headless without -dont_show: the files only, no error."""
import io
import shutil
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from streamkit import decode_jpeg, free_port, parse_multipart, split_head, watched  # noqa: E402

from darknet_py import stream  # noqa: E402
from darknet_py.train.loop import train_detector  # noqa: E402

CASE = "t1-yolov3-tiny-mse"
SRC = ROOT / "tests" / "data" / "train" / CASE


@pytest.fixture()
def case(tmp_path, monkeypatch):
    d = tmp_path / CASE
    shutil.copytree(SRC, d)
    monkeypatch.chdir(d)
    monkeypatch.setenv(stream.HOST_ENV, "127.0.0.1")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    from darknet_py import display
    monkeypatch.setattr(display, "_state", {})
    return d


def test_detector_train_streams_the_chart(case, monkeypatch):
    readers = []
    monkeypatch.setattr(stream, "MjpegServer", watched(stream.MjpegServer, readers))
    port = free_port()
    out = io.StringIO()
    # dont_show=False headless: no window, no error, the files as with -dont_show
    code = train_detector("obj.data", f"{CASE}.cfg", "init.weights", dont_show=False, mjpeg_port=port, out=out,
                          err=io.StringIO(), workers=0)
    assert code == 0
    text = out.getvalue()
    assert f" MJPEG stream: http://127.0.0.1:{port}/" in text
    assert text.count(" MJPEG-stream sent. ") == 3  # max_batches=3: one per iteration, as upstream
    assert len(readers) == 1
    readers[0].join(10)
    status, headers, body = split_head(readers[0].data)
    assert status == "HTTP/1.0 200 OK" and "boundary=mjpegstream" in headers["content-type"]
    frames = [decode_jpeg(p) for p in parse_multipart(body)]
    assert len(frames) >= 2, len(frames)  # latest wins: a slow reader may skip, this one keeps up
    assert all(f.shape == (1000, 1000, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1]).max() > 100  # the status line changed
    chart = cv2.imread(str(case / "chart.png"))
    # the last frame is the chart the run ended with, at JPEG quality 70: measured mean |diff| 0.6
    assert np.abs(frames[-1].astype(int) - chart).mean() < 3
    assert (case / f"chart_{CASE}.png").is_file()


def test_port_in_use_training_goes_on(case, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = io.StringIO()
        code = train_detector("obj.data", f"{CASE}.cfg", "init.weights", mjpeg_port=port, out=out,
                              err=io.StringIO(), workers=0)
    assert code == 0
    err = capsys.readouterr().err
    assert f"couldn't bind to port {port}" in err and f"-mjpeg_port {port} is not served" in err
    assert "MJPEG-stream sent." not in out.getvalue()
    assert (case / "backup" / f"{CASE}_final.weights").is_file() and (case / "chart.png").is_file()


def test_classifier_train_streams_the_chart(tmp_path, make_weights, monkeypatch):
    from test_classifier_cases import case_copy, run_main

    c1 = "c1-darknet-ref"
    d = case_copy("classifier", c1, tmp_path, make_weights)
    monkeypatch.setenv(stream.HOST_ENV, "127.0.0.1")
    readers = []
    monkeypatch.setattr(stream, "MjpegServer", watched(stream.MjpegServer, readers))
    port = free_port()
    # through the command line: -mjpeg_port reaches train_classifier
    code, out, err = run_main(["classifier", "train", "obj.data", f"{c1}.cfg", "init.weights", "-dont_show",
                               "-mjpeg_port", str(port)], d)
    assert code == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/" in out and out.count(" MJPEG-stream sent. ") == 3
    readers[0].join(10)
    frames = [decode_jpeg(p) for p in parse_multipart(split_head(readers[0].data)[2])]
    assert len(frames) >= 2 and frames[-1].shape == (1000, 1000, 3)
    assert np.abs(frames[-1].astype(int) - cv2.imread(str(d / "chart.png"))).mean() < 3


def test_detector_train_command_line_port_in_use(case):
    import os
    import subprocess

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **{stream.HOST_ENV: "127.0.0.1"})
        r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", f"{CASE}.cfg",
                            "init.weights", "-dont_show", "-mjpeg_port", str(port)], cwd=case, env=env,
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if str(port) in line]
    assert len(lines) == 1 and "couldn't bind to port" in lines[0] and "goes on" in lines[0], lines
    assert (case / "backup" / f"{CASE}_final.weights").is_file()
