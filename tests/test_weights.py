""".weights files: header rules, partial and long files, byte-identical load-then-save, atomic save."""
import struct
from pathlib import Path

import pytest
import torch

from darknet_py.network import build_network
from darknet_py.outputs.weights import WeightsError

DATA = Path(__file__).parent / "data"
TRAIN_CASES = sorted(p.name for p in (DATA / "train").iterdir() if p.is_dir())


def fixture_weights():
    out = [(DATA / "map" / "map-yolov4-tiny.cfg", DATA / "map" / "trained.weights")]
    for case in TRAIN_CASES:
        d = DATA / "train" / case
        out += [(d / f"{case}.cfg", d / "init.weights"), (d / f"{case}.cfg", d / "final.weights")]
    return out


@pytest.mark.parametrize("cfg,weights", fixture_weights(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_load_then_save_is_byte_identical(cfg, weights, tmp_path):
    net = build_network(cfg, batch=1)
    report = net.load_weights(weights)
    assert not report.partial and report.floats_left == 0
    out = tmp_path / "out.weights"
    net.save_weights(out)
    assert out.read_bytes() == Path(weights).read_bytes()


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov3-tiny", "yolov4-csp"])
def test_forward_case_weights_round_trip(name, tmp_path, make_weights):
    d = DATA / "forward" / name
    import json
    meta = json.loads((d / "meta.json").read_text())
    w = make_weights(d / "summary.json", meta["seed"], meta["gain"], tmp_path / "w.weights")
    net = build_network(d / meta["cfg"], batch=1)
    net.load_weights(w)
    net.save_weights(tmp_path / "o.weights")
    assert (tmp_path / "o.weights").read_bytes() == Path(w).read_bytes()


def _tiny():
    d = DATA / "map"
    return d / "map-yolov4-tiny.cfg", d / "trained.weights"


def test_partial_file_loads_the_layers_it_holds(tmp_path, capsys):
    cfg, w = _tiny()
    full = build_network(cfg, batch=1)
    full.load_weights(w)
    # keep the header and the first 3 conv layers (like yolov4-tiny.conv.29 keeps 29 layers)
    n_floats = sum(full.layers[i].params_count() for i in range(3))
    cut = tmp_path / "cut.weights"
    cut.write_bytes(Path(w).read_bytes()[: 20 + 4 * n_floats])
    net = build_network(cfg, batch=1)
    report = net.load_weights(cut)
    assert report.partial and report.layers_loaded == 3
    assert "Loaded 3 of" in capsys.readouterr().err
    for i in range(3):
        assert torch.equal(net.layers[i].weights, full.layers[i].weights)
    assert not torch.equal(net.layers[4].weights, full.layers[4].weights)


def test_longer_file_warns(tmp_path, capsys):
    cfg, w = _tiny()
    long = tmp_path / "long.weights"
    long.write_bytes(Path(w).read_bytes() + b"\0" * 40)
    report = build_network(cfg, batch=1).load_weights(long)
    assert report.floats_left == 10
    assert "10 more floats" in capsys.readouterr().err


def test_header_32bit_seen(tmp_path):
    cfg, w = _tiny()
    body = Path(w).read_bytes()[20:]
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<iiiI", 0, 1, 0, 12345) + body)  # major*10+minor = 1 < 2: 32-bit seen
    net = build_network(cfg, batch=1)
    net.load_weights(old)
    assert net.seen == 12345
    ref = build_network(cfg, batch=1)
    ref.load_weights(w)
    assert torch.equal(net.layers[0].weights, ref.layers[0].weights)
    net.save_weights(tmp_path / "new.weights")
    head = (tmp_path / "new.weights").read_bytes()[:20]
    assert struct.unpack("<iiiQ", head) == (0, 2, 5, 12345)


def test_partial_command(tmp_path):
    from darknet_py.cli import main
    cfg, w = _tiny()
    out = tmp_path / "p.weights"
    assert main(["partial", str(cfg), str(w), str(out), "5"]) == 0
    net = build_network(cfg, batch=1)
    net.load_weights(w)
    expected = 20 + 4 * sum(net.layers[i].params_count() for i in range(5))
    data = out.read_bytes()
    assert len(data) == expected
    assert struct.unpack("<iiiQ", data[:20]) == (0, 2, 5, 0)
    assert data[20:] == Path(w).read_bytes()[20:expected]


def test_not_a_weights_file(tmp_path):
    cfg, _ = _tiny()
    bad = tmp_path / "bad.weights"
    bad.write_bytes(b"abc")
    with pytest.raises(WeightsError, match="bad.weights"):
        build_network(cfg, batch=1).load_weights(bad)
    with pytest.raises(WeightsError, match="missing.weights"):
        build_network(cfg, batch=1).load_weights(tmp_path / "missing.weights")


def test_save_is_atomic(tmp_path, monkeypatch):
    cfg, w = _tiny()
    net = build_network(cfg, batch=1)
    net.load_weights(w)
    target = tmp_path / "keep.weights"
    target.write_bytes(b"precious")

    class Boom(Exception):
        pass

    def explode(self):
        raise Boom()

    monkeypatch.setattr(type(net.layers[5]), "weight_arrays", explode)
    with pytest.raises(Boom):
        net.save_weights(target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.weights"]
