"""detector demo / classifier demo with -mjpeg_port, -json_port, -http_post_host: the streams
carry what the files carry (src/demo.c, src/http_stream.cpp)."""
import io
import json
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from evalkit import CFG, WEIGHTS
from test_eval_demo_errors import FRAMES, make_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamkit import (decode_jpeg, free_port, parse_json_stream, parse_multipart, post_server,  # noqa: E402
                       split_head, watched)

from darknet_py import stream  # noqa: E402
from darknet_py.eval.demo import demo  # noqa: E402

NAMES = ["bicycle", "dog", "truck"]


@pytest.fixture()
def loopback(monkeypatch):
    monkeypatch.setenv(stream.HOST_ENV, "127.0.0.1")


def test_demo_json_and_mjpeg_streams_match_the_files(evaldir, eval_net, loopback, monkeypatch):
    readers = []
    monkeypatch.setattr(stream, "MjpegServer", watched(stream.MjpegServer, readers))
    monkeypatch.setattr(stream, "JsonServer", watched(stream.JsonServer, readers))
    video = make_video(evaldir)
    out = io.StringIO()
    mport, jport = free_port(), free_port()
    res = demo(CFG, WEIGHTS, NAMES, 3, video, dont_show=True, prefix="frame", json_file_output="frames.json",
               mjpeg_port=mport, json_port=jport, out=out, net=eval_net)
    assert res["frames"] == 4
    text = out.getvalue()
    assert f"http://127.0.0.1:{mport}/" in text and f"http://127.0.0.1:{jport}/" in text
    assert text.count(" JSON-stream sent. ") == 4 and text.count(" MJPEG-stream sent. ") == 4
    mjpeg, jsons = readers
    for r in readers:
        r.join(10)
    # JSON: object for object the -json_file_output frames, in upstream's framing
    status, headers, body = split_head(jsons.data)
    assert status == "HTTP/1.0 200 OK" and headers["content-type"] == "application/json"
    assert body.startswith(b"[\n{\n \"frame_id\":1, \n \"objects\": [ \n") and body.endswith(b"\n]")
    streamed = parse_json_stream(body)
    filed = json.loads((evaldir / "frames.json").read_text())
    assert streamed == filed and [f["frame_id"] for f in streamed] == [1, 2, 3, 4]
    assert sum(len(f["objects"]) for f in streamed) > 0
    assert set(streamed[0]["objects"][0]) == {"class_id", "name", "relative_coordinates", "confidence"}
    # MJPEG: the annotated frames (those -prefix writes), at JPEG quality 40
    status, headers, body = split_head(mjpeg.data)
    assert "boundary=mjpegstream" in headers["content-type"]
    got = [decode_jpeg(p) for p in parse_multipart(body)]
    assert len(got) >= 2
    drawn = [cv2.imread(str(evaldir / f"frame_{i:08d}.jpg")) for i in range(1, 5)]
    plain = [cv2.imread(str(evaldir / f)) for f in FRAMES]
    last = got[-1].astype(int)
    # measured (quality 40 against -prefix's JPEGs of textured 128x128 frames): mean |diff| 9.5
    # against the last annotated frame, 61-63 against the other three
    assert np.abs(last - drawn[-1]).mean() < 20
    assert all(np.abs(last - d).mean() > 2 * np.abs(last - drawn[-1]).mean() for d in drawn[:-1])
    assert np.abs(last - plain[-1]).max() > 100  # the boxes and labels are in the stream


def test_demo_ports_in_use_the_demo_goes_on(evaldir, eval_net, loopback, capsys):
    video = make_video(evaldir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = demo(CFG, WEIGHTS, NAMES, 3, video, dont_show=True, mjpeg_port=port, json_port=port,
                   out=io.StringIO(), net=eval_net)
    assert res["frames"] == 4
    err = capsys.readouterr().err
    assert f"-mjpeg_port {port} is not served" in err and f"-json_port {port} is not served" in err


def test_demo_http_post(evaldir, eval_net, loopback):
    video = make_video(evaldir)
    with post_server() as (port, got):
        demo(CFG, WEIGHTS, NAMES, 3, video, dont_show=True, json_file_output="frames.json",
             http_post_host=f"127.0.0.1:{port}/hook", out=io.StringIO(), net=eval_net)
    filed = json.loads((evaldir / "frames.json").read_text())
    with_objects = [f for f in filed if f["objects"]]
    assert len(got) == len(with_objects) > 0  # upstream posts only frames with an object
    for (path, ctype, body), frame in zip(got, with_objects):
        assert path == "/hook" and ctype == "text/plain"
        head, _, rest = body.partition("\ntime:\n")
        assert rest.split("\n")[1:] == ["videosource:", video]
        ids = [line for line in head.split("\n") if line]
        # one line per box: its first class above 0.005 (the JSON lists every class above it)
        assert set(ids) <= {f"{o['name']}, id: {o['class_id']}" for o in frame["objects"]}


def test_classifier_demo_streams_frames(tmp_path, loopback, monkeypatch):
    from darknet_py.eval import classifier as ev

    readers = []
    monkeypatch.setattr(stream, "MjpegServer", watched(stream.MjpegServer, readers))

    class Fake:  # the classifier itself is tested elsewhere: here only the frames' way out
        size = (32, 32)
        labels = ["a", "b"]

        def __init__(self, *a, **k):
            pass

        def top(self):
            return 1

        def predict(self, x):
            return np.array([0.7, 0.3], np.float32)

    monkeypatch.setattr(ev, "Classifier", Fake)
    path = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        w.write(np.full((48, 64, 3), 60 * i + 20, np.uint8))
    w.release()
    out = io.StringIO()
    res = ev.demo_classifier("x.data", "x.cfg", None, filename=str(path), dont_show=True, mjpeg_port=free_port(),
                             out=out)
    assert res["frames"] == 3 and out.getvalue().count(" MJPEG-stream sent. ") == 3
    readers[0].join(10)
    got = [decode_jpeg(p) for p in parse_multipart(split_head(readers[0].data)[2])]
    assert len(got) >= 2 and got[-1].shape == (48, 64, 3)
    assert abs(float(got[-1].mean()) - 140) < 10


def test_demo_command_line_serves_where_told(evaldir):
    from evalkit import run_cli

    video = make_video(evaldir)
    mport, jport = free_port(), free_port()
    r = run_cli(["detector", "demo", "obj.data", CFG, WEIGHTS, video, "-dont_show", "-mjpeg_port", str(mport),
                 "-json_port", str(jport), "-http_post_host", "127.0.0.1:9/x"], evaldir,
                env={stream.HOST_ENV: "127.0.0.1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f" MJPEG stream: http://127.0.0.1:{mport}/" in r.stdout
    assert f" JSON stream: http://127.0.0.1:{jport}/" in r.stdout
    assert r.stdout.count(" JSON-stream sent. ") == 4 and r.stdout.count(" MJPEG-stream sent. ") == 4
    assert "not implemented" not in r.stderr and "Traceback" not in r.stderr
