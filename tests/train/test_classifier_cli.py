"""The classifier command line and `detect`, as a user meets them: upstream's lines, one clear
error line for bad input, bad data skipped, SIGTERM handled as Ctrl-C."""
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

from test_classifier_cases import case_copy, run_main
from test_signals import session_processes, wait_gone

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "tests" / "data" / "map"
C1 = "c1-darknet-ref"


@pytest.fixture()
def c1(tmp_path, make_weights):
    return case_copy("classifier", C1, tmp_path, make_weights)


def test_detect_is_detector_test_with_coco_data(tmp_path):
    d = tmp_path / "map"
    shutil.copytree(MAP, d)
    code, _, err = run_main(["detect", "map-yolov4-tiny.cfg", "trained.weights", "val/v1_flip.png"], d)
    assert code == 2 and "cfg/coco.data: no such file" in err
    (d / "cfg").mkdir()
    (d / "cfg" / "coco.data").write_text((d / "obj.data").read_text())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detect", "map-yolov4-tiny.cfg", "trained.weights",
                        "val/v1_flip.png", "-dont_show", "-ext_output", "-thresh", "0.25"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    ref = (MAP / "test_ext.log").read_text().splitlines()
    i = next(i for i, line in enumerate(ref) if "Predicted in" in line)
    out = out.splitlines()
    j = next(j for j, line in enumerate(out) if line.startswith("val/v1_flip.png: Predicted in "))
    assert out[j + 1:] == ref[i + 1:]


def test_usage_errors(tmp_path):
    assert run_main(["classifier"], tmp_path)[0] == 2
    code, _, err = run_main(["classifier", "bogus", "a.data", "b.cfg"], tmp_path)
    assert code == 2 and "classifier bogus: not available" in err


def test_bad_input_is_one_line(c1):
    (c1 / "labels.txt").write_text("bird\n\ndog\n")
    code, _, err = run_main(["classifier", "train", "obj.data", f"{C1}.cfg", "-dont_show"], c1)
    assert code == 1 and "labels.txt:2: empty label name" in err and "Traceback" not in err
    (c1 / "labels.txt").write_text("bird\ncat\nowl\n")  # dog.png names none of them
    code, _, err = run_main(["classifier", "train", "obj.data", f"{C1}.cfg", "-dont_show"], c1)
    assert code == 1 and re.fullmatch(r"Error: obj.data: none of the 1 images in the list can be used \(see bad.list\); "
                                      r"e.g. obj/dog.png: Too many or too few labels: .*; skipped\n", err), err
    cfg = (c1 / f"{C1}.cfg").read_text()
    (c1 / f"{C1}.cfg").write_text(cfg.replace("blur=0", "blur=4"))
    code, _, err = run_main(["classifier", "train", "obj.data", f"{C1}.cfg", "-dont_show"], c1)
    assert code == 1 and err.startswith(f"Error: {C1}.cfg:3: key 'blur'") and "must be odd" in err, err
    (c1 / f"{C1}.cfg").write_text(cfg)
    (c1 / "obj.data").write_text((c1 / "obj.data").read_text().replace("classes=3", "classes=4"))
    (c1 / "labels.txt").write_text("bird\ncat\ndog\nowl\n")
    code, out, err = run_main(["classifier", "predict", "obj.data", f"{C1}.cfg", "final.weights", "obj/dog.png"], c1)
    assert code == 1 and "num of filters = 3 in the last conv-layer in cfg-file doesn't match to classes = 4" in out


def test_predict_from_stdin_label_and_test(c1, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("obj/dog.png\n"))
    code, out, _ = run_main(["classifier", "predict", "obj.data", f"{C1}.cfg", "final.weights"], c1)
    assert code == 0 and out.count("Enter Image Path: ") == 2 and "\ndog: 1.000000\n" in out
    (c1 / "obj.data").write_text((c1 / "obj.data").read_text() + "test=train.txt\n")
    code, out, _ = run_main(["classifier", "label", "obj.data", f"{C1}.cfg", "final.weights"], c1)
    assert code == 0 and out.splitlines() == ["dog"]
    code, out, _ = run_main(["classifier", "test", "obj.data", f"{C1}.cfg", "final.weights"], c1)
    assert code == 0 and re.fullmatch(r"obj/dog\.png(\t[-\d.e]+){3}", out.strip())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_saves_last_weights(c1):
    cfg = c1 / f"{C1}.cfg"
    cfg.write_text(re.sub(r"(?m)^max_batches\s*=.*$", "max_batches=100000", cfg.read_text()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, str(ROOT / "darknet.py"), "classifier", "train", "obj.data", cfg.name,
                          "init.weights", "-dont_show"], cwd=c1, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        for line in p.stdout:
            if line.startswith("3, ") or time.monotonic() > deadline:
                break
        os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert not wait_gone(p.pid)
        assert p.returncode == 143, err[-2000:]
        assert re.search(rf"Terminated \(SIGTERM\): saved backup/+{C1}_last.weights", err)
        seen = struct.unpack("<iiiQ", (c1 / "backup" / f"{C1}_last.weights").read_bytes()[:20])[3]
        assert seen >= 6 and "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()
        for pid in session_processes(p.pid):
            os.kill(pid, signal.SIGKILL)


def test_gpus_two_cpu_processes(c1):
    """-gpus 0,1 without CUDA: two gloo processes (train/distributed.py, shared with the detector):
    learning_rate x 2, the iteration counter advances by 2 per step, rank 0 alone prints and saves."""
    cfg = c1 / f"{C1}.cfg"
    cfg.write_text(re.sub(r"(?m)^max_batches\s*=.*$", "max_batches=6", cfg.read_text()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "classifier", "train", "obj.data", cfg.name,
                        "init.weights", "-dont_show", "-gpus", "0,1"], cwd=c1, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Learning Rate: 0.2, Momentum: 0.9, Decay: 0.0005" in r.stdout
    assert [line.split(":")[0] for line in r.stdout.splitlines() if re.match(r"^\d+, ", line)] == \
        ["2, 4.000", "4, 8.000", "6, 12.000"]
    assert r.stdout.count("0,1\n") == 1 and (c1 / "backup" / f"{C1}_final.weights").exists()
    assert "Traceback" not in r.stderr
