"""Plain-socket clients of darknet_py/stream.py's servers (127.0.0.1 only, bounded reads)."""
import contextlib
import http.server
import json
import socket
import threading
import time

import cv2
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port: int, request: bytes = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout: float = 5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if request:
        s.sendall(request)
    return s


def read_all(sock, limit: int = 64 << 20, deadline: float = 20.0) -> bytes:
    """Everything until the server closes (or the limit / deadline)."""
    data = bytearray()
    end = time.monotonic() + deadline
    while len(data) < limit and time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def split_head(data: bytes) -> tuple[str, dict, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no end of HTTP head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, body


def parse_multipart(body: bytes, boundary: str = "mjpegstream") -> list[bytes]:
    """The parts of a multipart/x-mixed-replace body, each read by its Content-Length."""
    parts, pos, mark = [], 0, f"--{boundary}".encode()
    while True:
        while body[pos:pos + 2] == b"\r\n":
            pos += 2
        if not body[pos:]:
            return parts
        assert body[pos:pos + len(mark)] == mark, f"no boundary at {pos}: {body[pos:pos + 40]!r}"
        end = body.find(b"\r\n\r\n", pos)
        if end < 0:
            return parts  # a part cut short when the stream ended
        fields = {}
        for line in body[pos:end].decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        assert fields["content-type"] == "image/jpeg"
        n = int(fields["content-length"])
        start = end + 4
        if len(body) < start + n:
            return parts
        parts.append(body[start:start + n])
        pos = start + n


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


def parse_json_stream(body: bytes) -> list:
    return json.loads(body.decode())


class Reader(threading.Thread):
    """Reads one stream to its end in the background."""

    def __init__(self, port: int, request: bytes = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
        super().__init__(daemon=True)
        self.sock = connect(port, request)
        self.data = b""

    def run(self):
        try:
            self.data = read_all(self.sock)
        finally:
            self.sock.close()


def wait_streaming(server, n: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len([c for c in list(server._clients.values()) if c.state == "stream"]) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{server.kind}: {n} streaming clients not seen within {timeout} s")


def watched(cls, readers: list, request: bytes = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
    """A subclass of a server class whose every instance has a Reader streaming from it
    before the constructor returns (so a test sees the run's first frame)."""

    class Watched(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.running:
                r = Reader(self.port, request)
                wait_streaming(self, 1)
                r.start()
                readers.append(r)

    return Watched


@contextlib.contextmanager
def post_server(delay: float = 0.0):
    """An HTTP server on 127.0.0.1 that records each POST as (path, content type, body);
    yields (port, records)."""
    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers["Content-Length"])
            got.append((self.path, self.headers["Content-Type"], self.rfile.read(n).decode()))
            time.sleep(delay)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield httpd.server_port, got
    finally:
        httpd.shutdown()
        httpd.server_close()
