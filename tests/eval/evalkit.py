"""Helpers of the evaluation tests (imported by conftest.py and the test modules)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "tests" / "data" / "map"
EVAL_DATA = Path(__file__).resolve().parent / "data"
EXPECTED = EVAL_DATA / "expected"
CFG = "map-yolov4-tiny.cfg"
WEIGHTS = "trained.weights"


def make_evaldir(dest: Path) -> Path:
    shutil.copytree(MAP, dest)
    shutil.copytree(EVAL_DATA / "rich", dest / "rich")
    # images the rich set shares with map/: copied, not stored twice
    shutil.copy(dest / "val" / "v0.png", dest / "rich" / "e3_dup.png")
    shutil.copy(dest / "val" / "v3_vflip.png", dest / "rich" / "v3_nolabel.png")
    cfg = (dest / CFG).read_text()
    (dest / "rich" / "letter.cfg").write_text(cfg.replace("[net]\n", "[net]\nletter_box=1\n", 1))
    return dest


def run_cli(args, cwd, stdin=None, env=None, timeout=300):
    """Run ./darknet.py; stdout/stderr decoded as they were written (no newline translation,
    so upstream's carriage returns are compared too)."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    e.update(env or {})
    r = subprocess.run([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd,
                       input=stdin.encode() if stdin is not None else None,
                       capture_output=True, env=e, timeout=timeout)
    r.stdout = r.stdout.decode("utf-8", errors="replace")
    r.stderr = r.stderr.decode("utf-8", errors="replace")
    return r


def read_exact(path) -> str:
    """A text file as written (its carriage returns kept)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def report_section(text: str) -> str:
    """From ' detections_count' to the 'mean average precision' line (upstream's report)."""
    start = text.index("\n detections_count") + 1
    end = text.index("\n", text.index(" mean average precision (mAP@", start))
    return text[start:end + 1]


def read_result_rows(path, kind):
    """Rows of a results file: (key..., prob, coords...) as tuples."""
    import json

    if kind == "coco":
        return [((d["image_id"], d["category_id"]), d["score"], tuple(d["bbox"]))
                for d in json.loads(Path(path).read_text())]
    rows = []
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if kind == "imagenet":
            rows.append(((int(f[0]), int(f[1])), float(f[2]), tuple(map(float, f[3:]))))
        else:
            rows.append(((f[0],), float(f[1]), tuple(map(float, f[2:]))))
    return rows


def assert_results_match(ours, upstream, kind="voc", prob_tol=2.5e-6, coord_tol=2.5e-4):
    """Same lines in the same order; probabilities and pixel coordinates equal up to
    float32 rounding of another summation order (upstream's own builds differ as much)."""
    a, b = read_result_rows(ours, kind), read_result_rows(upstream, kind)
    assert len(a) == len(b), (ours, len(a), len(b))
    for i, (x, y) in enumerate(zip(a, b)):
        assert x[0] == y[0], (ours, i, x, y)
        assert abs(x[1] - y[1]) <= prob_tol, (ours, i, x, y)
        assert max(abs(p - q) for p, q in zip(x[2], y[2])) <= coord_tol, (ours, i, x, y)
