"""-benchmark_layers (darknet_py/layer_timing.py): upstream's per-layer forward and backward lines."""
import contextlib
import io
import re
from pathlib import Path

import torch

from darknet_py.network import build_network

CFG = Path(__file__).parent / "data" / "map" / "map-yolov4-tiny.cfg"
FW = re.compile(r"^ fw-layer (\d+) - type: (-?\d+) - (\d+\.\d{6}) ms - avg_time (\d+\.\d{6}) ms $")
BW = re.compile(r"^ bw-layer (\d+) - type: (-?\d+) - (\d+\.\d{6}) ms - avg_time (\d+\.\d{6}) ms $")
SORT = re.compile(r"^(\d+) - (fw|bw)-sort-layer (\d+) - type: (-?\d+) - avg_time (\d+\.\d{6}) ms $")


def _lines(fn):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn()
    return buf.getvalue().splitlines()


def test_forward_and_backward_lines_as_upstream():
    net = build_network(CFG, batch=1, train=True, quiet=True).initialize(seed=1)
    net.benchmark_layers = True
    o = net.options
    x = torch.rand(1, o.channels, o.height, o.width)

    def step():
        outputs, _ = net.forward_train(x)
        sum(outputs[i].sum() for i in net.output_indices()).backward()

    lines = _lines(step)
    n = len(net.layers)
    fw = [FW.match(l) for l in lines if FW.match(l)]
    assert [int(m.group(1)) for m in fw] == list(range(n))
    assert [int(m.group(2)) for m in fw] == [l.type_id for l in net.layers]
    assert all(m.group(3) == m.group(4) for m in fw)  # the first time is the average
    i = lines.index("Sorted by time (forward):")
    ranked = [SORT.match(l) for l in lines[i + 1:i + 1 + n]]
    assert [int(m.group(1)) for m in ranked] == list(range(n)) and {m.group(2) for m in ranked} == {"fw"}
    times = [float(m.group(5)) for m in ranked]
    assert times == sorted(times, reverse=True) and {int(m.group(3)) for m in ranked} == set(range(n))
    bw = [BW.match(l) for l in lines if BW.match(l)]
    order = [int(m.group(1)) for m in bw]
    assert order == sorted(order, reverse=True) and order[0] == n - 1 and order[-1] == 0
    assert "Sorted by time (backward):" in lines
    # the second pass: averages 0.9 old + 0.1 new
    again = _lines(step)
    first = {int(m.group(1)): float(m.group(4)) for m in fw}
    for m in (FW.match(l) for l in again):
        if m:
            want = first[int(m.group(1))] * 0.9 + float(m.group(3)) * 0.1
            assert abs(float(m.group(4)) - want) <= 2e-6  # printed with 6 decimals


def test_off_by_default_prints_nothing():
    net = build_network(CFG, batch=1, quiet=True)
    o = net.options
    assert _lines(lambda: net(torch.zeros(1, o.channels, o.height, o.width))) == []
