"""darknet_py/stream.py: the MJPEG and JSON servers and the HTTP poster, over plain sockets
on 127.0.0.1 (upstream's framing: src/http_stream.cpp)."""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamkit import Reader, connect, decode_jpeg, parse_json_stream, parse_multipart, post_server, read_all, \
    split_head, wait_streaming

from darknet_py.stream import (BOUNDARY, HttpPoster, JsonServer, MAX_REQUEST, MjpegServer, parse_post_host)

HERE = Path(__file__).resolve().parent


def _frames(n, h=120, w=160):
    """n pictures that differ: a grey level and a moving bar each."""
    out = []
    for i in range(n):
        img = np.full((h, w, 3), (30 + 50 * i) % 256, np.uint8)
        img[:, (i * 20) % w:(i * 20) % w + 10] = (0, 0, 255)
        out.append(img)
    return out


def test_mjpeg_headers_boundary_and_frames():
    with MjpegServer(0, host="127.0.0.1", quality=70, quiet=True) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}/"
        r = Reader(srv.port)
        wait_streaming(srv, 1)
        r.start()
        frames = _frames(4)
        for f in frames:
            srv.push(f)
            time.sleep(0.1)  # each frame sent before the next: all four arrive
    r.join(10)
    status, headers, body = split_head(r.data)
    assert status == "HTTP/1.0 200 OK"
    assert headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    assert headers["cache-control"] == "no-cache, private" and headers["connection"] == "close"
    assert headers["server"] == "Mozarella/2.2"
    parts = parse_multipart(body)
    assert len(parts) == 4
    for got, sent in zip(parts, frames):
        img = decode_jpeg(got)
        assert img.shape == sent.shape
        # JPEG at quality 70 of flat areas and one bar: measured mean |diff| < 2 grey levels
        assert np.abs(img.astype(int) - sent).mean() < 6
    assert np.abs(decode_jpeg(parts[0]).astype(int) - decode_jpeg(parts[-1])).mean() > 50


def test_mjpeg_quality_is_the_servers():
    frame = (np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8)
    sizes = []
    for q in (30, 90):
        with MjpegServer(0, host="127.0.0.1", quality=q, quiet=True) as srv:
            r = Reader(srv.port)
            wait_streaming(srv, 1)
            r.start()
            srv.push(frame)
            time.sleep(0.2)
        r.join(10)
        parts = parse_multipart(split_head(r.data)[2])
        ok, ref = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert len(parts) == 1 and parts[0] == ref.tobytes()
        sizes.append(len(parts[0]))
    assert sizes[0] < sizes[1]


def test_new_client_gets_the_latest_frame_at_once():
    with MjpegServer(0, host="127.0.0.1", quiet=True) as srv:
        frames = _frames(3)
        for f in frames:
            srv.push(f)
        time.sleep(0.05)
        s = connect(srv.port)
        s.settimeout(5)
        data = b""
        while data.count(b"\xff\xd9") < 1 and len(data) < 1 << 20:
            data += s.recv(65536)
        s.close()
    parts = parse_multipart(split_head(data)[2])
    assert len(parts) == 1
    assert np.abs(decode_jpeg(parts[0]).astype(int) - frames[-1]).mean() < 6


def test_nothing_but_the_stream_is_served(tmp_path):
    with MjpegServer(0, host="127.0.0.1", quiet=True) as srv:
        srv.push(_frames(1)[0])
        for path in (b"/etc/passwd", b"/../../../etc/passwd", b"/chart.png", b"/favicon.ico", b"//", b"/index.html"):
            s = connect(srv.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(s, deadline=5)
            s.close()
            status, headers, body = split_head(data)
            assert status == "HTTP/1.0 404 Not Found", path
            assert int(headers["content-length"]) == len(body) and b"root:" not in body
        for req, want in ((b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"), (b"GET /\r\n\r\n", "400"),
                          (b"\x00\x01\x02\r\n\r\n", "400"), (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 2000, "431")):
            s = connect(srv.port, req)
            data = read_all(s, deadline=5)
            s.close()
            assert data.split(b" ", 2)[1].decode() == want, req[:30]
        # a query string is still the stream (browsers add one to defeat caches)
        s = connect(srv.port, b"GET /?t=123 HTTP/1.1\r\n\r\n")
        s.settimeout(5)
        head = s.recv(4096)
        s.close()
        assert head.startswith(b"HTTP/1.0 200 OK")
        assert srv.running


def test_json_stream_framing():
    texts = [json.dumps({"frame_id": i, "objects": [{"class_id": i % 2}]}) for i in range(1, 6)]
    with JsonServer(0, host="127.0.0.1", quiet=True) as srv:
        early = Reader(srv.port)
        wait_streaming(srv, 1)
        early.start()
        srv.push(texts[0])
        srv.push(texts[1])
        time.sleep(0.1)
        late = Reader(srv.port)  # joins after two frames: gets the current one first
        wait_streaming(srv, 2)
        late.start()
        for t in texts[2:]:
            srv.push(t)
        time.sleep(0.1)
    early.join(10)
    late.join(10)
    status, headers, body = split_head(early.data)
    assert status == "HTTP/1.0 200 OK" and headers["content-type"] == "application/json"
    # upstream's framing: "[\n" frame (", \n" frame)* "\n]"
    assert body == ("[\n" + ", \n".join(texts) + "\n]").encode()
    assert [f["frame_id"] for f in parse_json_stream(body)] == [1, 2, 3, 4, 5]
    assert [f["frame_id"] for f in parse_json_stream(split_head(late.data)[2])] == [2, 3, 4, 5]


def test_json_stream_with_no_frame_is_still_json():
    with JsonServer(0, host="127.0.0.1", quiet=True) as srv:
        r = Reader(srv.port)
        wait_streaming(srv, 1)
        r.start()
    r.join(10)
    assert parse_json_stream(split_head(r.data)[2]) == []


def test_port_in_use_names_the_port_and_the_run_goes_on(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        srv = MjpegServer(port, host="127.0.0.1")
        assert not srv.running and srv.url is None
        assert srv.push(_frames(1)[0]) is False  # the producer goes on, nothing happens
        srv.close()
        js = JsonServer(port, host="127.0.0.1")
        assert not js.running and js.push("{}") is False
    err = capsys.readouterr().err
    assert f"couldn't bind to port {port}" in err and f"-mjpeg_port {port} is not served" in err
    assert f"-json_port {port} is not served" in err and "goes on" in err


def test_close_leaves_no_thread():
    before = {t.ident for t in threading.enumerate()}
    servers = [MjpegServer(0, host="127.0.0.1", quiet=True), JsonServer(0, host="127.0.0.1", quiet=True)]
    readers = [Reader(s.port) for s in servers]
    for s in servers:
        wait_streaming(s, 1)
    for r in readers:
        r.start()
    servers[0].push(_frames(1)[0])
    servers[1].push("{}")
    t0 = time.monotonic()
    for s in servers:
        s.close()
    assert time.monotonic() - t0 < 3.0
    for r in readers:
        r.join(5)
        assert not r.is_alive()  # the server closed the connection
    assert not [t for t in threading.enumerate() if t.ident not in before and "_sender:" in t.name]


def test_stalled_client_is_dropped_and_others_keep_streaming():
    big = (np.random.default_rng(1).random((600, 800, 3)) * 255).astype(np.uint8)  # ~ 400 kB JPEG
    with MjpegServer(0, host="127.0.0.1", quality=90, timeout=0.4, quiet=True) as srv:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", srv.port))
        stalled.sendall(b"GET / HTTP/1.1\r\n\r\n")
        good = Reader(srv.port)
        wait_streaming(srv, 2)
        good.start()
        # the kernel takes ~2.4 MB (6 frames) for the stalled client before sends block (measured)
        for i in range(14):
            srv.push(np.roll(big, i * 10, axis=1))
            time.sleep(0.15)
        streaming = [c for c in list(srv._clients.values()) if c.state == "stream"]
        assert len(streaming) == 1  # the stalled one was dropped after 0.4 s without progress
    good.join(10)
    stalled.close()
    assert len(parse_multipart(split_head(good.data)[2])) >= 10


def _producer(srv, seconds, chart):
    """A training loop's stand-in: per iteration a device step (sleep 5 ms, as a GPU step
    leaves the CPU idle), a dot drawn on the 1000x1000 chart, the push. Returns the
    iteration times and the time spent inside push()."""
    times, pushes = [], []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        time.sleep(0.005)
        cv2.circle(chart, (60 + i % 900, 500 + (i * 7) % 400), 1, (255, 0, 0), -1)
        t1 = time.perf_counter()
        srv.push(chart)
        t2 = time.perf_counter()
        times.append(t2 - t0)
        pushes.append(t2 - t1)
        i += 1
    return times, pushes


def test_bad_clients_never_slow_the_producer():
    """Stalled, mid-frame disconnecting, 20 concurrent, malformed, huge-request and other-path
    clients (tests/stream_attack.py, another process) against the chart stream while a
    producer pushes the chart. Measured on the shared 2-core machine (load average 1 to 7):
    median iteration 5.5-5.9 ms alone, 5.5-6.9 ms under attack (at most 1.22x); push()
    median 0.3-0.5 ms, its 95th percentile 0.6 ms idle and up to 15 ms when the machine is
    oversubscribed (the thread is descheduled, whatever it runs). Bounds: the median under
    attack within 1.5x + 2 ms of the median alone; push()'s median under 3 ms; no push over
    a second (none blocks on a client)."""
    chart = np.full((1000, 1000, 3), 255, np.uint8)
    with MjpegServer(0, host="127.0.0.1", quality=70, timeout=0.5, quiet=True) as srv:
        alone, _ = _producer(srv, 1.0, chart)
        env = dict(os.environ, PYTHONPATH="")
        attack = subprocess.Popen([sys.executable, str(HERE / "stream_attack.py"), str(srv.port), "4"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            time.sleep(0.5)  # the clients connect
            loaded, pushes = _producer(srv, 3.0, chart)
            out, err = attack.communicate(timeout=30)
        finally:
            if attack.poll() is None:
                attack.kill()
                attack.wait()
        assert attack.returncode == 0, err.decode()
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert srv.running and srv._thread.is_alive()
        # the server still serves a new client after all that
        s = connect(srv.port)
        s.settimeout(5)
        srv.push(chart)
        data = b""
        while b"\xff\xd9" not in data and len(data) < 4 << 20:
            data += s.recv(65536)
        s.close()
        assert len(parse_multipart(split_head(data)[2])) == 1
    m_alone, m_loaded = statistics.median(alone), statistics.median(loaded)
    p95 = sorted(pushes)[int(0.95 * len(pushes))]
    print(f"median iteration alone {m_alone * 1e3:.2f} ms, under attack {m_loaded * 1e3:.2f} ms; "
          f"push median {statistics.median(pushes) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms; {result}")
    assert m_loaded <= 1.5 * m_alone + 0.002
    assert statistics.median(pushes) < 0.003 and max(pushes) < 1.0
    assert len(result["frames"]) == 20 and min(result["frames"]) >= 5, result["frames"]
    assert result["stalled"] == 3 and result["disconnects"] >= 5
    answers = result["answers"]
    for name in ("passwd", "dotdot", "chart", "favicon"):
        assert answers[name] == "HTTP/1.0 404 Not Found", (name, answers[name])
    assert answers["garbage"].startswith("HTTP/1.0 400") and answers["noversion"].startswith("HTTP/1.0 400")
    assert answers["post"].startswith("HTTP/1.0 405")
    # a huge request head is cut short: answered 431 (or reset while still sending), never served
    assert result["huge"]["answer"].startswith("HTTP/1.0 431") or result["huge"]["answer"].startswith("error"), \
        result["huge"]
    assert answers["silent"].startswith("HTTP/1.0 408")
    assert not result["errors"], result["errors"]


def test_more_clients_than_allowed_get_503(monkeypatch):
    import darknet_py.stream as st

    monkeypatch.setattr(st, "MAX_CLIENTS", 3)
    with MjpegServer(0, host="127.0.0.1", quiet=True) as srv:
        keep = [connect(srv.port) for _ in range(3)]
        wait_streaming(srv, 3)
        extra = connect(srv.port)
        data = read_all(extra, deadline=5)
        extra.close()
        assert data.startswith(b"HTTP/1.0 503")
        for s in keep:
            s.close()


def test_parse_post_host():
    assert parse_post_host("webhook.site/898bbd9b") == ("webhook.site", 80, "/898bbd9b")
    assert parse_post_host("http://127.0.0.1:8080/a/b") == ("127.0.0.1", 8080, "/a/b")
    assert parse_post_host("example.com") == ("example.com", 80, "/")
    with pytest.raises(ValueError):
        parse_post_host("/only/path")


def test_http_poster_posts_text_plain_beside_the_caller():
    with post_server(delay=0.2) as (port, got):  # a slow server: the caller must not wait for it
        poster = HttpPoster(f"127.0.0.1:{port}/hook")
        t0 = time.perf_counter()
        for i in range(3):
            poster.post(f"dog, id: {i}\n")
        assert time.perf_counter() - t0 < 0.05
        poster.close(wait=10)
    assert [g[0] for g in got] == ["/hook"] * 3 and got[0][1] == "text/plain"
    assert [g[2] for g in got] == [f"dog, id: {i}\n" for i in range(3)]


def test_http_poster_unreachable_host_is_reported_once(capsys):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()  # nothing listens there
    poster = HttpPoster(f"127.0.0.1:{number}/x", timeout=1.0)
    for _ in range(3):
        poster.post("dog, id: 1\n")
    poster.close(wait=10)
    err = capsys.readouterr().err
    assert err.count("couldn't post to") == 1 and "the run goes on" in err


def test_max_fps_bounds_the_encoding_and_the_newest_frame_ends_the_stream():
    frames = _frames(50, 60, 80)
    with MjpegServer(0, host="127.0.0.1", max_fps=10, quiet=True) as srv:
        r = Reader(srv.port)
        wait_streaming(srv, 1)
        r.start()
        t0 = time.monotonic()
        for f in frames:  # 50 frames in about 0.5 s
            srv.push(f)
            time.sleep(0.01)
        spent = time.monotonic() - t0
    r.join(10)
    parts = parse_multipart(split_head(r.data)[2])
    # one frame per 0.1 s at most, plus the first and the final one at close
    assert 2 <= len(parts) <= spent * 10 + 2, (len(parts), spent)
    assert np.abs(decode_jpeg(parts[-1]).astype(int) - frames[-1]).mean() < 6
