"""Faults lose nothing (issue 21): each fault is made for real in a child process running the
command line (tests/train/fault_driver.py): RLIMIT_FSIZE (writes past a size fail with EFBIG;
Python ignores SIGXFSZ), a backup path that is a file or under one, a read-only or tiny tmpfs
(in a private mount namespace: `unshare -m`, skipped with the reason where it is not allowed),
files deleted, truncated and replaced under the running loader, RLIMIT_AS for memory, a
learning rate that makes the loss NaN. The run: t1's tiny yolov3 (128 x 128, batch 2), one
image copied four times, a few iterations (a second or two each run).
"""
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests" / "data" / "train" / "t1-yolov3-tiny-mse"
DRIVER = ROOT / "tests" / "train" / "fault_driver.py"
TRAIN = ["detector", "train", "obj.data", "t.cfg", "init.weights", "-dont_show"]
WEIGHTS_BYTES = (SRC / "init.weights").stat().st_size


def make_case(d: Path, max_batches: int, images: int = 4, backup: str = "backup/", saveweights: int = 3,
              cfg_edits: dict | None = None) -> Path:
    (d / "obj").mkdir(parents=True)
    cfg = (SRC / "t1-yolov3-tiny-mse.cfg").read_text()
    for key, value in {"max_batches": max_batches, **(cfg_edits or {})}.items():
        cfg, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key}={value}", cfg)
        assert n, key
    (d / "t.cfg").write_text(cfg)
    shutil.copy(SRC / "init.weights", d)
    shutil.copy(SRC / "obj.names", d)
    lines = []
    for i in range(1, images + 1):
        shutil.copy(SRC / "obj" / "dog.png", d / "obj" / f"d{i}.png")
        shutil.copy(SRC / "obj" / "dog.txt", d / "obj" / f"d{i}.txt")
        lines.append(f"obj/d{i}.png\n")
    (d / "train.txt").write_text("".join(lines))
    (d / "obj.data").write_text(f"classes=3\ntrain=train.txt\nvalid=train.txt\nnames=obj.names\nbackup={backup}\n"
                                f"savelast=1\nsaveweights={saveweights}\n")
    return d


def run(d: Path, spec: dict | None = None, args=TRAIN, prefix=(), timeout=240, env=None):
    (d / "spec.json").write_text(json.dumps(spec or {}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    p = subprocess.run([*prefix, sys.executable, str(DRIVER), "spec.json", "--", *args], cwd=d, env=env,
                       capture_output=True, text=True, timeout=timeout)
    report = json.loads((d / "driver.json").read_text()) if (d / "driver.json").is_file() else {}
    return p, report


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_floats(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert struct.unpack("<iii", data[:12]) == (0, 2, 5)
    return np.frombuffer(data[20:], "<f4")


def iterations(stdout: str) -> list[int]:
    return [int(m) for m in re.findall(r"(?m)^ (\d+): ", stdout)]


def leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp") or n.startswith(".darknet_py-probe")]


def can_mount_tmpfs(tmp_path: Path) -> str | None:
    """None when `unshare -m` + a tmpfs mount works here, else the reason."""
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = tmp_path / "mnt-probe"
    probe.mkdir()
    p = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                       capture_output=True, text=True)
    return None if p.returncode == 0 else f"cannot mount a tmpfs in a private namespace: {p.stderr.strip()}"


def tmpfs_prefix(folder: str, options: str):
    """Run the child with `folder` (relative to its cwd) a fresh tmpfs of its own mount namespace."""
    return ["unshare", "-m", "sh", "-c", f'mkdir -p {folder} && mount -t tmpfs -o {options} tmpfs {folder} && exec "$@"', "sh"]


# ----------------------------------------------------------------- 1. unwritable backup folder

@pytest.mark.parametrize("kind", ["file", "under_a_file", "read_only_mount"])
def test_unwritable_backup_stops_before_the_first_iteration(tmp_path, kind):
    if kind == "read_only_mount" and (why := can_mount_tmpfs(tmp_path)):
        pytest.skip(why)
    d = make_case(tmp_path / "case", 3, backup={"file": "backup", "under_a_file": "notes.txt/backup"}.get(kind,
                                                                                                      "backup/"))
    prefix = ()
    if kind == "file":
        (d / "backup").write_text("not a folder")
    elif kind == "under_a_file":
        (d / "notes.txt").write_text("a file")
    else:
        (d / "backup").mkdir()
        prefix = tmpfs_prefix("backup", "size=2m,ro")
    p, _ = run(d, prefix=prefix)
    assert p.returncode == 1, p.stderr[-2000:]
    assert iterations(p.stdout) == [], "it trained before finding out"
    errors = [l for l in p.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and "backup" in errors[0], p.stderr[-2000:]
    why = {"file": "it is a file", "under_a_file": "Not a directory", "read_only_mount": "Read-only file system"}
    assert why[kind] in errors[0], errors
    assert "Traceback" not in p.stderr


def test_classifier_unwritable_backup_stops_before_the_first_iteration(tmp_path):
    case = ROOT / "tests" / "data" / "classifier" / "c1-darknet-ref"
    if not case.is_dir():
        pytest.skip("no classifier case")
    d = tmp_path / "c"
    shutil.copytree(case, d)
    data = next(d.glob("*.data"))
    text = re.sub(r"(?m)^backup\s*=.*$", "backup=backup_file", data.read_text())
    data.write_text(text if "backup_file" in text else text + "backup=backup_file\n")
    (d / "backup_file").write_text("a file")
    cfg = next(p for p in d.glob("*.cfg"))
    weights = [str(w.name) for w in d.glob("init*.weights")][:1]
    p, _ = run(d, args=["classifier", "train", data.name, cfg.name, *weights, "-dont_show"])
    assert p.returncode == 1, p.stderr[-2000:]
    errors = [l for l in p.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and "backup_file" in errors[0] and "it is a file" in errors[0], p.stderr[-2000:]
    assert not re.search(r"(?m)^1, ", p.stdout), "it trained before finding out"


def test_unwritable_chart_and_bad_list_are_warned_and_training_goes_on(tmp_path):
    d = make_case(tmp_path / "case", 3)
    (d / "chart.png").mkdir()  # the chart cannot be renamed over a folder
    (d / "bad.list").mkdir()  # nor can bad.list be appended to
    for i in range(1, 5):  # missing labels: bad.list lines, whichever images are drawn
        os.unlink(d / "obj" / f"d{i}.txt")
    p, _ = run(d, args=TRAIN + ["-chart", "missing_chart.png"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert iterations(p.stdout) == [1, 2, 3]
    assert len(re.findall(r"Warning: cannot save the chart chart\.png: Is a directory", p.stderr)) == 1, p.stderr
    assert len(re.findall(r"Warning: bad\.list: cannot append \(Is a directory\)", p.stderr)) == 1, p.stderr
    assert "Warning: -chart missing_chart.png: cannot read it" in p.stderr
    assert (d / "chart_t.png").is_file() and (d / "backup" / "t_final.weights").is_file()


# ----------------------------------------------------------------- 2. a write fails while saving

def test_failed_saves_keep_the_previous_file_and_training_goes_on(tmp_path):
    d = make_case(tmp_path / "case", 6, saveweights=3)
    last = "backup/t_last.weights"
    spec = {"at": {"2": [["sha", last], ["fsize", 1000]],  # the saves of iterations 2 and 3 fail
                   "4": [["sha", last], ["ls", "backup"], ["fsize", None]]}}  # those of 4.. succeed
    p, rep = run(d, spec)
    assert p.returncode == 0, p.stderr[-3000:]
    assert iterations(p.stdout) == [1, 2, 3, 4, 5, 6]
    failed = re.findall(r"(?m)^Cannot save weights to (\S+): File too large \(errno 27\); (.*)$", p.stderr)
    assert [f for f, _ in failed] == ["backup//t_last.weights", "backup//t_3.weights", "backup//t_last.weights"], \
        p.stderr[-3000:]
    assert failed[0][1].startswith("the previous file is kept") and failed[1][1].startswith("no file is left")
    # the _last of iteration 1, byte-identical while the saves failed; nothing partial under any name
    assert rep[f"sha:{last}:2"] == rep[f"sha:{last}:4"] is not None
    assert rep["ls:backup:4"] == ["t_last.weights"]
    names = sorted(os.listdir(d / "backup"))
    assert names == ["t_6.weights", "t_final.weights", "t_last.weights"] and not leftovers(d / "backup")
    assert all((d / "backup" / n).stat().st_size == WEIGHTS_BYTES for n in names)
    assert "Traceback" not in p.stderr


def test_final_weights_not_written_exit_nonzero_naming_the_last_good_ones(tmp_path):
    d = make_case(tmp_path / "case", 3, saveweights=1000)
    p, rep = run(d, {"at": {"3": [["fsize", 1000]]}})
    assert p.returncode == 1, p.stderr[-3000:]
    assert re.search(r"(?m)^Cannot save weights to backup//t_final\.weights: File too large", p.stderr)
    assert re.search(r"(?m)^Error: the final weights could not be written to backup//t_final\.weights; the last "
                     r"good weights are backup//t_last\.weights \(iteration 2\)$", p.stderr), p.stderr[-2000:]
    assert struct.unpack("<Q", (d / "backup" / "t_last.weights").read_bytes()[12:20])[0] == 2 * 2  # seen
    assert sorted(os.listdir(d / "backup")) == ["t_last.weights"]
    assert "Traceback" not in p.stderr


def test_classifier_final_weights_not_written_exit_nonzero(tmp_path):
    case = ROOT / "tests" / "data" / "classifier" / "c1-darknet-ref"
    d = tmp_path / "c"
    shutil.copytree(case, d)
    p, _ = run(d, {"at": {"3": [["fsize", 1000]]}},  # the classifier's `3, EPOCH: ...` line: the last one
               args=["classifier", "train", "obj.data", "c1-darknet-ref.cfg", "-dont_show"])
    assert p.returncode == 1, p.stderr[-3000:]
    assert re.search(r"(?m)^Cannot save weights to backup//c1-darknet-ref_final\.weights: File too large", p.stderr)
    assert re.search(r"(?m)^Error: the final weights could not be written to backup//c1-darknet-ref_final\.weights; "
                     r"no weights were saved in this run$", p.stderr), p.stderr[-2000:]
    assert os.listdir(d / "backup") == [] and "Traceback" not in p.stderr


def test_disk_full_tmpfs(tmp_path):
    """A real ENOSPC: the backup folder a 1 MB tmpfs, room for one weights file and not a second."""
    if why := can_mount_tmpfs(tmp_path):
        pytest.skip(why)
    d = make_case(tmp_path / "case", 3, saveweights=1000)
    p, rep = run(d, {"at": {"2": [["sha", "backup/t_last.weights"]], "3": [["sha", "backup/t_last.weights"],
                                                                            ["ls", "backup"]]}},
                 prefix=tmpfs_prefix("backup", "size=1m"))
    assert p.returncode == 1, p.stderr[-3000:]
    assert re.search(r"(?m)^Cannot save weights to backup//t_last\.weights: No space left on device \(errno 28\); "
                     r"the previous file is kept", p.stderr), p.stderr[-3000:]
    assert rep["sha:backup/t_last.weights:2"] == rep["sha:backup/t_last.weights:3"] is not None
    assert rep["ls:backup:3"] == ["t_last.weights"]
    assert "the last good weights are backup//t_last.weights (iteration 1)" in p.stderr


# ----------------------------------------------------------------- 3. data vanishing mid-run

def test_images_and_labels_vanishing_mid_run(tmp_path):
    # one loader thread: 2 batches prepared ahead whatever the machine; the seed fixes the draws (36 of 5
    # images after the faults)
    d = make_case(tmp_path / "case", 20, images=5, saveweights=1000)
    spec = {"at": {"1": [["delete", "obj/d1.png"], ["truncate", "obj/d2.png", 200], ["garbage", "obj/d3.png"],
                         ["garbage", "obj/d4.txt"], ["delete", "obj/d5.txt"]]}}
    p, _ = run(d, spec, args=TRAIN + ["-seed", "1", "-workers", "1"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert iterations(p.stdout) == list(range(1, 21))
    for name in ("d1", "d2", "d3"):
        said = [l for l in p.stderr.splitlines() if f"obj/{name}.png: Cannot load image" in l]
        assert len(said) == 1, (name, p.stderr[-3000:])
    assert any("obj/d4.txt:1: Wrong annotation" in l for l in p.stderr.splitlines()), p.stderr[-3000:]
    said = [l for l in p.stderr.splitlines() if l.startswith("obj/d5.txt: Can't open label file (No such file")]
    assert len(said) == 1, p.stderr[-3000:]  # the image is used as a negative, as upstream
    bad = (d / "bad.list").read_text().splitlines()
    assert sorted(bad) == ["obj/d1.png", "obj/d2.png", "obj/d3.png", "obj/d5.txt"]
    assert (d / "backup" / "t_final.weights").is_file()
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------- 4. out of memory

@pytest.mark.parametrize("random", [0, 1])
def test_out_of_memory_is_one_line_naming_batch_subdivisions_and_size(tmp_path, random):
    d = make_case(tmp_path / "case", 3, cfg_edits={"batch": 64, "width": 608, "height": 608})
    if random:
        (d / "t.cfg").write_text(re.sub(r"(?m)^random\s*=.*$", "random=1", (d / "t.cfg").read_text()))
    # 64 images of 608 x 608 are 280 MB as float32 input alone, the activations several GB
    p, _ = run(d, {"start": [["as_extra", 1_500_000_000]]}, args=TRAIN + ["-workers", "0"])
    assert p.returncode == 1, p.stderr[-3000:]
    errors = [l for l in p.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    line = errors[0]
    assert line.startswith("Error: Out of memory (host) in iteration 1, ")
    assert "t.cfg has batch=64 subdivisions=1 (64 images per pass)" in line and "subdivisions=2" in line
    # random=1: the first iteration at the largest size, round(1.4 * 608 / 32 + 1) * 32
    size = "608 x 608" if not random else "896 x 896"
    assert f"training at {size}" in line, line
    if random:
        assert "random (multi-scale, the first iteration at the largest size: 896 x 896)" in line
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------- 5. NaN loss

def test_nan_loss_goes_on_and_keeps_the_nan_free_last(tmp_path):
    d = make_case(tmp_path / "case", 8, saveweights=1000, cfg_edits={"learning_rate": "1e12"})
    spec = {"at": {str(k): [["sha", "backup/t_last.weights"]] for k in range(1, 9)}}
    p, rep = run(d, spec, args=TRAIN + ["-map"])  # -map at iteration 8, on NaN weights
    assert p.returncode == 0, p.stderr[-3000:]
    assert iterations(p.stdout) == list(range(1, 9))
    assert "mean_average_precision (mAP@0.50) = 0.000000" in p.stdout
    assert "Traceback" not in p.stderr
    said = re.findall(r"Warning: loss is (\S+) at iteration (\d+) \(NaN/inf\); training goes on", p.stderr)
    assert len(said) == 1, p.stderr[-3000:]
    first_nan = int(said[0][1])
    last = d / "backup" / "t_last.weights"
    assert np.isfinite(weights_floats(last)).all()
    skipped = re.findall(r"(?m)^backup//t_last\.weights: not saved at iteration (\d+): the weights hold NaN/inf",
                         p.stderr)
    assert len(skipped) == 1, p.stderr[-3000:]
    # the _last on disk is the one of the iteration before the weights went bad, untouched since
    k = int(skipped[0])
    assert rep[f"sha:backup/t_last.weights:{k}"] == sha(last)
    assert k >= first_nan - 1 >= 0


# ----------------------------------------------------------------- 7. permissions

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_weights_and_charts_get_the_umask_mode(tmp_path, umask, mode):
    d = make_case(tmp_path / "case", 2)
    p, _ = run(d, prefix=["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh"])
    assert p.returncode == 0, p.stderr[-2000:]
    files = [*(d / "backup").iterdir(), d / "chart.png", d / "chart_t.png"]
    assert len(files) >= 4
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, (f, oct(f.stat().st_mode))


def test_a_replaced_file_keeps_its_mode(tmp_path):
    from darknet_py.outputs.fileio import atomic_write_bytes

    f = tmp_path / "w.weights"
    f.write_bytes(b"old")
    os.chmod(f, 0o640)
    atomic_write_bytes(f, b"new")
    assert f.read_bytes() == b"new" and stat.S_IMODE(f.stat().st_mode) == 0o640


UPSTREAM_MAP_NAN = ROOT / "tests" / "data" / "faults" / "map_nan_upstream.txt"


def test_map_on_nan_weights_prints_upstreams_figures(tmp_path):
    """`detector map` on weights that are all NaN: no detection, upstream's lines. Upstream's
    `ap = ` and mAP figures are read from before a zero-length array there (tests/data/faults/
    README.md): ours are 0, the value of a class without a detection; every other line is equal."""
    d = make_case(tmp_path / "case", 1)
    data = (d / "init.weights").read_bytes()
    nan = np.full((len(data) - 20) // 4, np.nan, "<f4")
    (d / "nan.weights").write_bytes(data[:20] + nan.tobytes())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "darknet.py"), "detector", "map", "obj.data", "t.cfg",
                        "nan.weights"], cwd=d, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    keep = re.compile(r"detections_count|class_id = |for conf_thresh|mean average precision")
    ub = re.compile(r"ap = [^%]*%|= \S+, or \S+ %")  # upstream's undefined figures
    ours = [l for l in p.stdout.splitlines() if keep.search(l)]
    theirs = [l for l in UPSTREAM_MAP_NAN.read_text().splitlines() if keep.search(l)]
    assert len(ours) == len(theirs) == 8
    assert [ub.sub("?", l).strip() for l in ours] == [ub.sub("?", l).strip() for l in theirs]
    assert all("ap = 0.00%" in l for l in ours if "class_id" in l)
    assert "mean average precision (mAP@0.50) = 0.000000, or 0.00 %" in p.stdout


def test_out_of_memory_mid_run_saves_the_last_completed_iteration(tmp_path):
    d = make_case(tmp_path / "case", 6, saveweights=1000)
    (d / "obj.data").write_text((d / "obj.data").read_text().replace("savelast=1", "savelast=100"))
    # 4 MB of address space left after iteration 2 (a save needs less); glibc's fixed mmap threshold makes every large block a new
    # mapping (its default, dynamic, may serve the next batch from memory freed earlier)
    p, _ = run(d, {"at": {"2": [["as_extra", 4_000_000]]}}, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert p.returncode == 1, p.stderr[-3000:]
    errors = [l for l in p.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: Out of memory (host) in iteration 3, training at "
                                                     "128 x 128: t.cfg has batch=2 subdivisions=1"), p.stderr[-3000:]
    last = d / "backup" / "t_last.weights"
    assert struct.unpack("<Q", last.read_bytes()[12:20])[0] == 2 * 2  # seen: 2 completed iterations of 2
    assert last.stat().st_size == WEIGHTS_BYTES and "Traceback" not in p.stderr


def test_out_of_memory_kinds():
    """The exceptions torch, numpy and the thread machinery raise when memory runs out (the host
    ones made for real under RLIMIT_AS in the test above; a GPU's is built here: no GPU in CI)."""
    import torch

    from darknet_py.train.faults import out_of_memory_kind

    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total)")
    assert out_of_memory_kind(gpu) == "GPU"
    assert out_of_memory_kind(MemoryError()) == "host"
    assert out_of_memory_kind(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                                           "allocate memory: you tried to allocate 4294967296 bytes")) == "host"
    assert out_of_memory_kind(RuntimeError("can't start new thread")) == "host"
    assert out_of_memory_kind(RuntimeError("shape mismatch")) is None
    assert out_of_memory_kind(ValueError("out of memory")) is None
