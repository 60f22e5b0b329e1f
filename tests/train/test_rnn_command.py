"""`darknet.py rnn train|generate|valid` (train/rnn.py) against upstream's own runs of the same
command (tests/data/rnn/README.md: upstream's CPU build, seeded, with the three fixes it needs to
run at all; for training also that build patched to the CUDA path's semantics).

generate: byte for byte (the same C rand() draws: the fresh network's initial weights, then
sample_array's); valid: the printed perplexities; train (-train_flavor cpu, the arithmetic of the
build that made the fixtures): every printed line's loss within the case's sensitivity.json
(upstream's own spread when its initial weights move at float32 rounding level, at least 1e-3),
the rate and epochs columns exactly, and the final weights: upstream never updates these layers,
so every array but the batch-norm rolling statistics is bit-identical to init.weights, and those
within sensitivity.json's update_rel_diff of upstream's change.
"""
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import darknet_py
from darknet_py.cli import main
from darknet_py.train.rnn import run_char_rnn

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "rnn"
LINE = re.compile(r"^(\d+): (\S+), (\S+) avg, (\S+) rate, \S+ seconds, (\S+) epochs$")


class Bytes(io.BytesIO):
    pass


@pytest.mark.parametrize("case", ["fw_rnn", "fw_gru", "fw_lstm"])
def test_generate_matches_upstream_byte_for_byte(case):
    out = Bytes()
    run_char_rnn(["rnn", "generate", str(DATA / f"{case}.cfg"), str(DATA / f"{case}.weights"), "-srand", "7",
                  "-len", "200", "-seed", "The", "-temp", "0.7", "-nogpu"], out=out, err=io.StringIO())
    got = out.getvalue()
    ref = (DATA / f"{case}.gen.txt").read_bytes()
    assert len(got) == 3 + 200 + 1 and got.startswith(b"The") and got.endswith(b"\n")
    assert ref.endswith(got)


def test_generate_fresh_network_draws_upstreams_initial_weights():
    """No weights file: the network holds make_connected_layer's draws of C's rand() after
    srand(5), rolling variance 0 (upstream's xcalloc), and the sampling continues the same stream."""
    out = Bytes()
    run_char_rnn(["rnn", "generate", str(DATA / "fw_rnn.cfg"), "-srand", "5", "-len", "100", "-seed", "The",
                  "-nogpu"], out=out, err=io.StringIO())
    assert (DATA / "fw_rnn.fresh.gen.txt").read_bytes().endswith(out.getvalue())
    assert len(out.getvalue()) == 104


def _perplexities(text: str) -> np.ndarray:
    rows = re.findall(r"^(\d+) Perplexity: +(\S+) +Word Perplexity: +(\S+)$", text, re.M)
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("case", ["fw_rnn", "fw_gru", "fw_lstm"])
def test_valid_matches_upstream(case):
    """Tolerance: the sum of log2 p over the text differs by float32 rounding of the softmax
    (measured at most 3e-7 relative in the perplexity); the perplexity 2^(-sum/count) is held to
    1e-5 relative, the word perplexity 2^(-sum/words) to 1e-5 * count/words (the same error in
    the sum, divided by fewer words)."""
    out = io.StringIO()
    stdin = io.BytesIO((DATA / "valid_in.txt").read_bytes())
    run_char_rnn(["rnn", "valid", str(DATA / f"{case}.cfg"), str(DATA / f"{case}.weights"), "-seed", "The ",
                  "-nogpu"], stdin=stdin, out=out, err=io.StringIO())
    got, ref = _perplexities(out.getvalue()), _perplexities((DATA / f"{case}.valid.txt").read_text())
    assert got.shape == ref.shape == (299, 3)
    assert np.array_equal(got[:, 0], ref[:, 0])
    np.testing.assert_allclose(got[:, 1], ref[:, 1], rtol=1e-5)
    words = np.cumsum([1] + [c in b" \n\t" for c in (DATA / "valid_in.txt").read_bytes()[1:-1]])
    assert np.all(np.abs(got[:, 2] - ref[:, 2]) <= 1e-5 * got[:, 0] / words * np.abs(ref[:, 2]) + 1e-4)


def _lines(log: str) -> list[tuple]:
    return [m.groups() for m in map(LINE.match, log.splitlines()) if m]


@pytest.mark.parametrize("flavor", ["cpu", "cudnn"])
@pytest.mark.parametrize("case", ["train_rnn", "train_gru", "train_lstm"])
def test_train_matches_upstream(case, flavor, tmp_path, monkeypatch):
    """cpu: against upstream's CPU build (train_X/); cudnn, the default: against the build patched
    to the CUDA path's semantics (train_X/gpu/: cuDNN's batch norm, reset_rnn_state)."""
    src = DATA / case
    ref_dir = src if flavor == "cpu" else src / "gpu"
    for f in (f"{case}.cfg", "init.weights"):
        shutil.copy(src / f, tmp_path / f)
    shutil.copy(DATA / "sonnets.txt", tmp_path)
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    run_char_rnn(["rnn", "train", f"{case}.cfg", "init.weights", "-file", "sonnets.txt", "-srand", "7",
                  "-train_flavor", flavor, "-nogpu"], out=io.StringIO(), err=err)
    sens = json.loads((ref_dir / "sensitivity.json").read_text())
    got, ref = _lines(err.getvalue()), _lines((ref_dir / "train.log").read_text(errors="replace"))
    assert len(got) == len(ref) == 6
    for g, r, tol in zip(got, ref, sens["tolerance"]["loss_rel_diff_per_iteration"]):
        assert g[0] == r[0] and g[3] == r[3] and g[4] == r[4]  # iteration, rate, epochs
        assert abs(float(g[1]) - float(r[1])) <= tol * abs(float(r[1])), (g, r)
        assert abs(float(g[2]) - float(r[2])) <= tol * abs(float(r[2])), (g, r)

    def arrays(path):
        net = darknet_py.build_network(src / f"{case}.cfg", batch=1)
        net.load_weights(path, verbose=False)
        return [a.detach().numpy().copy() for l in net.layers for a in l.weight_arrays()]

    init, final_ref, final = arrays(src / "init.weights"), arrays(ref_dir / "final.weights"), \
        arrays(tmp_path / "backup" / f"{case}_final.weights")
    moved = 0
    for a, r, g in zip(init, final_ref, final):
        if np.array_equal(a, r):
            assert np.array_equal(g, a)  # upstream never updates it: neither do we
            continue
        moved += 1
        d = r - a
        assert np.abs((g - a) - d).max() <= sens["tolerance"]["update_rel_diff"] * np.abs(d).max()
    assert moved > 0  # the rolling statistics did move


def test_cli_usage_and_errors(tmp_path, capsys):
    assert main(["rnn", "train"]) == 2
    assert "usage: darknet.py rnn" in capsys.readouterr().err
    assert main(["rnn", "train", str(DATA / "fw_rnn.cfg"), "-file", str(tmp_path / "none.txt"), "-nogpu"]) == 1
    err = capsys.readouterr().err
    assert "none.txt: no such file" in err and "Traceback" not in err
