import importlib.util
import sys
from pathlib import Path

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
