"""Training bookkeeping as upstream: seen in the header, resuming, -clear, max_batches, determinism."""
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASE = "t1-yolov3-tiny-mse"
SRC = ROOT / "tests" / "data" / "train" / CASE


def train(d, weights, *flags):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", f"{CASE}.cfg",
                           weights, "-dont_show", *flags], cwd=d, capture_output=True, text=True, env=env,
                          timeout=300)


def header(path):
    return struct.unpack("<iiiQ", Path(path).read_bytes()[:20])


@pytest.fixture()
def case(tmp_path):
    d = tmp_path / CASE
    shutil.copytree(SRC, d)
    return d


def test_seen_and_final(case):
    r = train(case, "init.weights")
    assert r.returncode == 0, r.stderr[-2000:]
    final = case / "backup" / f"{CASE}_final.weights"
    # max_batches=3 iterations of batch=2 (subdivisions=1): seen = 3*2
    assert header(final) == (0, 2, 5, 6)
    assert header(case / "final.weights")[3] == 6  # upstream wrote the same


def test_two_runs_identical_bytes(case, tmp_path):
    other = tmp_path / "again"
    shutil.copytree(SRC, other)
    assert train(case, "init.weights").returncode == 0
    assert train(other, "init.weights").returncode == 0
    a = (case / "backup" / f"{CASE}_final.weights").read_bytes()
    b = (other / "backup" / f"{CASE}_final.weights").read_bytes()
    assert a == b


def test_resume_continues_at_its_iteration(case):
    assert train(case, "init.weights").returncode == 0
    final = case / "backup" / f"{CASE}_final.weights"
    shutil.copy(final, case / "resume.weights")
    # already at max_batches: nothing to train, final weights written again unchanged, exit 0
    r = train(case, "resume.weights")
    assert r.returncode == 0, r.stderr[-2000:]
    assert " 1: " not in r.stdout and " 4: " not in r.stdout
    assert final.read_bytes() == (case / "resume.weights").read_bytes()


def test_clear_restarts_from_zero(case):
    assert train(case, "init.weights").returncode == 0
    shutil.copy(case / "backup" / f"{CASE}_final.weights", case / "resume.weights")
    r = train(case, "resume.weights", "-clear")
    assert r.returncode == 0
    lines = [l for l in r.stdout.splitlines() if l.startswith(" 1: ") or l.startswith(" 3: ")]
    assert len(lines) == 2
    assert header(case / "backup" / f"{CASE}_final.weights")[3] == 6


def test_map_during_training_writes_best_and_chart(case):
    # max_batches reached -> upstream computes mAP on the valid list, writes _best.weights and the chart
    r = train(case, "init.weights", "-map")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mean average precision (mAP@0.50)" in r.stdout
    assert "mean_average_precision (mAP@0.50) = " in r.stdout
    assert (case / "backup" / f"{CASE}_best.weights").stat().st_size == (case / "init.weights").stat().st_size
    assert (case / "chart.png").stat().st_size > 1000 and (case / f"chart_{CASE}.png").exists()


def test_bad_cfg_stops_with_file_line_key(case):
    cfg = case / f"{CASE}.cfg"
    cfg.write_text(cfg.read_text().replace("filters=24", "filters=twenty", 1))
    r = train(case, "init.weights")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{CASE}.cfg:" in r.stderr and "key 'filters'" in r.stderr
