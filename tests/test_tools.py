"""darknet's top-level tools (darknet_py/tools.py) against the files and lines upstream's own binary
wrote from the same inputs (tests/data/tools/README.md gives the commands)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "tools"
UP = DATA / "upstream"
U = 2.0 ** -24  # float32's unit roundoff


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), DISPLAY="", WAYLAND_DISPLAY="")
    return subprocess.run([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture()
def work(tmp_path):
    for f in DATA.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path)
    shutil.copy(Path(__file__).parent / "data" / "image" / "dog_200x150.png", tmp_path)
    return tmp_path


def floats(path):
    return np.fromfile(path, dtype="<f4", offset=20)


def header(path):
    return Path(path).read_bytes()[:20]


@pytest.mark.parametrize("tool,cfg,weights", [
    ("rgbgr", "tools.cfg", ["tools_1.weights"]),
    ("normalize", "tools.cfg", ["tools_1.weights"]),
    ("reset", "denorm.cfg", ["denorm.weights"]),
    ("denormalize", "denorm.cfg", ["denorm.weights"]),
])
def test_weight_tool_writes_upstreams_file(work, tool, cfg, weights):
    """Element-wise float32 arithmetic, as upstream's: the same bytes."""
    r = run([tool, cfg, *weights, "out.weights"], work)
    assert r.returncode == 0, r.stderr
    assert (work / "out.weights").read_bytes() == (UP / f"{tool}.weights").read_bytes()


def test_average_writes_upstreams_file(work):
    r = run(["average", "tools.cfg", "out.weights", "tools_1.weights", "tools_2.weights", "tools_3.weights"], work)
    assert r.returncode == 0, r.stderr
    assert (work / "out.weights").read_bytes() == (UP / "average.weights").read_bytes()


def test_partial_writes_upstreams_file(work):
    r = run(["partial", "tools.cfg", "tools_1.weights", "out.weights", "2"], work)
    assert r.returncode == 0, r.stderr
    assert "more floats" not in r.stderr  # the rest of the file is meant to stay unread
    assert (work / "out.weights").read_bytes() == (UP / "partial.weights").read_bytes()


def test_rescale_matches_upstream_within_its_sum_order(work):
    """Weights doubled (exact) and every other layer untouched: the same bytes. Each bias moves by
    -.5 x the sum of its 27 doubled weights, which upstream's -Ofast build adds in a vectorized
    order: a float32 sum of n terms in any order is within (n - 1) u sum|w| of another."""
    r = run(["rescale", "tools.cfg", "tools_1.weights", "out.weights"], work)
    assert r.returncode == 0, r.stderr
    ours, up, orig = floats(work / "out.weights"), floats(UP / "rescale.weights"), floats(work / "tools_1.weights")
    assert header(work / "out.weights") == header(UP / "rescale.weights")
    n_filters, per_filter = 4, 27
    biases = slice(0, n_filters)
    rest = np.r_[n_filters:len(up)]
    np.testing.assert_array_equal(ours[rest], up[rest])
    w = 2 * orig[16:16 + n_filters * per_filter].reshape(n_filters, per_filter).astype(np.float64)
    bound = 0.5 * (per_filter - 1) * U * np.abs(w).sum(1)
    assert np.all(np.abs(ours[biases] - up[biases]) <= bound), (ours[biases] - up[biases], bound)
    assert not np.array_equal(ours[biases], orig[biases])  # it did move them


def test_oneoff_matches_upstream_where_upstream_reads_the_file(work):
    """Biases and weights read from filter 5 on, the first third copied twice: the same bytes. The 5
    filters before (never in the file) hold each engine's fresh random initialization, and so do
    their two copies: those differ."""
    r = run(["oneoff", "oneoff.cfg", "oneoff_in.weights", "out.weights"], work)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == (UP / "oneoff.log").read_text().split()[-1] == "9378"  # printf("%d\n", oldn)
    ours, up = floats(work / "out.weights"), floats(UP / "oneoff.weights")
    assert header(work / "out.weights") == header(UP / "oneoff.weights")
    n, c, third = 9378, 2, 9378 // 3
    init = np.zeros(len(up), bool)
    for k in range(3):
        start = n + k * third * c
        init[start:start + 5 * c] = True
    np.testing.assert_array_equal(ours[~init], up[~init])
    np.testing.assert_array_equal(ours[:5], np.zeros(5, np.float32))  # upstream's biases start at 0 too


def test_denormalize_differs_from_upstream_only_by_its_overrun(work):
    """On a convolution with several filters upstream's denormalize_convolutional_layer loops over
    n x nweights weights of an nweights array: every weight is scaled by the FIRST filter's factor and
    the loop writes past the array. We fold per filter; this test pins both facts so that the README's
    statement stays true: upstream's layer-0 weights are ours divided per filter by k_i and multiplied
    by k_0."""
    r = run(["reset", "tools.cfg", "tools_1.weights", "out.weights"], work)
    assert r.returncode == 0, r.stderr
    orig, ours, up = floats(work / "tools_1.weights"), floats(work / "out.weights"), floats(UP / "ub_reset.weights")
    scales, var = orig[4:8].astype(np.float64), orig[12:16].astype(np.float64)
    k = (scales / np.sqrt(var + 1e-5)).astype(np.float32)
    w0 = orig[16:16 + 108].reshape(4, 27)
    np.testing.assert_array_equal(ours[16:16 + 108].reshape(4, 27), w0 * k[:, None])
    np.testing.assert_array_equal(up[16:16 + 108].reshape(4, 27), w0 * k[0])


def test_statistics_and_ops_print_upstreams_lines(work):
    r = run(["statistics", "tools.cfg", "tools_1.weights"], work)
    assert r.returncode == 0, r.stderr
    up = (UP / "statistics.log").read_text().splitlines()
    want = up[next(i for i, l in enumerate(up) if l.startswith(" seen ")) + 1:]
    got = r.stdout.splitlines()
    assert [re.sub(r"[-\d.]+", "#", l) for l in got] == [re.sub(r"[-\d.]+", "#", l) for l in want[:len(got)]]
    # printed with 6 decimals: the same number within half a unit of the last digit plus float32's
    # rounding of 10-term sums (< 1e-6 here)
    num = lambda lines: np.array([float(x) for l in lines for x in re.findall(r"-?\d+\.\d+", l)])
    np.testing.assert_allclose(num(got), num(want[:len(got)]), atol=1.5e-6, rtol=0)
    assert len(num(got)) == 9
    r = run(["ops", "tools.cfg"], work)
    up_ops = [l for l in (UP / "ops.log").read_text().splitlines() if l.startswith("Floating Point")]
    assert r.stdout.splitlines() == up_ops


def _jpeg_close(picture, up_path, ours_path):
    """`picture` (C, H, W in [0, 1]) is what darknet_py computed and our file must be its quality-80
    JPEG. Upstream's file is another encoder's (stb) quality-80 JPEG: the two decoded files must
    agree within a mean of 3 grey levels, 5 for a one-channel picture (measured over these 11
    pictures: at most 1.36 for the colour ones, 3.59 for the grey dog, which stb encodes from one
    channel; the filters with red and blue swapped give 28.6, not normalized 55, flipped 53)."""
    from darknet_py.image import to_bgr_uint8
    raw = to_bgr_uint8(picture)
    bound = 5.0 if raw.ndim == 2 else 3.0
    if raw.ndim == 2:
        raw = np.repeat(raw[:, :, None], 3, 2)  # stb writes a grey JPEG as 3 components
    again = cv2.imdecode(cv2.imencode(".jpg", raw, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_UNCHANGED)
    up = cv2.imread(str(up_path), cv2.IMREAD_UNCHANGED).astype(float)
    ours = cv2.imread(str(ours_path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ours, again)
    assert up.shape == ours.shape, (up_path, up.shape, ours.shape)
    assert np.abs(up - ours).mean() <= bound, (up_path, np.abs(up - ours).mean())


def test_visualize_saves_upstreams_pictures(work):
    from darknet_py import tools
    from darknet_py.network import build_network
    r = run(["visualize", "tools.cfg", "tools_1.weights"], work)
    assert r.returncode == 0, r.stderr
    net = build_network(work / "tools.cfg", batch=1, quiet=True)
    net.load_weights(work / "tools_1.weights", verbose=False)
    for i in range(3):
        l = net.layers[i]
        _jpeg_close(tools.filters_image(l), UP / f"layer{i}.jpg", work / f"Layer {i}.jpg")
        _jpeg_close(tools.output_image(l), UP / f"layer{i}_output.jpg", work / f"Layer {i}: Output.jpg")
    assert "saving to Layer 0.jpg" in r.stderr


def test_imtest_prints_the_norm_and_saves_upstreams_pictures(work):
    from darknet_py import image as imagelib, tools
    r = run(["imtest", "dog_200x150.png"], work)
    assert r.returncode == 0, r.stderr
    ours = float(r.stdout.split("L2 Norm:")[1].split()[0])
    up = float((UP / "imtest.log").read_text().split("L2 Norm:")[1].split()[0])
    n = 200 * 150 * 3  # the norm's float32 sum of squares: (n - 1) u relative in any order; sqrt halves it
    assert abs(ours - up) <= 0.5 * (n - 1) * U * up
    im = imagelib.load_image_color(work / "dog_200x150.png")
    pictures = {"Original": im, "Gray": tools.grayscale(im), "C1": imagelib.distort_image(im, .1, 1.5, 1.5),
                "C2": imagelib.distort_image(im, -.1, .66666, .66666),
                "C3": imagelib.distort_image(im, .1, 1.5, .66666), "C4": imagelib.distort_image(im, .1, .66666, 1.5)}
    for name, picture in pictures.items():
        _jpeg_close(picture, UP / f"imtest_{name}.jpg", work / f"{name}.jpg")
    r2 = run(["test", "dog_200x150.png"], work)  # upstream's other name for it
    assert r2.stdout == r.stdout


def test_classifier_try_prints_the_layer_and_top_classes(work):
    """Layer 0's rolling mean, variance and scale (one line per input channel, as upstream loops over
    l.c), its 784 outputs one a line, and the top class, as upstream printed them. Numbers: each side
    rounds to 6 decimals (1e-6 together) and the float32 convolutions sum in other orders (a few ulp of
    values up to 4.6, < 1e-6): 2e-6."""
    r = run(["classifier", "try", "try.data", "try.cfg", "try.weights", "dog_200x150.png", "0"], work)
    assert r.returncode == 0, r.stderr
    up = (UP / "try.log").read_text().splitlines()
    up = up[next(i for i, l in enumerate(up) if l.startswith(" seen ")) + 1:]
    got = r.stdout.splitlines()
    got = got[len(got) - len(up):]
    shape = lambda lines: [re.sub(r"-?\d+\.\d+", "#", l) for l in lines if "Predicted in" not in l]
    assert shape(got) == shape(up)
    num = lambda lines: np.array([float(x) for l in lines if "Predicted" not in l for x in re.findall(r"-?\d+\.\d+", l)])
    assert len(num(got)) == 3 * 3 + 784 + 1
    np.testing.assert_allclose(num(got), num(up), atol=2e-6, rtol=0)
    assert got[-1] == up[-1] == "fish: 0.451953"


def test_speed_prints_upstreams_lines(work):
    r = run(["speed", "tools.cfg", "3"], work)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l]
    assert re.fullmatch(r"3 evals, \d+\.\d{6} Seconds", lines[-3])
    assert re.fullmatch(r"Speed: \d+\.\d{6} sec/eval", lines[-2])
    assert re.fullmatch(r"Speed: (\d+\.\d{6}|inf) Hz", lines[-1])


def test_old_demo_programs_and_unknown_commands(tmp_path):
    for cmd in ("yolo", "nightmare", "coco", "3d"):
        r = run([cmd, "x"], tmp_path)
        assert r.returncode != 0
        assert f"`{cmd}` demo program is not provided by darknet_py" in r.stderr.splitlines()[0]
    r = run(["frobnicate"], tmp_path)
    assert r.returncode == 2 and "Not an option: frobnicate" in r.stderr
    for listed in ("detector", "classifier", "detect", "classify", "average", "ops", "speed", "rescale", "rgbgr",
                   "reset", "normalize", "denormalize", "statistics", "visualize", "oneoff", "imtest", "partial",
                   "export"):
        assert listed in r.stderr
