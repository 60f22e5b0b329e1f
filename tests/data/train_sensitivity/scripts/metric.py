#!/usr/bin/env python3
"""Distance of a darknet training run from a reference run (the parity fixtures' metric).

update distance: for every parameter array (per conv layer: biases, scales, rolling_mean,
rolling_variance, weights - batch-norm rolling statistics included),
    max|(final_run - init_run) - (final_ref - init_ref)| / max|final_ref - init_ref|
and the worst over arrays (if an array's reference change is 0, the absolute difference is used).
loss distance: for every printed iteration line ` N: LOSS, AVG avg loss, ...` of the logs,
    |loss_run - loss_ref| / |loss_ref|.

The weight layout is read from the cfg (standard library only): the layer types these cases use
([convolutional] [maxpool] [route] [shortcut] [upsample] [yolo], and the classifier cases'
[avgpool] [softmax] [cost] [dropout] [scale_channels]); anything else is an error. Classifier logs print
` N, EPOCH: LOSS, AVG avg, ...` instead of ` N: LOSS, AVG avg loss, ...`; both are read.

usage: metric.py CFG INIT_REF FINAL_REF REF_LOG INIT_RUN FINAL_RUN RUN_LOG   (prints JSON)
"""
import json
import re
import sys
import numpy as np

HEADER = 20


def read_cfg(path):
    sections = []
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.strip("[]").strip(), {}))
        else:
            k, v = line.split("=", 1)
            sections[-1][1][k.strip()] = v.strip()
    return sections


def layout(cfg):
    """[(layer_index, layer_type, array_name, n_floats)] in .weights file order."""
    secs = read_cfg(cfg)
    assert secs[0][0] in ("net", "network"), secs[0][0]
    c = int(secs[0][1].get("channels", 3))
    out_c = []  # output channels per layer
    arrays = []
    for i, (t, o) in enumerate(secs[1:]):
        if t in ("convolutional", "conv"):
            n, size, groups = int(o["filters"]), int(o.get("size", 1)), int(o.get("groups", 1))
            for key in ("share_index", "deform", "sway", "rotate", "stretch", "stretch_sway", "assisted_excitation"):
                assert key not in o, (cfg, i, key)
            arrays.append((i, t, "biases", n))
            if int(o.get("batch_normalize", 0)):
                arrays += [(i, t, "scales", n), (i, t, "rolling_mean", n), (i, t, "rolling_variance", n)]
            arrays.append((i, t, "weights", n * (c // groups) * size * size))
            c = n
        elif t in ("maxpool", "max", "upsample", "yolo", "avgpool", "avg", "softmax", "cost", "dropout",
                   "scale_channels"):
            assert not int(o.get("maxpool_depth", 0)), (cfg, i)
        elif t == "route":
            idx = [int(s) for s in o["layers"].split(",")]
            idx = [j if j >= 0 else i + j for j in idx]
            c = sum(out_c[j] for j in idx) // int(o.get("groups", 1))
        elif t == "shortcut":
            assert "weights_type" not in o or o["weights_type"] == "none", (cfg, i)
        else:
            raise ValueError(f"{cfg}: layer {i} [{t}] not handled")
        out_c.append(c)
    return arrays


def floats(path):
    return np.fromfile(path, np.float32, offset=HEADER).astype(np.float64)


def rounding_floor(final_ref, ulps):
    """ulps float32 spacings at each reference value: how far two runs whose updates differ
    below float32 resolution can end apart after `ulps` roundings of `w += update` (an array
    whose whole change is a few spacings is rounding, not training)."""
    return ulps * np.spacing(np.abs(final_ref).astype(np.float32)).astype(np.float64)


def update_distance(cfg, init_ref, final_ref, init_run, final_run, ulps=0):
    """ulps > 0: differences within rounding_floor(final_ref, ulps) count as 0."""
    a0, a1, b0, b1 = floats(init_ref), floats(final_ref), floats(init_run), floats(final_run)
    lay = layout(cfg)
    total = sum(n for *_, n in lay)
    for name, a in (("init_ref", a0), ("final_ref", a1), ("init_run", b0), ("final_run", b1)):
        assert a.size == total, (name, a.size, total)
    o, per_array = 0, []
    for li, t, name, n in lay:
        d_ref = a1[o:o + n] - a0[o:o + n]
        d_run = b1[o:o + n] - b0[o:o + n]
        s = np.abs(d_ref).max()
        e = np.maximum(np.abs(d_run - d_ref) - rounding_floor(a1[o:o + n], ulps), 0).max()
        per_array.append({"layer": li, "type": t, "array": name, "n": n,
                          "rel_diff": float(e / s) if s else float(e), "max_abs_update": float(s)})
        o += n
    worst = max(per_array, key=lambda r: r["rel_diff"])
    return worst["rel_diff"], worst, per_array


ITER = re.compile(r"^\s*(\d+): ([-+\w.]+), ([-+\w.]+) avg loss")
ITER_CLASSIFIER = re.compile(r"^(\d+), [\d.]+: ([-+\w.]+), ([-+\w.]+) avg,")


def losses(log):
    out = []
    for line in open(log, errors="replace"):
        m = ITER.match(line) or ITER_CLASSIFIER.match(line)
        if m:
            out.append(float(m.group(2)))
    return out


def loss_rel_diff(ref_log, run_log):
    a, b = losses(ref_log), losses(run_log)
    assert a and len(a) == len(b), (ref_log, len(a), run_log, len(b))
    return [abs(x - y) / abs(x) if x else abs(x - y) for x, y in zip(a, b)]


if __name__ == "__main__":
    cfg, i0, f0, l0, i1, f1, l1 = sys.argv[1:8]
    d, worst, _ = update_distance(cfg, i0, f0, i1, f1)
    print(json.dumps({"update_rel_diff": d, "worst": worst,
                      "loss_rel_diff_per_iteration": loss_rel_diff(l0, l1)}, indent=1))
