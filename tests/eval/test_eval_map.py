"""detector map: upstream's report, numbers and text, for the map/ parity set and a richer
set (non-square images for letterboxing, a duplicated truth, a missing label file,
`difficult` objects), against outputs of upstream darknet built from the same commit."""
import io
import itertools

import numpy as np
import pytest

from evalkit import CFG, EXPECTED, MAP, WEIGHTS, read_exact, report_section, run_cli

from darknet_py.eval.map import _average_precision, validate_detector_map


def upstream_stdout_report(log_text: str) -> str:
    """map.log from " calculation mAP" to the end, without upstream's stderr line."""
    i = log_text.index("\n calculation mAP")
    text = log_text[i:]
    return "\n".join(l for l in text.split("\n") if "Total Detection Time" not in l)


def test_cli_map_prints_upstream_report(evaldir):
    r = run_cli(["detector", "map", "obj.data", CFG, WEIGHTS], evaldir)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    ours = r.stdout[r.stdout.index("\n calculation mAP"):]
    assert ours == upstream_stdout_report(read_exact(MAP / "map.log"))
    assert " mean average precision (mAP@0.50) = 0.277778, or 27.78 % " in ours


@pytest.mark.parametrize("name,kw", [
    ("points11", dict(points=11)),
    ("points101", dict(points=101)),
    ("iou75", dict(iou_thresh=0.75)),
    ("thresh50", dict(thresh=0.5)),
    ("combo", dict(iou_thresh=0.3, points=101, thresh=0.1)),
])
def test_map_flags_match_upstream(in_shared, eval_net, name, kw):
    out = io.StringIO()
    m = validate_detector_map(eval_net, "obj.data", out=out, err=io.StringIO(), **kw)
    expected = read_exact(EXPECTED / f"map_fixture_{name}.txt")
    assert report_section(out.getvalue()) == expected
    assert f"= {m:f}, or" in expected


@pytest.mark.parametrize("name,data,kw", [
    ("default", "rich/rich.data", {}),
    ("points11", "rich/rich.data", dict(points=11)),
    ("points101_iou60", "rich/rich.data", dict(points=101, iou_thresh=0.6)),
    ("difficult", "rich/rich_dif.data", {}),
    ("difficult_points11", "rich/rich_dif.data", dict(points=11, thresh=0.05)),
    ("letter", "rich/rich.data", dict(letter_box=True)),
    ("letter_points101", "rich/rich.data", dict(letter_box=True, points=101, thresh=0.1)),
    ("nothing_above_thresh", "rich/rich_dif.data", dict(thresh=0.9999, iou_thresh=0.99)),  # 0/0: "-nan"
])
def test_map_rich_set_matches_upstream(in_shared, eval_net, name, data, kw):
    out = io.StringIO()
    validate_detector_map(eval_net, data, out=out, err=io.StringIO(), **kw)
    text = out.getvalue()
    assert report_section(text) == read_exact(EXPECTED / f"map_rich_{name}.txt")
    # the image without a label file is a negative, with upstream's message
    assert "Can't open label file. (This can be normal only if you use MSCOCO): rich/v3_nolabel.txt" in text


def test_letter_box_from_the_cfg(in_shared):
    """letter_box=1 in [net] (upstream's only switch for map) gives upstream's numbers."""
    from darknet_py.eval.common import load_eval_network

    net = load_eval_network("rich/letter.cfg", WEIGHTS)
    out = io.StringIO()
    validate_detector_map(net, "rich/rich.data", out=out, err=io.StringIO())
    assert report_section(out.getvalue()) == read_exact(EXPECTED / "map_rich_letter.txt")


def test_training_network_same_path(in_shared):
    """What train -map calls: the training network (batch 2, not fused, in training mode)."""
    from darknet_py.network import build_network

    net = build_network(CFG, train=True)
    net.load_weights(WEIGHTS, verbose=False)
    net.train()
    out = io.StringIO()
    m = validate_detector_map(net, "obj.data", 0.25, 0.5, 0, False, out=out, err=io.StringIO())
    assert m == pytest.approx(0.2777777777777778, abs=1e-12)
    assert net.training
    assert " mean average precision (mAP@0.50) = 0.277778, or 27.78 % " in out.getvalue()


# ------------------------------------------------------------------------- the AP maths
def upstream_ap_all_ranks(cls, is_tp, truth_count, classes, points):
    """Upstream's loops literally: precision/recall of every class at every rank."""
    n = len(cls)
    tp = np.zeros((classes, n), int)
    fp = np.zeros((classes, n), int)
    for r in range(n):
        if r:
            tp[:, r] = tp[:, r - 1]
            fp[:, r] = fp[:, r - 1]
        if is_tp[r]:
            tp[cls[r], r] += 1
        else:
            fp[cls[r], r] += 1
    aps = []
    for i in range(classes):
        prec = [tp[i, r] / (tp[i, r] + fp[i, r]) if tp[i, r] + fp[i, r] else 0.0 for r in range(n)]
        rec = [tp[i, r] / truth_count[i] if truth_count[i] else 0.0 for r in range(n)]
        ap = 0.0
        if points == 0:
            last_r, last_p = rec[n - 1], prec[n - 1]
            for r in range(n - 2, -1, -1):
                d = last_r - rec[r]
                last_r = rec[r]
                if prec[r] > last_p:
                    last_p = prec[r]
                ap += d * last_p
            ap += (last_r - 0) * last_p
        else:
            for point in range(points):
                cur_r = point * 1.0 / (points - 1)
                cur_p = 0.0
                for r in range(n):
                    if rec[r] >= cur_r and prec[r] > cur_p:
                        cur_p = prec[r]
                ap += cur_p
            ap /= points
        aps.append(ap)
    return aps


@pytest.mark.parametrize("seed,points", list(itertools.product(range(12), (0, 11, 101))))
def test_average_precision_equals_upstream_loops(seed, points):
    rng = np.random.default_rng(seed)
    classes = 3
    n = int(rng.integers(1, 40))
    cls = rng.integers(0, classes, n)
    is_tp = rng.random(n) < 0.5
    truth_count = [int(((cls == i) & is_tp).sum() + rng.integers(0, 3)) for i in range(classes)]
    expected = upstream_ap_all_ranks(cls, is_tp, truth_count, classes, points)
    for i in range(classes):
        sel = np.flatnonzero(cls == i)
        tp = np.cumsum(is_tp[sel])
        fp = np.cumsum(~is_tp[sel])
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        rec = tp / truth_count[i] if truth_count[i] else np.zeros(sel.size)
        assert _average_precision(rec.astype(float), prec.astype(float), points) == expected[i]


def test_batched_forward_same_report(in_shared, eval_net):
    """Several images per forward pass (the default on an accelerator) changes nothing."""
    a, b = io.StringIO(), io.StringIO()
    validate_detector_map(eval_net, "rich/rich.data", out=a, err=io.StringIO())
    validate_detector_map(eval_net, "rich/rich.data", out=b, err=io.StringIO(), batch=3)
    assert report_section(a.getvalue()) == report_section(b.getvalue())
