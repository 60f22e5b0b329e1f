"""Training in several processes (darknet_py/train/distributed.py), on the CPU: gloo, 2 processes.

The equivalence checked (see the module docstring for the algebra): 2 processes with batch=B
each (here B=2, subdivisions=1) and learning_rate=lr, gradients all-reduced as a mean every
step, do exactly what ONE process does with batch=2B, subdivisions=2 (so every mini-batch still
has B images: the same batch-norm statistics) and learning_rate=2*lr, fed the same 2B images
(rank 0's B first, then rank 1's), step for step. Both use the GPU build's backward
(train_flavor "cudnn"), which every distributed process uses. The iteration counter of the 2
processes advances by 2 per step (upstream's train_networks), so their rate schedule is read
at iterations 1, 3, 5 where the single process reads 1, 2, 3; the fixture's steps=2, scales=.1
gives the same rates for both (lr, lr/10, lr/10). Batch-norm rolling statistics are averaged
over the processes, which a single process cannot reproduce: they are compared between the
processes only. Fixture: tests/data/train/t1-yolov3-tiny-mse (augmentation off), run from a
tmp copy.
"""
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from darknet_py.network import build_network

ROOT = Path(__file__).resolve().parents[2]
CASE = "t1-yolov3-tiny-mse"
SRC = ROOT / "tests" / "data" / "train" / CASE
STEPS = 3
ITER = re.compile(r"^ (\d+): ([-\d.naninf]+), ([-\d.naninf]+) avg loss, ([\d.e-]+) rate, [\d.]+ seconds, (\d+) images")

# Runs in 2 spawned processes: each trains on its half of the same 4 images for STEPS steps
# and gathers every process's checksum of all parameters and rolling statistics after each.
WORKER = r'''
import contextlib, io, json, os, sys
import numpy as np
import torch
import torch.multiprocessing as mp

def worker(rank, world, port, folder, images):
    os.chdir(folder)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    from darknet_py.network import build_network
    from darknet_py.train import distributed
    from darknet_py.train.loop import Trainer
    dist = distributed.init_from_env()
    net = build_network("t1-yolov3-tiny-mse.cfg", train=True)
    net.load_weights("init.weights", verbose=False)
    dist.prepare(net)
    trainer = Trainer(net)
    trainer.dist = dist
    data = np.load(images)
    record = {"checksums_equal": [], "loss": [], "seen": [], "lr": net.options.learning_rate}
    saved = {}
    for step in range(%(steps)d):
        x, t = data[f"x{step}"], data[f"t{step}"]
        b = x.shape[0] // world
        loss = trainer.train_batch(x[rank * b:(rank + 1) * b], t[rank * b:(rank + 1) * b], err=io.StringIO())
        sums = dist.gather_checksums(trainer.net)
        record["checksums_equal"].append(all(torch.equal(sums[0], s) for s in sums[1:]))
        record["loss"].append(loss)
        record["seen"].append(trainer.net.seen)
        for i, p in enumerate(trainer.net.parameters()):
            saved[f"s{step}_{i}"] = p.detach().numpy().copy()
    if rank == 0:
        np.savez(os.path.join(folder, "dist_params.npz"), **saved)
        with open(os.path.join(folder, "dist.json"), "w") as f:
            json.dump(record, f)
    dist.close(True)

if __name__ == "__main__":
    from darknet_py.train.distributed import _free_port
    mp.spawn(worker, args=(2, _free_port(), sys.argv[1], sys.argv[2]), nprocs=2)
''' % {"steps": STEPS}


def _env():
    # these tests mean the CPU (gloo): on a machine with GPUs, CUDA is hidden from them
    return dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")


def _copy(tmp_path, name, **net_options):
    """A tmp copy of the fixture with [net] options replaced."""
    d = tmp_path / name
    shutil.copytree(SRC, d)
    cfg = d / f"{CASE}.cfg"
    text = cfg.read_text()
    for key, value in net_options.items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text, count=1)
        assert n == 1, key
    cfg.write_text(text)
    return d


@contextlib.contextmanager
def _cwd(d):
    old = os.getcwd()
    os.chdir(d)
    try:
        yield
    finally:
        os.chdir(old)


def _dog(d, n):
    """n copies of the fixture's one training image at the network size (x, truth)."""
    from darknet_py.data import loader_from_net, read_list

    with _cwd(d):
        net = build_network(f"{CASE}.cfg", train=True)
        x, t = loader_from_net(net, read_list("train.txt"), 3, seed=0, workers=0).load(1)
    return np.repeat(np.asarray(x), n, 0), np.repeat(np.asarray(t), n, 0)


def _four_images(d):
    """4 different images with their boxes: the dog, flipped left-right, flipped up-down, darker."""
    x, t = _dog(d, 1)
    x, t = x[0], t[0]
    boxes = t[:, 2] > 0
    hflip, vflip = t.copy(), t.copy()
    hflip[boxes, 0] = 1 - t[boxes, 0]
    vflip[boxes, 1] = 1 - t[boxes, 1]
    xs = np.stack([x, x[:, :, ::-1], x[:, ::-1, :], 0.6 * x]).astype(np.float32)
    return xs, np.stack([t, hflip, vflip, t]).astype(np.float32)


def _single(d, batches):
    """The equivalent single process (batch 4, subdivisions 2, learning_rate 0.02, GPU-build
    backward): its parameters after each step, its seen, its losses."""
    from darknet_py.train.loop import Trainer

    with _cwd(d):
        net = build_network(f"{CASE}.cfg", train=True)
        net.load_weights("init.weights", verbose=False)
    net.train_flavor = "cudnn"
    trainer = Trainer(net)
    out, losses = [], []
    for x, t in batches:
        losses.append(trainer.train_batch(x, t, err=io.StringIO()))
        out.append([p.detach().numpy().copy() for p in trainer.net.parameters()])
    return out, trainer.net.seen, losses


# Equal in exact arithmetic; in float32 the two sum the gradients in another order, which this
# case amplifies as it amplifies any rounding: the tolerance is the one upstream's own run of
# it earns with the GPU build's arithmetic (twice its measured rounding-level sensitivity, at
# least 1% of each array's change; tests/data/train_gpu/CASE/sensitivity.json). A wrong
# algebra (the learning rate not scaled, a gradient summed instead of averaged) is 50-100 %.
TOL = json.loads((ROOT / "tests" / "data" / "train_gpu" / CASE / "sensitivity.json").read_text())["tolerance"]


def _assert_close(ours, ref, init, what):
    for i, (a, b, a0) in enumerate(zip(ours, ref, init)):
        scale = np.abs(b - a0).max()
        err = np.abs(a - b).max()
        assert err <= TOL["update_rel_diff"] * scale + 1e-7, f"{what}: parameter {i} differs by {err:g} (change {scale:g})"


def test_two_processes_equal_one_with_twice_the_batch(tmp_path):
    d = _copy(tmp_path, "dist")
    x, t = _four_images(d)
    # step s: the 4 images rotated by s; rank 0 takes the first 2, rank 1 the last 2
    batches = [(np.roll(x, s, 0), np.roll(t, s, 0)) for s in range(STEPS)]
    images = tmp_path / "images.npz"
    np.savez(images, **{f"x{s}": b[0] for s, b in enumerate(batches)}, **{f"t{s}": b[1] for s, b in enumerate(batches)})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    r = subprocess.run([sys.executable, str(script), str(d), str(images)], capture_output=True, text=True,
                       env=_env(), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((d / "dist.json").read_text())
    assert record["checksums_equal"] == [True] * STEPS  # identical weights on both after every step
    assert record["lr"] == pytest.approx(0.02)  # learning_rate *= processes
    assert record["seen"] == [4 * (s + 1) for s in range(STEPS)]  # counter += 2 per step
    dist = np.load(d / "dist_params.npz")

    single_dir = _copy(tmp_path, "single", batch=4, subdivisions=2, learning_rate=0.02)
    ref, seen, losses = _single(single_dir, batches)
    assert seen == 4 * STEPS
    assert record["loss"] == pytest.approx(losses, rel=1e-5)  # the mean of the processes' losses
    with _cwd(d):
        init_net = build_network(f"{CASE}.cfg", train=True)
        init_net.load_weights("init.weights", verbose=False)
    init = [p.detach().numpy() for p in init_net.parameters()]
    for s in range(STEPS):
        _assert_close([dist[f"s{s}_{i}"] for i in range(len(init))], ref[s], init, f"step {s + 1}")


def _train_cli(d, *flags):
    return [sys.executable, str(ROOT / "darknet.py"), "detector", "train", "obj.data", f"{CASE}.cfg", "init.weights",
            "-dont_show", *flags]


def test_cli_gpus_two_cpu_processes(tmp_path):
    """-gpus 0,1 without CUDA: 2 gloo processes; rank 0 alone prints and writes; the result is the
    single-process equivalent's (all images are the fixture's one dog)."""
    d = _copy(tmp_path, "cli", max_batches=4)  # 2 steps: iterations 2 and 4
    env = dict(_env(), DARKNET_DIST_CHECK="1")  # checksums compared every step
    r = subprocess.run(_train_cli(d, "-gpus", "0,1"), cwd=d, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = [m.groups() for m in map(ITER.match, r.stdout.splitlines()) if m]
    # upstream's lines, once (rank 1 is quiet): iteration += 2 per step, rate with lr*2,
    # images = iteration * batch * subdivisions * processes
    assert [(int(a[0]), float(a[3]), int(a[4])) for a in lines] == [(2, 0.002, 8), (4, 0.002, 16)]
    assert "Learning Rate: 0.02," in r.stdout
    assert r.stdout.count("If you want to train from the beginning") == 1
    assert len([l for l in r.stderr.splitlines() if l.startswith("v3 (")]) == 2 * 2  # 2 steps x 2 yolo layers
    final = d / "backup" / f"{CASE}_final.weights"
    assert np.frombuffer(final.read_bytes()[12:20], "<u8")[0] == 8  # seen: 4 iterations of 2 images
    assert sorted(p.name for p in (d / "backup").iterdir()) == [final.name]

    single_dir = _copy(tmp_path, "single", batch=4, subdivisions=2, learning_rate=0.02)
    x, t = _dog(single_dir, 4)
    ref, _, _ = _single(single_dir, [(x, t)] * 2)
    ours = build_network(d / f"{CASE}.cfg", batch=1)
    ours.load_weights(final, verbose=False)
    with _cwd(d):
        init_net = build_network(f"{CASE}.cfg", train=True)
        init_net.load_weights("init.weights", verbose=False)
    init = [p.detach().numpy() for p in init_net.parameters()]
    _assert_close([p.detach().numpy() for p in ours.parameters()], ref[-1], init, "final weights")


@pytest.mark.parametrize("how", ["SIGINT-group", "SIGTERM-launcher"])
def test_ctrl_c_and_sigterm_save_last_on_rank_0(tmp_path, how):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the
    launcher only (a scheduler, `timeout`): every process stops at the same step boundary,
    exit status 130 (143), rank 0 writes _last.weights, no process is left."""
    d = _copy(tmp_path, "stop", max_batches=100000)
    env = _env()
    p = subprocess.Popen(_train_cli(d, "-gpus", "0,1"), cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, start_new_session=True)
    try:
        for line in p.stdout:
            if line.startswith(" 4: "):
                if how == "SIGINT-group":
                    os.killpg(p.pid, signal.SIGINT)
                else:
                    os.kill(p.pid, signal.SIGTERM)
                break
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    term = how.startswith("SIGTERM")
    assert p.returncode == (143 if term else 130), err[-3000:]
    assert "Traceback" not in err
    assert err.count("Terminated (SIGTERM): saved" if term else "Interrupted: saved") == 1, err[-2000:]
    last = d / "backup" / f"{CASE}_last.weights"
    assert last.is_file() and last.stat().st_size == (SRC / "init.weights").stat().st_size
    left = ""
    for _ in range(50):  # the processes of the session (pgrep -s) must all be gone
        left = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.strip()
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"processes left: {left}"
