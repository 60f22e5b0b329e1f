"""detector valid: upstream's results files (VOC per class, COCO json, ImageNet), and the
COCO scoring with pycocotools that upstream leaves to external scripts."""
import io
import json
import os

import cv2
import pytest

from evalkit import CFG, EXPECTED, MAP, WEIGHTS, assert_results_match, run_cli

from darknet_py.eval.valid import validate_detector

CLASSES = ("bicycle", "dog", "truck")


def test_cli_valid_writes_upstream_results(evaldir):
    for f in (evaldir / "results").iterdir():
        f.unlink()
    r = run_cli(["detector", "valid", "obj.data", CFG, WEIGHTS], evaldir)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.splitlines() == [" Detection layer: 30 - type = 28 ", " Detection layer: 37 - type = 28 "]
    for line in ("results: Using default 'results'", "Learning Rate: 0.002, Momentum: 0.9, Decay: 0.0005",
                 "eval: Using default 'voc'"):
        assert line in r.stderr.splitlines()
    names = sorted(os.listdir(evaldir / "results"))
    assert names == [f"comp4_det_test_{c}.txt" for c in CLASSES]  # nothing else (no temporary files)
    for c in CLASSES:
        name = f"comp4_det_test_{c}.txt"
        assert_results_match(evaldir / "results" / name, MAP / "results" / name)


def _data(path, **keys):
    text = "classes=3\nvalid=rich/valid.txt\nnames=obj.names\n" + "".join(f"{k}={v}\n" for k, v in keys.items())
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("kind", ["voc", "letter"])
def test_valid_voc_rich_set(evaldir, eval_net, kind):
    net = eval_net
    if kind == "letter":
        from darknet_py.eval.common import load_eval_network
        net = load_eval_network("rich/letter.cfg", WEIGHTS)
    data = _data(evaldir / "v.data", results="out")
    res = validate_detector(data, CFG, WEIGHTS, net=net, out=io.StringIO(), err=io.StringIO())
    assert sorted(res["files"]) == [os.path.join("out", f"comp4_det_test_{c}.txt") for c in CLASSES]
    for c in CLASSES:
        name = f"comp4_det_test_{c}.txt"
        assert_results_match(evaldir / "out" / name, EXPECTED / f"valid_{kind}" / name)


def test_valid_out_flag_names_the_files(evaldir, eval_net):
    data = _data(evaldir / "v.data", results="out2")
    validate_detector(data, CFG, WEIGHTS, outfile="mine_", net=eval_net, out=io.StringIO(), err=io.StringIO())
    assert sorted(os.listdir(evaldir / "out2")) == [f"mine_{c}.txt" for c in CLASSES]


def test_valid_coco_and_imagenet(evaldir, eval_net):
    data = _data(evaldir / "c.data", results="co", eval="coco")
    res = validate_detector(data, CFG, WEIGHTS, net=eval_net, out=io.StringIO(), err=io.StringIO())
    assert res["files"] == [os.path.join("co", "coco_results.json")]
    text = (evaldir / "co" / "coco_results.json").read_text()
    assert text.startswith('[\n{"image_id":0, "category_id":') and text.endswith("}\n]\n")
    json.loads(text)
    assert_results_match(evaldir / "co" / "coco_results.json", EXPECTED / "valid_coco.json", "coco")

    data = _data(evaldir / "i.data", results="im", eval="imagenet")
    validate_detector(data, CFG, WEIGHTS, net=eval_net, out=io.StringIO(), err=io.StringIO())
    # upstream writes 200 classes whatever the network has (reading past its arrays): the
    # lines of the network's own classes are compared
    assert_results_match(evaldir / "im" / "imagenet-detection.txt",
                         EXPECTED / "valid_imagenet_classes1-3.txt", "imagenet")


def make_coco_annotations(evaldir, paths, cat_ids):
    """A COCO ground truth for `paths` from their YOLO labels."""
    images, anns = [], []
    for k, p in enumerate(paths):
        h, w = cv2.imread(str(evaldir / p)).shape[:2]
        images.append({"id": 100 + k, "file_name": os.path.basename(p), "width": w, "height": h})
        label = evaldir / (os.path.splitext(p)[0] + ".txt")
        if not label.exists():
            continue
        for line in label.read_text().splitlines():
            c, x, y, bw, bh = line.split()
            x, y, bw, bh = float(x) * w, float(y) * h, float(bw) * w, float(bh) * h
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": cat_ids[int(c)],
                         "bbox": [x - bw / 2, y - bh / 2, bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": cat_ids[i], "name": n} for i, n in enumerate(CLASSES)]
    path = evaldir / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_valid_coco_scored_with_pycocotools(evaldir, eval_net):
    paths = [p for p in (evaldir / "rich" / "valid.txt").read_text().split() if p]
    ann = make_coco_annotations(evaldir, paths, cat_ids=[31, 7, 12])  # ids matched by class name
    data = _data(evaldir / "c.data", results="co", eval="coco", coco_annotations=str(ann))
    out = io.StringIO()
    res = validate_detector(data, CFG, WEIGHTS, net=eval_net, out=out, err=io.StringIO())
    stats = res["coco_stats"]
    assert len(stats) == 12 and all(-1 <= s <= 1 for s in stats)
    assert 0.2 < stats[1] < 0.9  # AP@0.50: the network finds most objects of the original images
    text = out.getvalue()
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = " in text
    assert sum(" (AP) @[ " in l or " (AR) @[ " in l for l in text.splitlines()) == 12
    results = json.loads((evaldir / "co" / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(100, 100 + len(paths)))
    assert {r["category_id"] for r in results} == {31, 7, 12}


def test_valid_coco_without_annotations_needs_coco_classes(evaldir, eval_net):
    """Upstream's table maps class k to COCO's k-th category id (1, 2, 3 for these)."""
    data = _data(evaldir / "c.data", results="co", eval="coco")
    validate_detector(data, CFG, WEIGHTS, net=eval_net, out=io.StringIO(), err=io.StringIO())
    results = json.loads((evaldir / "co" / "coco_results.json").read_text())
    assert {r["category_id"] for r in results} == {1, 2, 3}


def _numbers_and_shape(text):
    import re

    return [float(x) for x in re.findall(r"-?\d+\.\d+", text)], re.sub(r"-?\d+\.\d+", "#", text)


def _assert_same_text_up_to_rounding(ours, upstream, tol=2.5e-4):
    a, sa = _numbers_and_shape(ours)
    b, sb = _numbers_and_shape(upstream)
    assert sa == sb
    assert max([abs(x - y) for x, y in zip(a, b)] or [0]) <= tol


def test_valid_bdd_and_kitti(evaldir, eval_net):
    data = _data(evaldir / "b.data", results="bd", eval="bdd")
    validate_detector(data, CFG, WEIGHTS, net=eval_net, out=io.StringIO(), err=io.StringIO())
    _assert_same_text_up_to_rounding((evaldir / "bd" / "bdd_results.json").read_text(),
                                     (EXPECTED / "valid_bdd.json").read_text())
    data = _data(evaldir / "k.data", results="ki", eval="kitti")
    out = io.StringIO()
    validate_detector(data, CFG, WEIGHTS, net=eval_net, out=out, err=io.StringIO())
    assert "kitti_results\n" in out.getvalue()
    written = sorted(p.name for p in (evaldir / "ki" / "kitti_results" / "data").iterdir())
    assert written == sorted(p.name for p in (EXPECTED / "valid_kitti").iterdir())
    for name in written:
        _assert_same_text_up_to_rounding((evaldir / "ki" / "kitti_results" / "data" / name).read_text(),
                                         (EXPECTED / "valid_kitti" / name).read_text())
