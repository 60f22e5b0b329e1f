"""A killed `detector train` leaves nothing behind, and SIGTERM is handled as Ctrl-C.

Tried as a user would: the trainer runs in a session of its own (as under a scheduler or
`docker stop`); after SIGTERM it saves NAME_last.weights, says so and exits non-zero; after
SIGTERM or SIGKILL no process of the session is alive within 5 s (worker processes once
outlived a SIGKILLed trainer, orphaned to init).
"""
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASE = "t1-yolov3-tiny-mse"
SRC = ROOT / "tests" / "data" / "train" / CASE


def session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after pid (comm): state ppid pgrp session
            pids.append(int(stat.parent.name))
    return pids


def start_training(d: Path) -> subprocess.Popen:
    cfg = d / f"{CASE}.cfg"
    cfg.write_text(re.sub(r"(?m)^max_batches\s*=.*$", "max_batches=100000", cfg.read_text()))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", cfg.name,
                          "init.weights", "-dont_show"], cwd=d, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    for line in p.stdout:  # wait until it trains (loader running)
        if re.match(r"^ 3: ", line) or time.monotonic() > deadline:
            break
    return p


def wait_gone(sid: int, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = session_processes(sid)
        if not left:
            return []
        time.sleep(0.1)
    return session_processes(sid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_trainer_leaves_no_process(tmp_path, sig):
    d = tmp_path / CASE
    shutil.copytree(SRC, d)
    p = start_training(d)
    try:
        assert p.poll() is None, p.stderr.read()[-2000:]
        os.kill(p.pid, sig)
        out, err = p.communicate(timeout=60)
        left = wait_gone(p.pid)
        assert not left, f"processes of the run still alive 5 s after {sig.name}: {left}"
        if sig == signal.SIGTERM:
            assert p.returncode == 143, err[-2000:]
            last = d / "backup" / f"{CASE}_last.weights"
            assert re.search(rf"Terminated \(SIGTERM\): saved backup/+{CASE}_last.weights", err), err[-500:]
            seen = struct.unpack("<iiiQ", last.read_bytes()[:20])[3]
            assert seen >= 6  # at least 3 iterations of 2 images
            assert "Traceback" not in err
        else:
            assert p.returncode == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
        for pid in session_processes(p.pid):
            os.kill(pid, signal.SIGKILL)
