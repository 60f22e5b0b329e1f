import importlib.util
import json
import os
import sys
from pathlib import Path

# Several test processes (pytest-xdist, scripts/test.sh): the cores are shared among them, and
# among the darknet.py processes the tests start (they inherit OMP_NUM_THREADS).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))

# The suite runs headless wherever it runs: without -dont_show, darknet.py opens windows where a
# display answers, and `detector test` / -show_imgs wait there for a key (as upstream).
# tests/test_display.py starts its own Xvfb and passes its DISPLAY to the processes it runs.
for _var in ("DISPLAY", "WAYLAND_DISPLAY"):
    os.environ.pop(_var, None)

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))


def _make_weights_module():
    spec = importlib.util.spec_from_file_location("make_weights", DATA / "make_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def make_weights():
    """The parity fixtures' deterministic weights generator: (summary_json, seed, gain, out)."""
    mod = _make_weights_module()

    def run(summary_path, seed, gain, out_path):
        old = sys.argv
        sys.argv = ["make_weights.py", str(summary_path), str(seed), str(gain), str(out_path)]
        try:
            mod.main()
        finally:
            sys.argv = old
        return out_path

    return run


@pytest.fixture(scope="session")
def forward_case(tmp_path_factory, make_weights):
    """A forward parity case by name: (its directory, meta.json, a fresh inference network with
    the fixtures' weights, the input image (3, S, S) float32); the weights are made once."""
    import darknet_py

    forward = DATA / "forward"
    weights = {}

    def load(name):
        d = forward / name
        meta = json.loads((d / "meta.json").read_text())
        if name not in weights:
            weights[name] = make_weights(d / "summary.json", meta["seed"], meta["gain"],
                                         tmp_path_factory.mktemp(name) / "w.weights")
        net = darknet_py.load_network(d / meta["cfg"], weights[name])
        x = np.fromfile(forward / meta["input"], dtype="<f4").reshape(3, meta["size"], meta["size"])
        return d, meta, net, x

    return load
