"""[region] training deltas (darknet_py/layers/region/delta.py) against upstream's forward_region_layer.

There are no upstream fixtures for this layer, so: (a) small cases worked by hand from
upstream's formulas, (b) a slow, literal transcription of upstream's loops (below: plain
Python over images, rows, columns, anchors and truths, in the C code's order, on upstream's
flat flattened l.output) compared with the vectorized function on random outputs and truths.
"""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from darknet_py.network import build_network
from darknet_py.layers.region.delta import region_delta

CFG = Path(__file__).resolve().parent.parent / "cfg"


# --------------------------------------------------------------------------- hand-worked cases
def hand_layer(**kw):
    """2x2 grid, 2 anchors (1x1 and 2x2 cells), 2 classes, softmax, tiny-yolo-voc's scales."""
    d = dict(n=2, classes=2, coords=4, out_w=2, out_h=2, anchors=[1.0, 1.0, 2.0, 2.0], softmax=1, bias_match=1,
             rescore=1, thresh=0.6, classfix=0, focal_loss=0, object_scale=5.0, noobject_scale=1.0,
             class_scale=1.0, coord_scale=1.0, max_boxes=4, softmax_tree=None, map=None)
    d.update(kw)
    return SimpleNamespace(**d)


def hand_output(layer):
    """Upstream's flattened output: raw x, y, w, h = 0, objectness 0.5, class probabilities 0.5."""
    size = 4 + 1 + layer.classes
    o = torch.zeros(1, layer.out_h, layer.out_w, layer.n, size)
    o[..., 4] = 0.5
    o[..., 5:] = 0.5
    return o


def as_out(o, layer):
    return o.reshape(o.shape[0], -1, layer.out_h, layer.out_w)


def at(delta, layer, j, i, n, k):
    """Entry k of anchor n at row j, column i in the input layout that region_delta returns."""
    return float(delta[0, n * (4 + 1 + layer.classes) + k, j, i])


def truth_rows(*rows, t=4):
    tr = torch.zeros(1, t, 6)
    for q, r in enumerate(rows):
        tr[0, q, :5] = torch.tensor(r)
    return tr


def test_hand_one_truth():
    L = hand_layer()
    # truth x=.3 y=.7 w=h=.4 class 1: cell i=int(.3*2)=0, j=int(.7*2)=1.
    # bias_match: anchor shapes .5x.5 and 1x1 against .4x.4: IoU .16/.25=.64 and .16/1=.16 -> anchor 0.
    # No-object pass (sigmoid(0)=.5, exp(0)=1): only anchor 0 at (j=1,i=0), box (.25,.75,.5,.5), reaches
    # IoU .64 > thresh .6 with the truth; every other cell gets noobject_scale*((0-.5)*(.5*.5)) = -.125.
    # Truth: dx = (.3*2-0 - .5)*.25 = .025, dy = (.7*2-1 - .5)*.25 = -.025, dw = dh = log(.4*2/1) - 0,
    # objectness (rescore) = 5*(.64-.5)*.25 = .175, classes = 1*(0-.5), 1*(1-.5).
    d, st = region_delta(L, as_out(hand_output(L), L), truth_rows([.3, .7, .4, .4, 1]), seen=20000)
    assert at(d, L, 1, 0, 0, 0) == pytest.approx(0.025, abs=1e-7)
    assert at(d, L, 1, 0, 0, 1) == pytest.approx(-0.025, abs=1e-7)
    assert at(d, L, 1, 0, 0, 2) == pytest.approx(math.log(0.8), abs=1e-6)
    assert at(d, L, 1, 0, 0, 3) == pytest.approx(math.log(0.8), abs=1e-6)
    assert at(d, L, 1, 0, 0, 4) == pytest.approx(0.175, abs=1e-6)
    assert at(d, L, 1, 0, 0, 5) == pytest.approx(-0.5)
    assert at(d, L, 1, 0, 0, 6) == pytest.approx(0.5)
    for j in range(2):
        for i in range(2):
            for n in range(2):
                if (j, i, n) != (1, 0, 0):
                    assert at(d, L, j, i, n, 4) == pytest.approx(-0.125)
                    assert [at(d, L, j, i, n, k) for k in (0, 1, 2, 3, 5, 6)] == [0] * 6
    # cost: 7*.125^2 + 2*.025^2 + 2*log(.8)^2 + .175^2 + 2*.5^2
    cost = 7 * 0.125 ** 2 + 2 * 0.025 ** 2 + 2 * math.log(0.8) ** 2 + 0.175 ** 2 + 2 * 0.25
    assert st.cost == pytest.approx(cost, rel=1e-6)
    assert (st.count, st.class_count) == (1, 1)
    assert st.line() == ("Region Avg IOU: 0.640000, Class: 0.500000, Obj: 0.500000, No Obj: 0.500000, "
                         "Avg Recall: 1.000000,  count: 1")


def test_hand_prior_while_seen_small():
    L = hand_layer()
    o = hand_output(L)
    o[0, 0, 1, 1, 0] = 1.0  # raw x of anchor 1 at row 0, column 1
    o[0, 0, 1, 1, 2] = 0.5  # raw w
    # seen < 12800: every cell is pulled to its anchor's prior box with scale .01: target x=.5 in the
    # cell, target w = log((2/2)*2/2) = 0. s = sigmoid(1) = .7310586:
    # dx = .01*(.5-s)*(s*(1-s)), dw = .01*(0-.5) = -.005; raw zeros give s=.5 and 0 deltas.
    d, st = region_delta(L, as_out(o, L), truth_rows(), seen=100)
    s = 1 / (1 + math.exp(-1))
    assert at(d, L, 0, 1, 1, 0) == pytest.approx(0.01 * (0.5 - s) * (s * (1 - s)), rel=1e-5)
    assert at(d, L, 0, 1, 1, 2) == pytest.approx(-0.005, rel=1e-6)
    assert at(d, L, 0, 0, 0, 0) == 0 and at(d, L, 0, 1, 1, 1) == 0
    assert st.count == 0 and st.line().startswith("Region Avg IOU: -nan, Class: -nan, Obj: -nan, No Obj: 0.500000")


def test_hand_two_truths_same_cell_last_wins():
    L = hand_layer()
    o = as_out(hand_output(L), L)
    # second truth x=.35 y=.65 w=h=.45 class 0 lands on the same cell (0, 1) and anchor 0
    # (.2025/.25=.81 against .2025/1): upstream overwrites, so only the second truth's deltas stay.
    both, st2 = region_delta(L, o, truth_rows([.3, .7, .4, .4, 1], [.35, .65, .45, .45, 0]), seen=20000)
    second, st1 = region_delta(L, o, truth_rows([.35, .65, .45, .45, 0]), seen=20000)
    assert torch.equal(both, second)
    assert at(both, L, 1, 0, 0, 5) == pytest.approx(0.5) and at(both, L, 1, 0, 0, 6) == pytest.approx(-0.5)
    assert (st2.count, st1.count) == (2, 1)
    assert st2.avg_iou == pytest.approx(0.64 + st1.avg_iou, rel=1e-6)


def test_hand_no_rescore_no_bias_match():
    L = hand_layer(rescore=0, bias_match=0)
    o = hand_output(L)
    o[0, 1, 0, 1, 2] = math.log(0.4 * 2 / 2)  # anchor 1 predicts w = .4 at (j=1, i=0): IoU 1 with w, h
    o[0, 1, 0, 1, 3] = math.log(0.4 * 2 / 2)  # so the shape search (predicted shapes) picks anchor 1
    d, st = region_delta(L, as_out(o, L), truth_rows([.3, .7, .4, .4, 1]), seen=20000)
    # objectness without rescore: 5*(1-.5)*.25 = .625; the box w delta is log(.8/2) - log(.4) = 0
    assert at(d, L, 1, 0, 1, 4) == pytest.approx(0.625)
    assert at(d, L, 1, 0, 1, 2) == pytest.approx(0.0, abs=1e-6)
    assert at(d, L, 1, 0, 0, 4) == 0.0  # anchor 0 there overlaps the truth by .64 > .6: no no-object delta


# --------------------------------------------------------------------------- slow transcription
def clog(x):
    """C's log: -inf at 0, nan below."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def logistic(x):
    return 1.0 / (1.0 + math.exp(-x))


def overlap(x1, w1, x2, w2):
    return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)


def box_iou(a, b):
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if (w < 0 or h < 0) else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return 0.0 if inter == 0 or union == 0 else inter / union


def tree_tables(tree):
    """read_tree's parent, group, group_offset and group_size, rebuilt the way read_tree builds them."""
    parent = list(tree.parents)
    group, offs, sizes = [], [], []
    last, gsize, groups = -1, 0, 0
    for n, p in enumerate(parent):
        if p != last:
            groups += 1
            offs.append(n - gsize)
            sizes.append(gsize)
            gsize, last = 0, p
        group.append(groups)
        gsize += 1
    offs.append(len(parent) - gsize)
    sizes.append(gsize)
    return parent, group, offs, sizes


def ref_region(L, out, truth, seen):
    """forward_region_layer's training part, loop for loop. out: upstream's flattened l.output as a
    flat list; truth: (batch, max_boxes, 6) nested lists. Returns (un-flattened delta, cost, stats)."""
    w, h, nA, classes = L.out_w, L.out_h, L.n, L.classes
    size = L.coords + classes + 1
    outputs = h * w * nA * size
    batch = len(out) // outputs
    bias = L.anchors
    delta = [0.0] * len(out)
    s = dict(avg_iou=0.0, recall=0.0, avg_cat=0.0, avg_obj=0.0, avg_anyobj=0.0, count=0, class_count=0)
    tree = tree_tables(L.softmax_tree) if L.softmax_tree is not None else None

    def get_box(index, n, i, j):
        return [(i + logistic(out[index])) / w, (j + logistic(out[index + 1])) / h,
                math.exp(out[index + 2]) * bias[2 * n] / w, math.exp(out[index + 3]) * bias[2 * n + 1] / h]

    def delta_box(tr, n, index, i, j, scale):
        pred = get_box(index, n, i, j)
        iou = box_iou(pred, tr)
        tx, ty = tr[0] * w - i, tr[1] * h - j
        tw, th = clog(tr[2] * w / bias[2 * n]), clog(tr[3] * h / bias[2 * n + 1])
        sx, sy = logistic(out[index]), logistic(out[index + 1])
        delta[index + 0] = scale * (tx - sx) * ((1 - sx) * sx)
        delta[index + 1] = scale * (ty - sy) * ((1 - sy) * sy)
        delta[index + 2] = scale * (tw - out[index + 2])
        delta[index + 3] = scale * (th - out[index + 3])
        return iou

    def delta_class(index, class_id, scale):
        if tree is not None:
            parent, group, offs, sizes = tree
            pred = 1.0
            while class_id >= 0:
                pred *= out[index + class_id]
                g = group[class_id]
                for q in range(sizes[g]):
                    delta[index + offs[g] + q] = scale * (0 - out[index + offs[g] + q])
                delta[index + class_id] = scale * (1 - out[index + class_id])
                class_id = parent[class_id]
            s["avg_cat"] += pred
            return
        if L.focal_loss:
            pt = out[index + class_id] + 1e-15
            grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1) if pt > 0 else float("nan")
        for q in range(classes):
            delta[index + q] = scale * ((1 if q == class_id else 0) - out[index + q])
            if L.focal_loss:
                delta[index + q] *= 0.5 * grad
            if q == class_id:
                s["avg_cat"] += out[index + q]

    for b in range(batch):
        if tree is not None:
            onlyclass = False
            for t in range(L.max_boxes):
                tr = truth[b][t]
                if not tr[0]:
                    break
                class_id = int(tr[4])
                if tr[0] > 100000 and tr[1] > 100000:
                    maxp, maxi = 0.0, 0
                    for n in range(nA * w * h):
                        index = size * n + b * outputs + 5
                        p, c = out[index - 1], class_id
                        pp = 1.0
                        while c >= 0:
                            pp *= out[index + c]
                            c = tree[0][c]
                        p *= pp
                        if p > maxp:
                            maxp, maxi = p, n
                    delta_class(size * maxi + b * outputs + 5, class_id, L.class_scale)
                    s["class_count"] += 1
                    onlyclass = True
                    break
            if onlyclass:
                continue
        for j in range(h):
            for i in range(w):
                for n in range(nA):
                    index = size * (j * w * nA + i * nA + n) + b * outputs
                    pred = get_box(index, n, i, j)
                    best_iou, best_class = 0.0, -1
                    for t in range(L.max_boxes):
                        tr = truth[b][t]
                        class_id = int(tr[4])
                        if class_id >= classes:
                            continue
                        if not tr[0]:
                            break
                        iou = box_iou(pred, tr[:4])
                        if iou > best_iou:
                            best_class, best_iou = class_id, iou
                    o = out[index + 4]
                    s["avg_anyobj"] += o
                    delta[index + 4] = L.noobject_scale * ((0 - o) * ((1 - o) * o))
                    if L.classfix == -1:
                        delta[index + 4] = L.noobject_scale * ((best_iou - o) * ((1 - o) * o))
                    elif best_iou > L.thresh:
                        delta[index + 4] = 0
                        if L.classfix > 0:
                            delta_class(index + 5, best_class, L.class_scale * (o if L.classfix == 2 else 1))
                            s["class_count"] += 1
                    if seen < 12800:
                        prior = [(i + .5) / w, (j + .5) / h, bias[2 * n] / w, bias[2 * n + 1] / h]
                        delta_box(prior, n, index, i, j, .01)
        for t in range(L.max_boxes):
            tr = truth[b][t]
            class_id = int(tr[4])
            if class_id >= classes:
                continue
            if not tr[0]:
                break
            best_iou, best_index, best_n = 0.0, 0, 0
            i, j = int(tr[0] * w), int(tr[1] * h)
            shift = [0, 0, tr[2], tr[3]]
            for n in range(nA):
                index = size * (j * w * nA + i * nA + n) + b * outputs
                pred = get_box(index, n, i, j)
                if L.bias_match:
                    pred[2], pred[3] = bias[2 * n] / w, bias[2 * n + 1] / h
                pred[0] = pred[1] = 0
                iou = box_iou(pred, shift)
                if iou > best_iou:
                    best_index, best_iou, best_n = index, iou, n
            iou = delta_box(tr[:4], best_n, best_index, i, j, L.coord_scale)
            if iou > .5:
                s["recall"] += 1
            s["avg_iou"] += iou
            o = out[best_index + 4]
            s["avg_obj"] += o
            delta[best_index + 4] = L.object_scale * (1 - o) * ((1 - o) * o)
            if L.rescore:
                delta[best_index + 4] = L.object_scale * (iou - o) * ((1 - o) * o)
            delta_class(best_index + 5, class_id, L.class_scale)
            s["count"] += 1
            s["class_count"] += 1
    d = np.array(delta, dtype=np.float64).reshape(batch, h * w, nA * size).transpose(0, 2, 1)
    cost = float((d ** 2).sum())
    return d.reshape(batch, nA * size, h, w), cost, s


def random_truth(g, nb, maxb, classes, ntr, tree_onlyclass=False):
    t = np.zeros((nb, maxb, 6), np.float32)
    for b in range(nb):
        for q in range(ntr):
            if q and g.random() < 0.4:  # a near copy of the previous truth: same cell, often same anchor
                t[b, q] = t[b, q - 1]
                t[b, q, 0] = np.clip(t[b, q, 0] + g.uniform(-0.01, 0.01), 0.01, 0.99)
                t[b, q, 2] = g.uniform(0.05, 0.9)
                t[b, q, 4] = g.integers(classes)
            else:
                t[b, q] = [g.uniform(0.01, 0.99), g.uniform(0.01, 0.99), g.uniform(0.02, 0.9), g.uniform(0.02, 0.9),
                           g.integers(classes), 0]
        if ntr > 2 and g.random() < 0.3:
            t[b, 1, 4] = classes + 3  # a class the cfg does not have: skipped (continue) by both loops
        if ntr > 3 and g.random() < 0.3:
            t[b, 2, :5] = [0, 0, 0, 0, classes + 1]  # nor does x == 0 end the list when the class is too big
        if tree_onlyclass and b == 0:
            t[b, min(1, ntr - 1), :2] = [200000, 200000]
    return t


@pytest.fixture(scope="module")
def tiny_voc():
    net = build_network(CFG / "yolov2-tiny-voc.cfg", batch=2, train=True, width=128, height=128)
    return [l for l in net.layers if l.type_name == "region"][0]


@pytest.fixture(scope="module")
def yolov2():
    net = build_network(CFG / "yolov2.cfg", batch=2, train=True, width=96, height=96)
    return [l for l in net.layers if l.type_name == "region"][0]


@pytest.fixture(scope="module")
def tree_region(tmp_path_factory):
    d = tmp_path_factory.mktemp("tree")
    (d / "small.tree").write_text("a -1\nb -1\nc 0\nd 0\ne 0\nf 1\ng 1\nh 3\ni 3\n")
    (d / "tree.cfg").write_text(f"""[net]
batch=2
width=96
height=96
channels=3

[convolutional]
filters=42
size=1
stride=32
pad=0
activation=linear

[region]
anchors = 1.08,1.19,  3.42,4.41,  6.63,11.38
bias_match=1
classes=9
coords=4
num=3
softmax=1
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
absolute=1
thresh = .3
tree={d / 'small.tree'}
""")
    net = build_network(d / "tree.cfg", batch=2, train=True)
    return [l for l in net.layers if l.type_name == "region"][0]


def compare(L, seed, seen, onlyclass=False):
    g = np.random.default_rng(seed)
    x = torch.from_numpy((g.standard_normal((2, L.out_c, L.out_h, L.out_w)) * 1.5).astype(np.float32))
    truth = random_truth(g, 2, L.max_boxes, L.classes, int(g.integers(1, 8)), onlyclass)
    out = L(x)
    d, st = region_delta(L, out, torch.from_numpy(truth), seen)
    ref, cost, s = ref_region(L, out.reshape(-1).double().tolist(), truth.tolist(), seen)
    got = d.double().numpy()
    both_nan = np.isnan(got) & np.isnan(ref)
    assert (np.isnan(got) == np.isnan(ref)).all()
    err = np.abs(np.where(both_nan, 0, got - ref))
    assert err.max() <= 1e-5 * max(1.0, np.nanmax(np.abs(ref))), (err.max(), np.unravel_index(err.argmax(), err.shape))
    if not both_nan.any():
        assert st.cost == pytest.approx(cost, rel=1e-5)
    assert (st.count, st.class_count) == (s["count"], s["class_count"])
    for k in ("avg_iou", "recall", "avg_cat", "avg_obj", "avg_anyobj"):
        assert getattr(st, k) == pytest.approx(s[k], rel=1e-5, abs=1e-5, nan_ok=True), k


@pytest.mark.parametrize("seed", range(6))
def test_matches_transcription_tiny_voc(tiny_voc, seed):
    L = tiny_voc
    compare(L, seed, seen=100 if seed % 2 else 20000)


FLAGS = [dict(bias_match=bm, rescore=rs, classfix=cf, focal_loss=fl, softmax=sm, thresh=0.3)
         for bm, rs, cf, fl, sm in [(0, 0, 0, 0, 1), (1, 0, -1, 0, 1), (0, 1, 1, 0, 1), (1, 1, 2, 1, 1),
                                    (0, 0, 0, 1, 0), (1, 1, 1, 0, 0)]]


@pytest.mark.parametrize("k", range(len(FLAGS)))
def test_matches_transcription_flags(yolov2, k):
    L = yolov2
    saved = {key: getattr(L, key) for key in FLAGS[k]}
    try:
        for key, v in FLAGS[k].items():
            setattr(L, key, v)
        for seed in range(3):
            compare(L, 100 * k + seed, seen=100 if seed == 0 else 50000)
    finally:
        for key, v in saved.items():
            setattr(L, key, v)


@pytest.mark.parametrize("seed", range(6))
def test_matches_transcription_softmax_tree(tree_region, seed):
    L = tree_region
    L.classfix = seed % 3
    try:
        compare(L, 1000 + seed, seen=100, onlyclass=seed >= 3)
    finally:
        L.classfix = 0


def test_degenerate_truth_goes_to_index_zero(tiny_voc):
    # a truth of width 0 overlaps no anchor shape: upstream keeps best_index = 0 (image 0, cell 0,
    # anchor 0) and best_n = 0 while using the truth's own i, j
    L = tiny_voc
    g = np.random.default_rng(7)
    x = torch.from_numpy(g.standard_normal((2, L.out_c, L.out_h, L.out_w)).astype(np.float32))
    truth = np.zeros((2, L.max_boxes, 6), np.float32)
    truth[1, 0] = [0.8, 0.6, 0.0, 0.3, 2, 0]
    out = L(x)
    d, st = region_delta(L, out, torch.from_numpy(truth), 20000)
    ref, cost, s = ref_region(L, out.reshape(-1).double().tolist(), truth.tolist(), 20000)
    np.testing.assert_allclose(d.double().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert math.isinf(st.cost) and math.isinf(cost)
    assert d[0, 5, 0, 0] != 0  # anchor 0's class 0 at image 0, row 0, column 0


def test_training_loop_dispatches_region():
    from darknet_py.train.loop import forward_backward
    import io

    net = build_network(CFG / "yolov2-tiny-voc.cfg", batch=2, train=True, width=64, height=64)
    net.seen = 2
    truth = torch.zeros(2, 30, 6)
    truth[:, 0] = torch.tensor([0.5, 0.5, 0.3, 0.4, 3, 0])
    err = io.StringIO()
    res = forward_backward(net, torch.rand(2, 3, 64, 64), truth, err)
    (st,) = res.stats.values()
    assert err.getvalue().startswith("Region Avg IOU:") and st.count == 2
    assert res.cost == pytest.approx(st.cost)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_map_file_renames_truth_classes(tiny_voc, tmp_path):
    # map=FILE (upstream's read_map): the truth loop trains class map[id] instead of id
    L = tiny_voc
    m = tmp_path / "swap.map"
    m.write_text("".join(f"{(k + 1) % L.classes}\n" for k in range(L.classes)))
    g = np.random.default_rng(3)
    out = L(torch.from_numpy(g.standard_normal((2, L.out_c, L.out_h, L.out_w)).astype(np.float32)))
    truth = torch.from_numpy(random_truth(g, 2, L.max_boxes, L.classes - 1, 5))
    cls = truth[..., 4:5]
    shifted = torch.cat([truth[..., :4], torch.where(cls < L.classes - 1, cls + 1, cls), truth[..., 5:]], -1)
    plain, _ = region_delta(L, out, shifted, 20000)
    L.map = str(m)
    try:
        mapped, _ = region_delta(L, out, truth, 20000)
    finally:
        L.map = None
    assert torch.equal(mapped, plain)
