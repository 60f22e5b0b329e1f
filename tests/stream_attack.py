"""Bad clients of an MJPEG server, run as a separate process by tests/test_stream.py (so their
own work does not share the producer's interpreter): `python stream_attack.py PORT SECONDS`.
Prints one JSON line: what each kind of client saw. 127.0.0.1 only; every loop is bounded
by SECONDS."""
import json
import socket
import sys
import threading
import time

PORT, SECONDS = int(sys.argv[1]), float(sys.argv[2])
END = time.monotonic() + SECONDS
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
result = {"frames": [], "stalled": 0, "disconnects": 0, "answers": {}, "huge": None, "errors": []}
lock = threading.Lock()


def conn(timeout=2.0):
    return socket.create_connection(("127.0.0.1", PORT), timeout=timeout)


def reader(i):  # one of 20 clients that watch the stream to the end
    n = 0
    try:
        s = conn()
        s.sendall(GET)
        while time.monotonic() < END:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            n += chunk.count(b"--mjpegstream\r\n")
        s.close()
    except OSError as e:
        with lock:
            result["errors"].append(f"reader {i}: {e}")
    with lock:
        result["frames"].append(n)


def stalled():  # asks for the stream and never reads it, with a tiny receive buffer
    socks = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", PORT))
            s.sendall(GET)
            socks.append(s)
        with lock:
            result["stalled"] = len(socks)
        while time.monotonic() < END:
            time.sleep(0.05)
    finally:
        for s in socks:
            s.close()


def disconnecting():  # reads part of a frame, then leaves mid-frame; again and again
    while time.monotonic() < END:
        try:
            s = conn()
            s.sendall(GET)
            s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()
            with lock:
                result["disconnects"] += 1
        except OSError:
            pass
        time.sleep(0.01)


def answer(name, request):
    try:
        s = conn()
        s.sendall(request)
        data = b""
        while len(data) < 100000:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        with lock:
            result["answers"][name] = data.split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as e:
        with lock:
            result["answers"][name] = f"error {type(e).__name__}"


def others():  # malformed requests, other paths, a silent client, repeatedly
    requests = {
        "passwd": b"GET /etc/passwd HTTP/1.1\r\n\r\n",
        "dotdot": b"GET /../../../../etc/passwd HTTP/1.0\r\n\r\n",
        "chart": b"GET /chart.png HTTP/1.1\r\n\r\n",
        "favicon": b"GET /favicon.ico HTTP/1.1\r\n\r\n",
        "garbage": b"\x00\xff\xfe garbage\r\n\r\n",
        "noversion": b"GET /\r\n\r\n",
        "post": b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    }
    while time.monotonic() < END - 1.0:
        for name, req in requests.items():
            answer(name, req)
        time.sleep(0.05)


def huge():  # a request head of 1 MiB that never ends
    try:
        s = conn()
        s.sendall(b"GET / HTTP/1.1\r\n")
        sent = 0
        try:
            while sent < (1 << 20):
                s.sendall(b"X-Junk: " + b"a" * 1000 + b"\r\n")
                sent += 1010
        except OSError:
            pass
        try:
            first = s.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError as e:
            first = f"error {type(e).__name__}"
        s.close()
        with lock:
            result["huge"] = {"sent": sent, "answer": first}
    except OSError as e:
        with lock:
            result["huge"] = {"error": str(e)}


def silent():  # connects and says nothing
    try:
        s = conn(timeout=10)
        data = s.recv(200)
        with lock:
            result["answers"]["silent"] = data.split(b"\r\n", 1)[0].decode("latin-1")
        s.close()
    except OSError as e:
        with lock:
            result["answers"]["silent"] = f"error {type(e).__name__}"


threads = [threading.Thread(target=reader, args=(i,)) for i in range(20)]
threads += [threading.Thread(target=f) for f in (stalled, disconnecting, others, huge, silent)]
for t in threads:
    t.daemon = True
    t.start()
for t in threads:
    t.join(max(0.0, END - time.monotonic()) + 8.0)
with lock:
    print(json.dumps(result), flush=True)
