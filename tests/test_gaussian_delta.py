"""[Gaussian_yolo] training deltas (darknet_py/layers/gaussian_yolo/delta.py) against upstream's
forward_gaussian_yolo_layer.

No upstream fixtures exist for this layer, so: (a) small cases worked by hand from upstream's
formulas, (b) a slow, literal transcription of upstream's loops (plain Python over images,
rows, columns, anchors and truths, in the C code's order, on upstream's flat l.output)
compared with the vectorized function on random outputs and truths. The transcription takes
the IoU-loss gradient from darknet_py.box.dx_box_iou (checked against upstream's own
deltas by test_yolo_delta); everything else is written out below.
"""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from darknet_py.layers.gaussian_yolo.delta import gaussian_yolo_delta
from darknet_py.network import build_network
from darknet_py.box import dx_box_iou
from darknet_py.layers.delta_common import FLT_MAX, class_multipliers

CFG = Path(__file__).resolve().parent.parent / "cfg"


# --------------------------------------------------------------------------- hand-worked cases
def hand_layer(**kw):
    """2x2 grid, one anchor 32x32 in a 64x64 network (w = h = .5), 2 classes, mse loss."""
    d = dict(n=1, total=1, mask=[0], classes=2, out_w=2, out_h=2, anchors=[32.0, 32.0], max_boxes=4, iou_loss="mse",
             iou_normalizer=1.0, uc_normalizer=1.0, obj_normalizer=1.0, cls_normalizer=1.0, ignore_thresh=0.5,
             truth_thresh=1.0, iou_thresh=1.0, iou_thresh_kind="iou", label_smooth_eps=0.0, objectness_smooth=0,
             max_delta=FLT_MAX, yolo_point="center", counters_per_class=None, map=None, index=5)
    d.update(kw)
    return SimpleNamespace(**d)


def hand_output():
    """mu_x = mu_y = .5, every sigma .5, raw mu_w = mu_h = 0, objectness .5, classes .1."""
    o = torch.zeros(1, 1, 11, 2, 2)
    o[:, :, [0, 1, 2, 3, 5, 7]] = 0.5
    o[:, :, 8] = 0.5
    o[:, :, 9:] = 0.1
    return o.reshape(1, 11, 2, 2)


def truth_rows(*rows):
    tr = torch.zeros(1, 4, 6)
    for q, r in enumerate(rows):
        tr[0, q, :5] = torch.tensor(r)
    return tr


def test_hand_one_truth_mse():
    L = hand_layer()
    # truth x=.3 y=.7 w=h=.5 class 1 -> cell i=0, j=1; the only anchor; scale = 2 - .25 = 1.75.
    # dx = .3*2 - 0 - .5 = .1, dy = .7*2 - 1 - .5 = -.1, dw = dh = log(.5*64/32) - 0 = 0.
    # sigma .5: in_exp = dx/.5 = .2; temp = .5 * nd/(nd + 1e-9) * 1.75 = .875 (nd ~ .49).
    # delta_x = temp*in_exp/sigma = .875*.2*2 = .35, delta_sigma_x = temp*(.04/.5 - 1/(.5+.3)) = .875*-1.17.
    # w, h: in_exp 0 -> delta 0, delta_sigma = .875*(0 - 1.25) = -1.09375.
    # objectness 1*(1-.5) = .5 there, -.5 elsewhere (classes .1 < .25: nothing is ignored);
    # classes 0-.1, 1-.1: one positive class delta, so the box deltas are divided by 1.
    d, st = gaussian_yolo_delta(L, hand_output(), truth_rows([.3, .7, .5, .5, 1]), 64, 64)
    cell = d[0, :, 1, 0].tolist()
    expect = [.35, .875 * -1.17, -.35, .875 * -1.17, 0, -1.09375, 0, -1.09375, .5, -.1, .9]
    assert cell == pytest.approx(expect, abs=1e-6)
    for j, i in [(0, 0), (0, 1), (1, 1)]:
        assert d[0, :, j, i].tolist() == pytest.approx([0] * 8 + [-.5, 0, 0])
    # IoU of (.25,.75,.5,.5) with (.3,.7,.5,.5): .45*.45 / (.25+.25-.2025) = .680672
    # losses: class = 3*.25 + .25 + .01 + .81 = 1.82; x/y part 2*(.35^2 + 1.02375^2) = 2.341128;
    # w/h part 2*1.09375^2 = 2.392578; total 6.553706
    assert st.line(L, 1) == ("Region 5 Avg IOU: 0.680672, Class: 0.100000, Obj: 0.500000, No Obj: 0.500000, "
                             ".5R: 1.000000, .75R: 0.000000,  count: 1, class_loss = 1.82, iou_loss = 2.34, "
                             "uc_loss = 2.39, total_loss = 6.55 ")
    assert st.cost == pytest.approx(1.82 + 2.341128125 + 2.392578125, rel=1e-6)


def test_hand_two_truths_same_cell_accumulate_then_average():
    L = hand_layer()
    # second truth x=.2 y=.8 (class 0) in the same cell: dx = -.1, dy = +.1, so the x and y deltas
    # cancel and the sigma deltas double. Its class write finds the cell's class-0 delta nonzero (-.1)
    # and rewrites class 0 only: 1 - .1 = .9. Two positive class deltas: box deltas halved.
    d, st = gaussian_yolo_delta(L, hand_output(), truth_rows([.3, .7, .5, .5, 1], [.2, .8, .5, .5, 0]), 64, 64)
    cell = d[0, :, 1, 0].tolist()
    expect = [0, .875 * -1.17, 0, .875 * -1.17, 0, -1.09375, 0, -1.09375, .5, .9, .9]
    assert cell == pytest.approx(expect, abs=1e-6)
    assert (st.count, st.class_count) == (2, 2)


def test_hand_class_rewrite_tests_class_zero():
    # upstream's delta_gaussian_yolo_class tests the cell's class-0 delta (not the truth's class) to
    # decide between rewriting every class (truth class times multiplier*cls_normalizer) and only the
    # truth's class (times the multiplier). Class 0's output is 0 here, so its delta stays 0 and the
    # second truth (same cell, class 1) rewrites everything again: (1-.1)*2*.5 = .9, not (1-.1)*2.
    L = hand_layer(counters_per_class=[2, 1], cls_normalizer=0.5)  # multipliers 2/2 = 1 and 2/1 = 2
    out = hand_output().reshape(1, 1, 11, 2, 2).clone()
    out[0, 0, 9] = 0.0
    d, _ = gaussian_yolo_delta(L, out.reshape(1, 11, 2, 2), truth_rows([.3, .7, .5, .5, 1], [.2, .8, .5, .5, 1]),
                               64, 64)
    assert d[0, 9:, 1, 0].tolist() == pytest.approx([0.0, 0.9])


def test_hand_ignore_and_truth_thresh():
    out = hand_output().reshape(1, 1, 11, 2, 2).clone()
    out[0, 0, 0, 0, 0] = 0.99  # mu_x at row 0, column 0: predicted box (.495, .25, .5, .5)
    # truth (.505, .25, .5, .5) belongs to column int(1.01) = 1, but overlaps that prediction:
    # I = .49*.5 = .245, U = .25 + .25 - .245 = .255 -> IoU .9608
    tr = truth_rows([.505, .25, .5, .5, 0])
    d, _ = gaussian_yolo_delta(hand_layer(), out.reshape(1, 11, 2, 2), tr, 64, 64)
    assert float(d[0, 8, 0, 0]) == pytest.approx(-0.5)  # no class above .25 there: not ignored
    assert float(d[0, 8, 0, 1]) == pytest.approx(0.5)  # the truth's own cell: 1 - .5
    conf = out.clone()
    conf[0, 0, 9, 0, 0] = 0.3  # a class above .25: IoU .96 > ignore_thresh .5 -> objectness delta 0
    d, _ = gaussian_yolo_delta(hand_layer(), conf.reshape(1, 11, 2, 2), tr, 64, 64)
    assert float(d[0, 8, 0, 0]) == 0.0
    # truth_thresh .3: the cell trains as a positive: objectness 1 - .5, classes 1 - .1 and 0 - .1,
    # and a box delta towards the truth (dx = .505*2 - 0 - .99 = .02 -> .875*(.02/.5)/.5 = .07)
    d, _ = gaussian_yolo_delta(hand_layer(truth_thresh=0.3, ignore_thresh=0.9), out.reshape(1, 11, 2, 2), tr, 64, 64)
    assert d[0, [0, 8, 9, 10], 0, 0].tolist() == pytest.approx([0.07, 0.5, 0.9, -0.1], abs=1e-5)


# --------------------------------------------------------------------------- slow transcription
def overlap(x1, w1, x2, w2):
    return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)


def inter_union(a, b):
    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if (w < 0 or h < 0) else w * h
    return inter, a[2] * a[3] + b[2] * b[3] - inter


def box_iou(a, b):
    i, u = inter_union(a, b)
    return 0.0 if i == 0 or u == 0 else i / u


def box_giou(a, b):
    cw = max(a[0] + a[2] / 2, b[0] + b[2] / 2) - min(a[0] - a[2] / 2, b[0] - b[2] / 2)
    ch = max(a[1] + a[3] / 2, b[1] + b[3] / 2) - min(a[1] - a[3] / 2, b[1] - b[3] / 2)
    c = cw * ch
    iou = box_iou(a, b)
    if c == 0:
        return iou
    return iou - (c - inter_union(a, b)[1]) / c


def cexp(x):
    return math.exp(x) if x < 700 else math.inf


def clog(x):
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def fix(v):
    return v if math.isfinite(v) else 0.0


def ref_gauss(L, out, truth, netw, neth):
    """forward_gaussian_yolo_layer's training part, loop for loop, on upstream's flat l.output."""
    w, h, nA, classes = L.out_w, L.out_h, L.n, L.classes
    stride = w * h
    outputs = h * w * nA * (9 + classes)
    batch = len(out) // outputs
    bias = L.anchors
    mult = class_multipliers(L)
    cmap = None
    delta = [0.0] * len(out)
    s = dict(avg_iou=0.0, recall=0.0, recall75=0.0, avg_cat=0.0, avg_obj=0.0, avg_anyobj=0.0, count=0,
             class_count=0)

    def entry(b, loc, e):
        return b * outputs + (loc // stride) * stride * (9 + classes) + e * stride + loc % stride

    def get_box(index, n, i, j):
        bw = cexp(out[index + 4 * stride]) * bias[2 * n] / netw
        bh = cexp(out[index + 6 * stride]) * bias[2 * n + 1] / neth
        bx, by = (i + out[index]) / w, (j + out[index + 2 * stride]) / h
        if L.yolo_point == "left_top":
            bx, by = bx + bw / 2, by + bh / 2
        elif L.yolo_point == "right_bottom":
            bx, by = bx - bw / 2, by - bh / 2
        return [bx, by, bw, bh]

    def delta_box(tr, n, index, i, j, scale, iou_norm):
        pred = get_box(index, n, i, j)
        iou = box_iou(pred, tr) if L.iou_loss == "mse" else box_giou(pred, tr)
        if pred[2] == 0:
            pred[2] = 1.0
        if pred[3] == 0:
            pred[3] = 1.0
        tx, ty = tr[0] * w - i, tr[1] * h - j
        tw, th = clog(tr[2] * netw / bias[2 * n]), clog(tr[3] * neth / bias[2 * n + 1])
        if L.yolo_point == "left_top":
            tx, ty = (tr[0] - tr[2] / 2) * w - i, (tr[1] - tr[3] / 2) * h - j
        elif L.yolo_point == "right_bottom":
            tx, ty = (tr[0] + tr[2] / 2) * w - i, (tr[1] + tr[3] / 2) * h - j
        mus = [tx - out[index], ty - out[index + 2 * stride], tw - out[index + 4 * stride],
               th - out[index + 6 * stride]]
        d_mu, d_sig = [], []
        for q, dq in enumerate(mus):
            sg = out[index + (2 * q + 1) * stride]
            ie = dq / sg if sg else math.copysign(math.inf, dq) if dq else math.nan
            ie2 = ie * ie
            nd = math.exp(-ie2 / 2) / (math.sqrt(2 * math.pi) * (sg + 0.3)) if math.isfinite(ie2) else 0.0
            temp = 0.5 / (nd + 1e-9) * nd * scale
            d_mu.append(temp * ie * (1 / sg) if sg else math.nan)
            d_sig.append(temp * (ie2 / sg - 1 / (sg + 0.3)) if sg else math.nan)
        if L.iou_loss != "mse":
            g = dx_box_iou(torch.tensor([pred], dtype=torch.float64), torch.tensor([tr], dtype=torch.float64),
                           L.iou_loss)[0].tolist()
            dx, dy, dw, dh = g
            if L.yolo_point == "left_top":
                dx, dy = dx - dw / 2, dy - dh / 2
            elif L.yolo_point == "right_bottom":
                dx, dy = dx + dw / 2, dy + dh / 2
            d_mu = [dx, dy, dw * cexp(out[index + 4 * stride]), dh * cexp(out[index + 6 * stride])]
        d_mu = [fix(v * iou_norm) for v in d_mu]
        d_sig = [fix(v * L.uc_normalizer) for v in d_sig]
        if L.max_delta != FLT_MAX:
            d_mu = [min(max(v, -L.max_delta), L.max_delta) for v in d_mu]
            d_sig = [min(max(v, -L.max_delta), L.max_delta) for v in d_sig]
        for q in range(4):
            delta[index + 2 * q * stride] += d_mu[q]
            delta[index + (2 * q + 1) * stride] += d_sig[q]
        return iou

    def delta_class(index, class_id, avg):
        eps = L.label_smooth_eps
        if delta[index]:
            y = 1.0 * (1 - eps) + 0.5 * eps if eps else 1.0
            delta[index + stride * class_id] = y - out[index + stride * class_id]
            if mult:
                delta[index + stride * class_id] *= mult[class_id]
            if avg:
                s["avg_cat"] += out[index + stride * class_id]
            return
        for q in range(classes):
            y = 1.0 if q == class_id else 0.0
            if eps:
                y = y * (1 - eps) + 0.5 * eps
            delta[index + stride * q] = y - out[index + stride * q]
            if mult and q == class_id:
                delta[index + stride * q] *= mult[class_id] * L.cls_normalizer
            if q == class_id and avg:
                s["avg_cat"] += out[index + stride * q]

    for b in range(batch):
        for j in range(h):
            for i in range(w):
                for n in range(nA):
                    loc = n * stride + j * w + i
                    ci, oi, bi = entry(b, loc, 9), entry(b, loc, 8), entry(b, loc, 0)
                    pred = get_box(bi, L.mask[n], i, j)
                    bm_iou, bm_t, best_iou, best_t = 0.0, 0, 0.0, 0
                    for t in range(L.max_boxes):
                        tr = truth[b][t]
                        if int(tr[4]) >= classes:
                            continue
                        if not tr[0]:
                            break
                        match = any(out[ci + stride * q] > 0.25 for q in range(classes))
                        iou = box_iou(pred, tr[:4])
                        if iou > bm_iou and match:
                            bm_iou, bm_t = iou, t
                        if iou > best_iou:
                            best_iou, best_t = iou, t
                    s["avg_anyobj"] += out[oi]
                    delta[oi] = L.obj_normalizer * (0 - out[oi])
                    if bm_iou > L.ignore_thresh:
                        if L.objectness_smooth:
                            delta[oi] = L.obj_normalizer * (bm_iou * bm_iou - out[oi])
                            delta_class(ci, int(truth[b][bm_t][4]), False)
                        else:
                            delta[oi] = 0
                    if best_iou > L.truth_thresh:
                        im = best_iou * best_iou
                        delta[oi] = L.obj_normalizer * ((im if L.objectness_smooth else 1) - out[oi])
                        cid = int(truth[b][best_t][4])
                        delta_class(ci, cid, False)
                        cm = mult[cid] if mult else 1.0
                        if L.objectness_smooth:
                            delta[ci + stride * cid] = cm * (im - out[ci + stride * cid])
                        tr = truth[b][best_t][:4]
                        delta_box(tr, L.mask[n], bi, i, j, 2 - tr[2] * tr[3], L.iou_normalizer * cm)
        for t in range(L.max_boxes):
            tr = truth[b][t][:4]
            if not tr[0]:
                break
            cid = int(truth[b][t][4])
            if cid >= classes:
                continue  # upstream would write past the class entries; the loader never gives this
            if L.yolo_point == "left_top":
                i = int(min(w - 1, max(0, (tr[0] - tr[2] / 2) * w)))
                j = int(min(h - 1, max(0, (tr[1] - tr[3] / 2) * h)))
            elif L.yolo_point == "right_bottom":
                i = int(min(w - 1, max(0, (tr[0] + tr[2] / 2) * w)))
                j = int(min(h - 1, max(0, (tr[1] + tr[3] / 2) * h)))
            else:
                i, j = int(tr[0] * w), int(tr[1] * h)
            shift = [0, 0, tr[2], tr[3]]
            best_iou, best_n = 0.0, 0
            for n in range(L.total):
                iou = box_iou([0, 0, bias[2 * n] / netw, bias[2 * n + 1] / neth], shift)
                if iou > best_iou:
                    best_iou, best_n = iou, n
            anchors = [best_n] + [n for n in range(L.total) if n != best_n and L.iou_thresh < 1.0
                                  and box_iou([0, 0, bias[2 * n] / netw, bias[2 * n + 1] / neth], shift) > L.iou_thresh]
            for n in anchors:
                if n not in L.mask:
                    continue
                mn = L.mask.index(n)
                loc = mn * stride + j * w + i
                cm = mult[cid] if mult else 1.0
                iou = delta_box(tr, n, entry(b, loc, 0), i, j, 2 - tr[2] * tr[3], L.iou_normalizer * cm)
                oi = entry(b, loc, 8)
                s["avg_obj"] += out[oi]
                delta[oi] = cm * L.obj_normalizer * (1 - out[oi])
                delta_class(entry(b, loc, 9), cid, True)
                s["count"] += 1
                s["class_count"] += 1
                s["recall"] += iou > .5
                s["recall75"] += iou > .75
                s["avg_iou"] += iou
        for j in range(h):
            for i in range(w):
                for n in range(nA):
                    loc = n * stride + j * w + i
                    ci, bi = entry(b, loc, 9), entry(b, loc, 0)
                    k = sum(1 for q in range(classes) if delta[ci + stride * q] > 0)
                    if k:
                        for q in range(8):
                            delta[bi + q * stride] /= k
    d = np.array(delta, dtype=np.float64)
    return d.reshape(batch, nA * (9 + classes), h, w), float((d ** 2).sum()), s


def random_truth(g, nb, maxb, classes, ntr):
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
            t[b, 1] = [0, 0, 0, 0, classes + 3, 0]  # x == 0 ends stage 2 only: stage 1 tests the class first
    return t


@pytest.fixture(scope="module")
def bdd():
    net = build_network(CFG / "Gaussian_yolov3_BDD.cfg", batch=2, train=True, width=96, height=96)
    return net, [l for l in net.layers if l.type_name == "Gaussian_yolo"]


def compare(L, seed, netw, neth, scale=1.0):
    g = np.random.default_rng(seed)
    x = torch.from_numpy((g.standard_normal((2, L.out_c, L.out_h, L.out_w)) * scale).astype(np.float32))
    truth = random_truth(g, 2, L.max_boxes, L.classes, int(g.integers(1, 8)))
    out = L(x)
    d, st = gaussian_yolo_delta(L, out, torch.from_numpy(truth), netw, neth)
    ref, cost, s = ref_gauss(L, out.reshape(-1).double().tolist(), truth.tolist(), netw, neth)
    got = d.double().numpy()
    err = np.abs(got - ref)
    assert err.max() <= 1e-5 * max(1.0, np.abs(ref).max()), (err.max(), np.unravel_index(err.argmax(), err.shape))
    assert st.cost == pytest.approx(cost, rel=1e-5)
    assert (st.count, st.class_count) == (s["count"], s["class_count"])
    for k in ("avg_iou", "recall", "recall75", "avg_cat", "avg_obj", "avg_anyobj"):
        assert getattr(st, k) == pytest.approx(s[k], rel=1e-5, abs=1e-5), k


SETTINGS = [
    dict(),  # the cfg as it is: giou, iou_thresh .213, uc/cls/iou normalizers
    dict(iou_loss="mse", iou_thresh=1.0),
    dict(iou_loss="ciou", objectness_smooth=1, truth_thresh=0.3, ignore_thresh=0.2),
    dict(iou_loss="diou", label_smooth_eps=0.1, counters_per_class=list(range(1, 11)), max_delta=5.0),
    dict(iou_loss="iou", yolo_point="left_top", objectness_smooth=1, ignore_thresh=0.2),
    dict(iou_loss="mse", yolo_point="right_bottom", truth_thresh=0.4, counters_per_class=[5] * 9 + [1]),
]


@pytest.mark.parametrize("k", range(len(SETTINGS)))
def test_matches_transcription(bdd, k):
    net, layers = bdd
    for seed in range(3):
        L = layers[(k + seed) % 3]
        saved = {key: getattr(L, key) for key in SETTINGS[k]}
        try:
            for key, v in SETTINGS[k].items():
                setattr(L, key, v)
            compare(L, 10 * k + seed, net.options.width, net.options.height)
        finally:
            for key, v in saved.items():
                setattr(L, key, v)


def test_training_loop_dispatches_gaussian(tmp_path):
    import io

    from darknet_py.train.loop import forward_backward

    cfg = tmp_path / "g.cfg"
    cfg.write_text("""[net]
batch=2
width=64
height=64
channels=3

[convolutional]
filters=39
size=1
stride=16
pad=0
activation=linear

[Gaussian_yolo]
mask = 0,1,2
anchors = 7,10, 14,24, 27,43
classes=4
num=3
iou_thresh=0.213
iou_normalizer=0.5
iou_loss=giou
""")
    net = build_network(cfg, batch=2, train=True)
    truth = torch.zeros(2, 90, 6)
    truth[:, 0] = torch.tensor([0.5, 0.5, 0.3, 0.4, 3, 0])
    err = io.StringIO()
    res = forward_backward(net, torch.rand(2, 3, 64, 64), truth, err)
    (st,) = res.stats.values()
    assert err.getvalue().startswith("Region 1 Avg IOU:") and st.count >= 2
    assert res.cost == pytest.approx(st.cost)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_map_file_renames_truth_classes(bdd, tmp_path):
    # map=FILE (upstream's read_map): both loops train class map[id] instead of id
    L = bdd[1][1]
    m = tmp_path / "swap.map"
    m.write_text("".join(f"{(k + 1) % L.classes}\n" for k in range(L.classes)))
    g = np.random.default_rng(3)
    out = L(torch.from_numpy(g.standard_normal((2, L.out_c, L.out_h, L.out_w)).astype(np.float32)))
    truth = torch.from_numpy(random_truth(g, 2, L.max_boxes, L.classes - 1, 5))
    cls = truth[..., 4:5]  # rows with classes the cfg lacks stay as they are
    shifted = torch.cat([truth[..., :4], torch.where(cls < L.classes - 1, cls + 1, cls), truth[..., 5:]], -1)
    saved = (L.truth_thresh, L.objectness_smooth)
    L.truth_thresh, L.objectness_smooth = 0.3, 1  # so the per-cell pass takes truth classes too
    try:
        plain, _ = gaussian_yolo_delta(L, out, shifted, 96, 96)
        L.map = str(m)
        mapped, _ = gaussian_yolo_delta(L, out, truth, 96, 96)
    finally:
        L.map = None
        L.truth_thresh, L.objectness_smooth = saved
    assert torch.equal(mapped, plain)
