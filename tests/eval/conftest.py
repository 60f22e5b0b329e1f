"""Fixtures of the evaluation tests: a scratch copy of the map/ parity set (tests/data/map)
with the rich evaluation set (tests/eval/data/rich) laid over it, and the network."""
import sys

import pytest

from evalkit import CFG, ROOT, WEIGHTS, make_evaldir


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests check evaluation logic on a tiny network: one intra-op thread is fastest,
    and on a busy 2-core machine torch's thread pool can be 50x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def evaldir(tmp_path, monkeypatch):
    d = make_evaldir(tmp_path / "map")
    monkeypatch.chdir(d)
    return d


@pytest.fixture(scope="session")
def shared_evaldir(tmp_path_factory):
    """One read-only copy for the in-process tests (they chdir into it)."""
    return make_evaldir(tmp_path_factory.mktemp("eval") / "map")


@pytest.fixture()
def in_shared(shared_evaldir, monkeypatch):
    monkeypatch.chdir(shared_evaldir)
    return shared_evaldir


@pytest.fixture(scope="session")
def eval_net(shared_evaldir):
    sys.path.insert(0, str(ROOT))
    from darknet_py.eval.common import load_eval_network

    return load_eval_network(str(shared_evaldir / CFG), str(shared_evaldir / WEIGHTS))


