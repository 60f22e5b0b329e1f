"""Upstream: MJPG_sender, JSON_sender, send_mjpeg, send_json, send_http_post_request (src/http_stream.cpp).

-mjpeg_port N serves a picture (the training chart, the demo's annotated frames) as an
endless multipart/x-mixed-replace stream of JPEGs, boundary "mjpegstream", viewable in a
browser at http://host:N/; -json_port N serves the demo's detections as one JSON array
that grows by a frame at a time ("[\\n", the first frame, then ", \\n" before each next one,
"\\n]" when the run ends); -http_post_host H posts each frame's objects as text/plain.
They listen where upstream listens (every interface, INADDR_ANY; DARKNET_PY_STREAM_HOST
names another address) with upstream's headers, JPEG quality and send timeouts.

Unlike upstream, which accepts, encodes and sends inside the call the work loop makes, the
work here only hands its latest frame to the server (`push`: a copy into a slot, a byte to
wake the server, nothing that can block), and one daemon thread per server does the rest:
accepting, reading the request (bounded in size and time), encoding the JPEG (only when
someone watches, only the newest frame: a client still busy with an older frame skips to
the newest), sending without blocking, and dropping a client that makes no progress for
the send timeout. Only "/" (with any query string) is served, with GET; any other path is
answered 404 and nothing else of the machine is ever read. A port that cannot be bound
(in use) is reported naming the port, and the run goes on without that stream.
"""
from __future__ import annotations

import collections
import errno
import os
import selectors
import socket
import sys
import threading
import time

import numpy as np

BOUNDARY = "mjpegstream"
_COMMON_HEADERS = (b"Server: Mozarella/2.2\r\n"
                   b"Accept-Range: bytes\r\n"
                   b"Connection: close\r\n"
                   b"Max-Age: 0\r\n"
                   b"Expires: 0\r\n"
                   b"Cache-Control: no-cache, private\r\n"
                   b"Pragma: no-cache\r\n")
MJPEG_HEADER = (b"HTTP/1.0 200 OK\r\n" + _COMMON_HEADERS
                + f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\r\n".encode())
JSON_HEADER = b"HTTP/1.0 200 OK\r\n" + _COMMON_HEADERS + b"Content-Type: application/json\r\n\r\n"

# upstream's values: send timeout (SO_SNDTIMEO) and JPEG quality of its callers
TRAIN_TIMEOUT, TRAIN_QUALITY = 0.5, 70   # draw_train_loss: send_mjpeg(img, port, 500000, 70)
CHART_MAX_FPS = 10.0  # ours: the chart changes by a dot per iteration; encoding 1000x1000 at
                      # every iteration of a fast run would take a core from the training
DEMO_TIMEOUT, DEMO_QUALITY = 0.4, 40     # demo: send_mjpeg(show_img, port, 400000, 40)
JSON_TIMEOUT = 0.4                       # demo: send_json(..., 400000)
HTTP_POST_TIMEOUT, HTTP_POST_PORT = 3.0, 80

MAX_REQUEST = 8192        # bytes of request head read before answering 431
REQUEST_TIMEOUT = 5.0     # seconds a client has to send its request head
MAX_CLIENTS = 64          # connections served at once; more are answered 503
MAX_AFTER_REQUEST = 65536 # bytes a streaming client may send after its request before it is dropped
MAX_JSON_BUFFER = 8 << 20 # bytes of JSON a client may lag behind before it is dropped
HOST_ENV = "DARKNET_PY_STREAM_HOST"


def bind_host() -> str:
    """Where the servers listen: upstream's INADDR_ANY unless DARKNET_PY_STREAM_HOST says otherwise."""
    return os.environ.get(HOST_ENV, "")


def _response(status: str, body: str, extra: str = "") -> bytes:
    data = body.encode()
    return (f"HTTP/1.0 {status}\r\nServer: Mozarella/2.2\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n{extra}\r\n").encode() + data


class _Client:
    __slots__ = ("sock", "name", "state", "inbuf", "out", "deadline", "progress", "seq", "sent_any", "extra")

    def __init__(self, sock: socket.socket, name: str, now: float):
        self.sock = sock
        self.name = name
        self.state = "request"   # request -> stream | reply -> drain -> closed
        self.inbuf = bytearray()
        self.out = bytearray()
        self.deadline = now + REQUEST_TIMEOUT
        self.progress = now      # last time a byte of `out` left
        self.seq = -1            # the frame this client was last given
        self.sent_any = False
        self.extra = 0           # bytes received after the request head


class _Server:
    """One listening socket and the daemon thread that serves it. Subclasses say what a
    client gets first (`_opening`) and how frames reach it (`_deliver`)."""

    kind = "stream"
    sender = "sender"
    flag = "-port"

    def __init__(self, port: int, *, timeout: float, host: str | None = None, out=None, err=None,
                 quiet: bool = False):
        self.timeout = float(timeout)
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.quiet = quiet
        self.port = port
        self.url = None
        self._lock = threading.Lock()
        self._closing = False
        self._clients: dict[int, _Client] = {}
        self._thread = None
        host = bind_host() if host is None else host
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(16)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            why = e.strerror or str(e)
            print(f"error {self.sender}: couldn't bind to port {port} ({why}): {self.flag} {port} is not served, "
                  f"the run goes on without the {self.kind} stream", file=self.err, flush=True)
            return
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        shown = host if host not in ("", "0.0.0.0") else "localhost"
        self.url = f"http://{shown}:{self.port}/"
        where = "every interface" if host in ("", "0.0.0.0") else host
        print(f" {self.kind} stream: {self.url} (listening on {where}, port {self.port})", file=self.out, flush=True)
        self._thread = threading.Thread(target=self._run, name=f"{self.sender}:{self.port}", daemon=True)
        self._thread.start()

    # ---- the producer's side: never blocks ----
    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closing

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (the server is awake anyway) or closed
            pass

    def close(self, wait: float | None = None) -> None:
        """End the stream (upstream's close_all): clients get the closing bytes, then the
        sockets close; waits for the thread at most `wait` seconds (default: a few timeouts)."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        self._wake()
        self._thread.join(self.timeout * 3 + 1.0 if wait is None else wait)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the server's thread ----
    def _log(self, text: str) -> None:
        if not self.quiet:
            try:
                print(text, file=self.err, flush=True)
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        self._sel = sel
        sel.register(self._sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._closing:
                for key, mask in sel.select(self._wait_time()):
                    s = key.fileobj
                    if s is self._sock:
                        self._accept()
                    elif s is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    else:
                        c = self._clients.get(key.fd)
                        if c is None:
                            continue
                        if mask & selectors.EVENT_READ:
                            self._read(c)
                        if c.state != "closed" and mask & selectors.EVENT_WRITE:
                            self._write(c)
                self._deliver()
                self._flush_all()
                self._expire()
            self._finish()
        except Exception as e:  # never take the run down: report and stop serving
            self._closing = True  # push() now returns False at once
            self._log(f"error {self.sender}: the {self.kind} stream stopped ({type(e).__name__}: {e})")
        finally:
            for c in list(self._clients.values()):
                self._drop(c)
            for s in (self._sock, self._wake_r, self._wake_w):
                try:
                    s.close()
                except OSError:
                    pass
            sel.close()

    def _wait_time(self) -> float:
        now = time.monotonic()
        t = 1.0
        for c in self._clients.values():
            if c.state in ("request", "drain"):
                t = min(t, c.deadline - now)
            if c.out:
                t = min(t, c.progress + self.timeout - now)
        t = min(t, self._next_due(now))
        return max(t, 0.0)

    def _next_due(self, now: float) -> float:
        """Seconds until work is due that no socket will announce (a rate-limited frame)."""
        return 1.0

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._log(f"error {self.sender}: couldn't accept connection ({e.strerror})")
                    return
                continue
            sock.setblocking(False)
            now = time.monotonic()
            c = _Client(sock, f"{addr[0]}:{addr[1]}", now)
            self._clients[sock.fileno()] = c
            self._sel.register(sock, selectors.EVENT_READ, None)
            if len(self._clients) > MAX_CLIENTS:
                self._reply(c, "503 Service Unavailable", "too many clients\n")

    def _want(self, c: _Client) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        try:
            self._sel.modify(c.sock, events, None)
        except (KeyError, ValueError, OSError):
            pass

    def _drop(self, c: _Client) -> None:
        if c.state == "closed":
            return
        c.state = "closed"
        self._clients.pop(c.sock.fileno(), None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            c.sock.close()
        except OSError:
            pass

    def _reply(self, c: _Client, status: str, body: str, extra: str = "") -> None:
        c.state = "reply"
        c.out = bytearray(_response(status, body, extra))
        c.progress = time.monotonic()
        self._write(c)

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        if not data:  # the client left
            if c.state == "stream":
                self._log(f"{self.sender}: client {c.name} left")
            self._drop(c)
            return
        if c.state == "request":
            c.inbuf += data
            self._parse(c)
        elif c.state == "stream":
            c.extra += len(data)
            if c.extra > MAX_AFTER_REQUEST:
                self._log(f"{self.sender}: kill client {c.name} (it keeps sending)")
                self._drop(c)
        # reply / drain: discard what comes

    def _parse(self, c: _Client) -> None:
        buf = c.inbuf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            end = buf.find(b"\n\n")
        if end < 0:
            if len(buf) > MAX_REQUEST:
                self._reply(c, "431 Request Header Fields Too Large", "request too large\n")
            return
        if end > MAX_REQUEST:
            self._reply(c, "431 Request Header Fields Too Large", "request too large\n")
            return
        line = bytes(buf[:buf.find(b"\n")]).strip()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[1].startswith(b"/"):
            self._reply(c, "400 Bad Request", "bad request\n")
            return
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0].split(b"#", 1)[0]
        if path != b"/":
            self._reply(c, "404 Not Found", "not found: this server serves only its stream at /\n")
            return
        if method != b"GET":
            self._reply(c, "405 Method Not Allowed", "only GET\n", "Allow: GET\r\n")
            return
        c.extra = len(buf) - end
        c.inbuf = bytearray()
        c.state = "stream"
        c.out = bytearray(self._opening(c))
        c.progress = time.monotonic()
        self._log(f"{self.sender}: new client {c.name}")
        self._write(c)

    def _write(self, c: _Client) -> None:
        while c.out:
            try:
                n = c.sock.send(c.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if c.state == "stream":
                    self._log(f"{self.sender}: client {c.name} left")
                self._drop(c)
                return
            if n <= 0:
                break
            del c.out[:n]
            c.progress = time.monotonic()
        if not c.out and c.state == "reply":
            # upstream's close_socket: close our side, read what the peer still sends, close
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(c)
                return
            c.state = "drain"
            c.deadline = time.monotonic() + 1.0
        self._want(c)

    def _flush_all(self) -> None:
        for c in list(self._clients.values()):
            if c.out and c.state == "stream":
                self._write(c)

    def _expire(self) -> None:
        now = time.monotonic()
        for c in list(self._clients.values()):
            if c.state in ("request", "drain") and now > c.deadline:
                if c.state == "request":
                    self._reply(c, "408 Request Timeout", "no request\n")
                else:
                    self._drop(c)
            elif c.out and now - c.progress > self.timeout:
                if c.state == "stream":
                    self._log(f"{self.sender}: kill client {c.name} (nothing sent for {self.timeout:g} s)")
                self._drop(c)

    def _streaming(self):
        return [c for c in self._clients.values() if c.state == "stream"]

    def _finish(self) -> None:
        """The run ends: the closing bytes, a bounded wait for them to leave, then close."""
        for s in (self._sock, self._wake_r):
            self._sel.unregister(s)
        self._deliver(final=True)
        for c in self._streaming():
            c.out += self._closing_bytes(c)
            self._write(c)
        end = time.monotonic() + self.timeout
        while time.monotonic() < end and any(c.out for c in self._clients.values() if c.state == "stream"):
            for key, mask in self._sel.select(max(0.0, end - time.monotonic())):
                c = self._clients.get(key.fd)
                if c is not None and mask & selectors.EVENT_WRITE:
                    self._write(c)
                elif c is not None and mask & selectors.EVENT_READ:
                    self._read(c)

    # ---- per kind ----
    def _opening(self, c: _Client) -> bytes:
        raise NotImplementedError

    def _deliver(self, final: bool = False) -> None:
        """New frames to the clients; `final`: the run ends, the newest frame goes out now."""
        raise NotImplementedError

    def _closing_bytes(self, c: _Client) -> bytes:
        return b""


class MjpegServer(_Server):
    """Upstream's MJPG_sender: `push(frame)` with a BGR uint8 image (HxWx3 or HxW); the
    newest frame wins."""

    kind = "MJPEG"
    sender = "MJPG_sender"
    flag = "-mjpeg_port"

    def __init__(self, port: int, *, timeout: float = DEMO_TIMEOUT, quality: int = DEMO_QUALITY,
                 max_fps: float = 0.0, **kw):
        """max_fps > 0: at most that many frames encoded per second (the newest one each time),
        so a fast producer costs the server a bounded share of a core."""
        self.quality = int(quality)
        self._min_gap = 1.0 / max_fps if max_fps > 0 else 0.0
        self._encoded_at = -1e9
        self._frame = None
        self._seq = 0
        self._part = b""
        self._part_seq = 0
        super().__init__(port, timeout=timeout, **kw)

    def push(self, frame: np.ndarray) -> bool:
        """Hand the latest picture over (copied: the caller may draw on it next); True when
        a server is running to take it."""
        if not self.running:
            return False
        copy = np.array(frame, dtype=np.uint8, copy=True, order="C")
        with self._lock:
            self._frame = copy
            self._seq += 1
        self._wake()
        return True

    def _opening(self, c: _Client) -> bytes:
        return MJPEG_HEADER

    def _next_due(self, now: float) -> float:
        if self._seq != self._part_seq and self._min_gap:
            return max(0.0, self._encoded_at + self._min_gap - now)
        return 1.0

    def _deliver(self, final: bool = False) -> None:
        watchers = [c for c in self._streaming() if not c.out]
        if not watchers:
            return
        with self._lock:
            frame, seq = self._frame, self._seq
        if frame is None:
            return
        if seq != self._part_seq:
            if not final and time.monotonic() - self._encoded_at < self._min_gap:
                return  # _next_due wakes the loop when the gap has passed
            import cv2
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return
            jpg = buf.tobytes()
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode()
            # upstream's bytes exactly: no CRLF between the JPEG and the next "--mjpegstream"
            # (RFC 2046 wants one; Chromium reads the parts either way, tested)
            self._part = head + jpg
            self._part_seq = seq
            self._encoded_at = time.monotonic()
        for c in watchers:
            if c.seq != self._part_seq:
                c.out += self._part
                c.seq = self._part_seq
                self._write(c)


class JsonServer(_Server):
    """Upstream's JSON_sender: `push(text)` with one frame's detection_to_json text; every
    frame reaches every client that keeps up (a client more than MAX_JSON_BUFFER behind is
    dropped, as upstream kills a client whose send times out)."""

    kind = "JSON"
    sender = "JSON_sender"
    flag = "-json_port"

    def __init__(self, port: int, *, timeout: float = JSON_TIMEOUT, **kw):
        self._queue: collections.deque = collections.deque(maxlen=4096)
        self._last = None
        super().__init__(port, timeout=timeout, **kw)

    def push(self, text: str) -> bool:
        if not self.running:
            return False
        self._queue.append(text)  # deque.append is atomic; the oldest falls out when 4096 wait
        self._wake()
        return True

    def _opening(self, c: _Client) -> bytes:
        head = JSON_HEADER + b"[\n"
        if self._last is not None:  # upstream: a new client gets the current frame at once
            c.sent_any = True
            return head + self._last
        return head

    def _deliver(self, final: bool = False) -> None:
        while True:
            try:
                text = self._queue.popleft()
            except IndexError:
                return
            data = text.encode()
            self._last = data
            for c in self._streaming():
                c.out += (b", \n" + data) if c.sent_any else data
                c.sent_any = True
                if len(c.out) > MAX_JSON_BUFFER:
                    self._log(f"{self.sender}: kill client {c.name} (more than {MAX_JSON_BUFFER} bytes behind)")
                    self._drop(c)

    def _closing_bytes(self, c: _Client) -> bytes:
        return b"\n]"


def parse_post_host(spec: str) -> tuple[str, int, str]:
    """-http_post_host: upstream splits "host/path" at the first "/" and posts to port 80;
    here "http://" is skipped, "host:port" accepted, and no path means "/"."""
    s = spec.strip()
    if s.lower().startswith("http://"):
        s = s[7:]
    host, slash, path = s.partition("/")
    path = "/" + path if slash else "/"
    port = HTTP_POST_PORT
    if host.startswith("[") and "]" in host:  # [::1]:8080
        inner, _, rest = host[1:].partition("]")
        host, port = inner, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else port
    elif host.count(":") == 1:
        h, _, p = host.partition(":")
        if p.isdigit():
            host, port = h, int(p)
    if not host:
        raise ValueError(f"-http_post_host {spec!r}: no host name")
    return host, port, path


class HttpPoster:
    """Upstream's send_http_post_request, beside the work: `post(message)` queues the text
    (the newest 16 wait; older ones are dropped), one daemon thread POSTs them as text/plain
    with upstream's 3 s timeout. A failure is reported once per kind of error, never raised."""

    def __init__(self, spec: str, *, timeout: float = HTTP_POST_TIMEOUT, err=None):
        self.host, self.port, self.path = parse_post_host(spec)
        self.timeout = timeout
        self.err = err if err is not None else sys.stderr
        self._queue: collections.deque = collections.deque(maxlen=16)
        self._event = threading.Event()
        self._closing = False
        self._told: set[str] = set()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name=f"http_post:{self.host}", daemon=True)
        self._thread.start()

    def post(self, message: str) -> None:
        if not self._closing:
            self._queue.append(message)
            self._event.set()

    def close(self, wait: float | None = None) -> None:
        """Send what waits (bounded by the timeout per message), then stop."""
        self._closing = True
        self._event.set()
        self._thread.join(self.timeout * 2 + 1.0 if wait is None else wait)

    def _run(self) -> None:
        import http.client

        while True:
            self._event.wait(1.0)
            self._event.clear()
            while self._queue:
                message = self._queue.popleft()
                try:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                    try:
                        conn.request("POST", self.path, body=message.encode(),
                                     headers={"Content-Type": "text/plain"})
                        conn.getresponse().read(65536)
                        self.sent += 1
                    finally:
                        conn.close()
                except (OSError, http.client.HTTPException) as e:
                    why = type(e).__name__
                    if why not in self._told:
                        self._told.add(why)
                        try:
                            print(f" send_http_post_request: couldn't post to {self.host}:{self.port}{self.path} "
                                  f"({why}: {e}); the run goes on", file=self.err, flush=True)
                        except (OSError, ValueError):
                            pass
            if self._closing:
                return
