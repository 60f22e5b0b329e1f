"""detector calc_anchors (upstream's k-means, its C rand() included) and detector recall."""
import ctypes
import ctypes.util
import io
import shutil

import cv2
import numpy as np
import pytest

from evalkit import CFG, EVAL_DATA, EXPECTED, WEIGHTS, read_exact, run_cli

from darknet_py.eval.anchors import GlibcRand, calc_anchors
from darknet_py.eval.recall import validate_detector_recall


@pytest.fixture()
def anchordir(tmp_path, monkeypatch):
    d = tmp_path / "anchors"
    shutil.copytree(EVAL_DATA / "anchors", d)
    monkeypatch.chdir(d)
    return d


def _lines(text):
    """Printed report without the progress lines (" loaded \\t image ...", " all loaded.")."""
    return [l for l in text.replace("\r", "\n").split("\n") if "loaded" not in l]


@pytest.mark.parametrize("k", [4, 6, 9])
def test_calc_anchors_equals_upstream_run_with_the_same_seed(anchordir, k):
    """Upstream run at time 12345 (time() shimmed) == ours with seed 12345."""
    out = io.StringIO()
    res = calc_anchors("a.data", k, 416, 416, out=out, seed=12345)
    assert _lines(out.getvalue()) == _lines(read_exact(EXPECTED / f"anchors_k{k}_seed12345.txt"))
    assert (anchordir / "anchors.txt").read_text() == res["text"]
    assert (anchordir / "counters_per_class.txt").read_text() == "counters_per_class = 72, 72"


def test_cli_calc_anchors_byte_for_byte(anchordir):
    r = run_cli(["detector", "calc_anchors", "a.data", "-num_of_clusters", "5", "-width", "32", "-height", "24",
                 "-show"], anchordir, env={"DARKNET_SEED": "12345"})
    assert r.returncode == 0, r.stderr
    expected = read_exact(EXPECTED / "anchors_k5_w32_h24_seed12345_raw.txt")
    assert r.stdout.startswith(expected)
    assert r.stdout[len(expected):] == "Saved ./cloud.png\n"
    assert (anchordir / "anchors.txt").read_text() == \
        "1.6358,1.8626, 1.5858,1.9666, 8.7497,9.5840, 24.7618,16.5244, 26.0285,16.8022"
    img = cv2.imread(str(anchordir / "cloud.png"))
    assert img.shape == (700, 700, 3) and img.max() == 255


def test_well_separated_clusters_give_their_means(anchordir):
    """Four groups of box sizes; a start with one box in each group finds the group means."""
    groups = [[], [], [], []]
    for i in range(12):
        rows = (anchordir / "imgs" / f"{i}.txt").read_text().split("\n")
        for r, line in enumerate(l for l in rows if l):
            _, _, _, w, h = line.split()
            groups[r // 3].append((np.float32(w) * np.float32(416), np.float32(h) * np.float32(416)))
    means = sorted((np.mean(np.array(g, np.float64), axis=0) for g in groups), key=lambda m: m[0] * m[1])
    res = calc_anchors("a.data", 4, 416, 416, out=io.StringIO(), seed=2)
    assert np.allclose(res["anchors"], np.array(means), rtol=1e-5)
    assert res["text"] == " 21, 34, 125, 83, 103,250, 335,290"
    assert res["avg_iou"] > 95


def test_one_cluster_is_the_mean(anchordir):
    res = calc_anchors("a.data", 1, 416, 416, out=io.StringIO(), seed=7)
    pts = []
    for i in range(12):
        for line in (anchordir / "imgs" / f"{i}.txt").read_text().splitlines():
            _, _, _, w, h = line.split()
            pts.append((np.float32(w) * np.float32(416), np.float32(h) * np.float32(416)))
    assert np.allclose(res["anchors"][0], np.mean(np.array(pts, np.float64), axis=0), rtol=1e-5)


def test_glibc_rand():
    """GlibcRand is C's srand/rand of glibc (checked against the C library when it is glibc)."""
    g = GlibcRand(1)
    assert [g.rand() for _ in range(3)] == [1804289383, 846930886, 1681692777]  # glibc's rand() unseeded
    name = ctypes.util.find_library("c")
    if not name or "libc.so.6" not in name:
        pytest.skip("not glibc")
    libc = ctypes.CDLL(name)
    for seed in (0, 12345, 1732270000, 2**31 + 5):
        libc.srand(ctypes.c_uint(seed))
        g = GlibcRand(seed)
        assert [libc.rand() for _ in range(500)] == [g.rand() for _ in range(500)]


def test_recall_rich_set_matches_upstream(in_shared, eval_net):
    err = io.StringIO()
    res = validate_detector_recall("rich/rich.data", CFG, WEIGHTS, net=eval_net, err=err, out=io.StringIO())
    assert err.getvalue() == read_exact(EXPECTED / "recall_rich.txt")
    assert (res["correct"], res["total"]) == (11, 21)


def test_recall_map_set(in_shared, eval_net):
    """Upstream's lines for the map/ parity set (same upstream build)."""
    err = io.StringIO()
    validate_detector_recall("obj.data", CFG, WEIGHTS, net=eval_net, err=err)
    assert err.getvalue().splitlines() == [
        "    0     3     3\tRPs/Img: 4.00\tIOU: 98.25%\tRecall:100.00%",
        "    1     4     6\tRPs/Img: 14.50\tIOU: 67.08%\tRecall:66.67%",
        "    2     5     9\tRPs/Img: 15.67\tIOU: 61.81%\tRecall:55.56%",
        "    3     5    12\tRPs/Img: 18.00\tIOU: 54.80%\tRecall:41.67%",
    ]
