"""Windows where a display exists (darknet_py/display.py): without -dont_show, `detector train`
shows the chart, -show_imgs the augmented images (each waits for a key, as upstream), and
`detector test` the predictions (waits for a key). Headless, or with a display that does not
answer, the files only and no error (OpenCV's Qt would abort the process: display.py probes
the X server first). The display tests run under Xvfb; skipped, with the reason, without it."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CASE = "t1-yolov3-tiny-mse"
TRAIN = ROOT / "tests" / "data" / "train" / CASE
MAP = ROOT / "tests" / "data" / "map"
XVFB, XDOTOOL = shutil.which("Xvfb"), shutil.which("xdotool")


def _unused_display() -> int:
    for n in range(90, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


def _env(display=None):
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    e.pop("WAYLAND_DISPLAY", None)
    if display is None:
        e.pop("DISPLAY", None)
    else:
        e["DISPLAY"] = display
    return e


def _cli(args, cwd, env, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def xvfb():
    if not XVFB:
        pytest.skip("no Xvfb here (apt-get install xvfb)")
    n = _unused_display()
    proc = subprocess.Popen([XVFB, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{n}") and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None or not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        proc.kill()
        pytest.skip("Xvfb did not start")
    yield f":{n}"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_no_display_nothing_is_shown(monkeypatch):
    from darknet_py import display

    for value in (None, f":{_unused_display()}"):  # unset, then a display nobody serves
        if value is None:
            monkeypatch.delenv("DISPLAY", raising=False)
        else:
            monkeypatch.setenv("DISPLAY", value)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.setattr(display, "_state", {})
        assert display.has_display() is False
        assert display.show("x", np.zeros((4, 4, 3), np.uint8), 1) is None
        assert display.show_and_wait("x", np.zeros((3, 4, 4), np.float32)) is False
        assert display.show_batch(np.zeros((2, 3, 4, 4), np.float32)) is False
        assert display.show_image("x", np.zeros((3, 4, 4), np.float32)) is False and display.wait_key(1) == -1


def test_train_without_dont_show_on_a_dead_display_writes_the_files(tmp_path):
    d = tmp_path / CASE
    shutil.copytree(TRAIN, d)
    # before display.py probed, OpenCV's Qt aborted the process here (rc 134)
    r = _cli(["detector", "train", "obj.data", f"{CASE}.cfg", "init.weights"], d, _env(f":{_unused_display()}"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "If error occurs - run training with flag: -dont_show" not in r.stdout
    assert (d / "chart.png").is_file() and (d / "backup" / f"{CASE}_final.weights").is_file()
    assert "Traceback" not in r.stderr


def test_demo_without_dont_show_on_a_dead_display_runs_headless(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "eval"))
    from evalkit import CFG, WEIGHTS, make_evaldir
    from test_eval_demo_errors import make_video

    d = make_evaldir(tmp_path / "map")
    video = make_video(d)
    r = _cli(["detector", "demo", "obj.data", CFG, WEIGHTS, video], d, _env(f":{_unused_display()}"))
    assert r.returncode == 0, r.stderr[-2000:]  # OpenCV's Qt aborted here before (rc -6)
    assert r.stdout.count("Objects:") == 4
    assert "no display for the demo window; continuing as with -dont_show" in r.stderr


SHOW_CHART = """
import sys, cv2
sys.path.insert(0, sys.argv[1])
from darknet_py.outputs.chart import TrainChart
from darknet_py import display
c = TrainChart("w", 100, 20.0, out_dir=sys.argv[2], dont_show=False)
for i in range(3):
    c.update(i, 5.0 - i, 1.0)
print("shown", c.show, cv2.getWindowProperty("chart_w.png", cv2.WND_PROP_VISIBLE))
c.close()
"""


def test_chart_window_under_xvfb(xvfb, tmp_path):
    r = subprocess.run([sys.executable, "-c", SHOW_CHART, str(ROOT), str(tmp_path)], env=_env(xvfb),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert " If error occurs - run training with flag: -dont_show " in r.stdout
    assert "shown True 1.0" in r.stdout


def test_detector_train_under_xvfb_shows_the_chart(xvfb, tmp_path):
    d = tmp_path / CASE
    shutil.copytree(TRAIN, d)
    r = _cli(["detector", "train", "obj.data", f"{CASE}.cfg", "init.weights"], d, _env(xvfb))
    assert r.returncode == 0, r.stderr[-2000:]
    assert " If error occurs - run training with flag: -dont_show " in r.stdout  # upstream's line, window opened
    assert (d / "chart.png").is_file() and (d / f"chart_{CASE}.png").is_file()


def _press_keys_until_done(proc, display, pattern, timeout=120.0):
    """Press Escape in each window whose name matches until the process ends; the presses."""
    presses = 0
    end = time.monotonic() + timeout
    env = _env(display)
    while proc.poll() is None and time.monotonic() < end:
        found = subprocess.run([XDOTOOL, "search", "--name", pattern], env=env, capture_output=True, text=True,
                               timeout=10).stdout.split()
        for wid in found:
            subprocess.run([XDOTOOL, "key", "--window", wid, "Escape"], env=env, capture_output=True, timeout=10)
            presses += 1
        time.sleep(0.2)
    return presses


def _run_pressing(args, cwd, display, pattern, before=None):
    """Run darknet.py with args on the display, pressing Escape in the windows named by
    pattern until it ends (before(proc), when given, runs first); (rc, stdout, stderr, presses)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd, env=_env(display),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if before is not None:
            before(proc)
        presses = _press_keys_until_done(proc, display, pattern)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err, presses


@pytest.mark.skipif(not XDOTOOL, reason="no xdotool here to press the key the window waits for")
def test_detector_test_under_xvfb_shows_predictions_and_waits(xvfb, tmp_path):
    d = tmp_path / "map"
    shutil.copytree(MAP, d)

    def waits(proc):
        env, end, found = _env(xvfb), time.monotonic() + 120, ""
        while not found and proc.poll() is None and time.monotonic() < end:
            found = subprocess.run([XDOTOOL, "search", "--name", "^predictions$"], env=env, capture_output=True,
                                   text=True, timeout=10).stdout.strip()
            time.sleep(0.1)
        assert found, "no window named predictions"
        time.sleep(1.0)
        assert proc.poll() is None  # the window waits for a key, predictions.jpg already written
        assert (d / "predictions.jpg").is_file()

    rc, out, err, presses = _run_pressing(["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights",
                                           "val/v0.png"], d, xvfb, "^predictions$", waits)
    assert rc == 0, err[-2000:]
    assert presses >= 1  # it waited for the key, in the window "predictions"
    assert (d / "predictions.jpg").is_file() and "Predicted in" in out


@pytest.mark.skipif(not XDOTOOL, reason="no xdotool here to press the key the windows wait for")
def test_show_imgs_under_xvfb_shows_each_augmented_image(xvfb, tmp_path):
    d = tmp_path / CASE
    shutil.copytree(TRAIN, d)
    rc, out, err, presses = _run_pressing(["detector", "train", "obj.data", f"{CASE}.cfg", "init.weights",
                                           "-show_imgs"], d, xvfb, "^aug_")
    assert rc == 0, err[-2000:]
    # max_batches=3 of batch=2: six images, each waited for a key
    assert presses >= 6, presses
    assert len(list(d.glob("aug_*.jpg"))) >= 6
