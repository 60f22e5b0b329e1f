"""Training detectors with the recurrent-family layers against upstream's
(tests/data/train_recurrent; its README says how the references were made), 4 iterations each:
- r1: conv, maxpool, conv, maxpool, conv_lstm (output 8, 3x3), conv 1x1, yolo; time_steps=3
  (each forward holds 3 steps of 2 images);
- r2: conv, maxpool, conv, maxpool, maxpool, [lrn], [local], [history], conv_lstm with
  peephole=1, conv 1x1, yolo; time_steps=2. [local] never changes (upstream never updates it);
  its delta, lrn's approximate one, history's and the peephole's misrouted ones reach the
  convolutions below;
- r3: subdivisions=2 with sequential_subdivisions=1 (sequence 2: the second mini-batch
  continues the first's sequence), a conv_lstm with bottleneck=1 shortcut=1
  time_normalizer=0.5, then one with lstm_activation=leaky; time_steps=2;
- r4: r1 with batch_normalize=1, activation=leaky and peephole=1 in the conv_lstm (the
  batch-norm backward of every step with the last step's saved statistics, as cuDNN's).

The reference is upstream's CPU build with the cuDNN build's arithmetic (as tests/data/train_gpu)
and conv_lstm's CPU backward replaced by a port of backward_conv_lstm_layer_gpu: upstream's own
CPU build cannot train a conv_lstm layer at all (make_conv_lstm_layer allocates no l.delta on the
CPU and forward_conv_lstm_layer segfaults clearing it), and its CPU backward differs from the
CUDA one anyway (see darknet_py/layers/conv_lstm.py).

Judged as the other training cases (tests/train/test_train_cases.py): every parameter array's
change within tolerance.update_rel_diff of the reference change's largest magnitude, every
printed loss within tolerance.loss_rel_diff_per_iteration relative; tolerance from
sensitivity.json (twice upstream's own movement under a 1e-6 perturbation of init.weights, at
least 1% / 1e-3). Measured: r1 worst 2.5e-4 of the update, losses within 1e-6 relative; r2
1e-5 and 2e-7; r3 1.1e-5 and 2e-7; r4 1.2e-5 and 5e-7 (upstream's own: 9e-6 / 2.7e-6, 6e-5 / 4e-7,
4.2e-4 / 5e-6, 5e-3 / 2.8e-4).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_train_cases import arrays, parse

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "data" / "train_recurrent"
# parameter arrays: bn convs 5 each, plain convs 2 each (r1: 2 bn, 8 inner, 1; r2: 2 bn, local 2,
# 11 inner with the peephole, 1; r3: 2 bn, 5 inner (bottleneck: wf, uf ui ug uo), 8 inner, 1;
# r4: 2 bn, 11 batch-normalized inner, 1)
ARRAYS = {"r1-conv-lstm": 10 + 8 * 2 + 2, "r2-local-lrn-history-peephole": 10 + 2 + 11 * 2 + 2,
          "r3-sequence-bottleneck": 10 + 5 * 2 + 8 * 2 + 2, "r4-conv-lstm-bn": 10 + 11 * 5 + 2}


@pytest.fixture(scope="module", params=sorted(ARRAYS), ids=lambda n: n.split("-")[0])
def run(request, tmp_path_factory):
    CASE = CASES / request.param
    d = tmp_path_factory.mktemp(CASE.name) / CASE.name
    shutil.copytree(CASE, d)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data",
                        f"{CASE.name}.cfg", "init.weights", "-dont_show"], cwd=d, capture_output=True, text=True,
                       env=env, timeout=600)
    return d, r, json.loads((CASE / "sensitivity.json").read_text())["tolerance"]



def test_final_weights_match_upstream(run):
    d, r, tol = run
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = d / f"{d.name}.cfg"
    init = arrays(cfg, d / "init.weights")
    ours = arrays(cfg, d / "backup" / f"{d.name}_final.weights")
    ref = arrays(cfg, d / "final.weights")
    assert len(init) == len(ours) == len(ref) == ARRAYS[d.name]
    for (li, j, a0), (_, _, a1), (_, _, a2) in zip(init, ours, ref):
        change = a2 - a0
        scale = np.abs(change).max()
        err = np.abs((a1 - a0) - change).max()
        assert err <= tol["update_rel_diff"] * scale + 1e-7, f"layer {li} array {j}: {err:g} of {scale:g}"


def test_printed_losses_match_upstream(run):
    d, r, tol = run
    ours, _ = parse(r.stdout + "\n" + r.stderr)
    ref, _ = parse((d / "train.log").read_text())
    loss_tol = tol["loss_rel_diff_per_iteration"]
    assert len(ours) == len(ref) == len(loss_tol) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a[0] == b[0]
        assert a[1] == pytest.approx(b[1], rel=loss_tol[i]), f"iteration {i + 1} loss"
        assert abs(a[3] - b[3]) <= 2e-6


def test_track_1_loads_sequences_and_prints_upstreams_lines(tmp_path):
    """r1 with track=1 augment_speed=2: upstream's run (train_track1.log) wrote final.weights
    identical byte for byte to its track=0 run (one image, augmentation off), so the same
    reference judges ours; and the lines train_detector prints for tracking must be upstream's."""
    case = CASES / "r1-conv-lstm"
    d = tmp_path / case.name
    shutil.copytree(case, d)
    cfg = d / f"{case.name}.cfg"
    cfg.write_text(cfg.read_text().replace("time_steps=3\n", "time_steps=3\ntrack=1\naugment_speed=2\n"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", cfg.name,
                        "init.weights", "-dont_show"], cwd=d, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    tol = json.loads((case / "sensitivity.json").read_text())["tolerance"]
    for (li, j, a0), (_, _, a1), (_, _, a2) in zip(arrays(cfg, d / "init.weights"),
                                                   arrays(cfg, d / "backup" / f"{case.name}_final.weights"),
                                                   arrays(cfg, d / "final.weights")):
        scale = np.abs(a2 - a0).max()
        assert np.abs((a1 - a0) - (a2 - a0)).max() <= tol["update_rel_diff"] * scale + 1e-7, (li, j)

    def tracking(text):
        return [l.strip() for l in text.splitlines() if "Tracking!" in l or "sequential_subdivisions =" in l]
    ref = tracking((d / "train_track1.log").read_text())
    assert len(ref) == 5 and tracking(r.stdout + r.stderr) == ref
