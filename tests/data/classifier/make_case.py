#!/usr/bin/env python3
"""Make a classifier parity case folder the way parity/classifier's were made (its README):
an upstream classifier cfg at 64x64, every conv's filters divided by `divide` but the last one's
(the classes), batch 2, 3 iterations, every augmentation off, then the case's `net` keys; the
data of parity/classifier/c1-darknet-ref (one 64x64 image whose path holds its label, `dog`).

    python3 make_case.py CASE.json OUT_DIR [--source PARITY_CLASSIFIER_CASE]

CASE.json: {"name", "base" (a cfg of cfg/), "divide" (groups shrink alike; depthwise stays
depthwise), "net": {key: value}, optional
"softmax": {key: value} (set in the [softmax] section), "dropout": P (every [dropout]'s
probability), "labels": [names] with "tree": [[name, parent], ...] (a hierarchy: labels.txt,
tree.txt, [softmax] tree=tree.txt), "data": {key: value} (obj.data keys), "commands": extra
flags per command}. Writes the cfg, obj.data, labels.txt, train.txt, obj/dog.png, summary.json
(darknet_py's layer table, which tests/test_summary.py holds equal to upstream's parser) and
init.weights (tests/data/make_weights.py summary.json 7 1.0). The reference outputs are then
made by upstream's binary: see README.md beside this file.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

AUGMENT_OFF = {"min_crop": 64, "max_crop": 64, "angle": 0, "aspect": 1, "hue": 0, "saturation": 1, "exposure": 1,
               "flip": 0, "mixup": 0, "blur": 0, "burn_in": 0}


def sections(text):
    """[(name, [lines])] with the text before the first section dropped."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            out.append((s.strip("[]"), []))
        elif out and s.split("#", 1)[0].strip():
            out[-1][1].append(s.split("#", 1)[0].strip())
    return out


def set_key(lines, key, value):
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(key)}\s*=", line):
            lines[i] = f"{key}={value}"
            return
    lines.insert(0, f"{key}={value}")


def make_cfg(spec):
    secs = sections((ROOT / "cfg" / spec["base"]).read_text())
    net = dict(batch=2, subdivisions=1, width=64, height=64, max_batches=3, **AUGMENT_OFF)
    net.update(spec.get("net", {}))
    for k, v in net.items():
        set_key(secs[0][1], k, v)
    convs = [i for i, (name, _) in enumerate(secs) if name in ("convolutional", "conv")]
    classes = len(spec.get("labels", ["bird", "cat", "dog"]))
    for i in convs:
        lines = secs[i][1]
        value = lambda key, default: next((int(l.split("=", 1)[1]) for l in lines if l.startswith(key)), default)
        filters, groups = value("filters", 1), value("groups", 1)
        new = classes if i == convs[-1] else max(1, filters // spec["divide"])
        set_key(lines, "filters", new)
        if groups > 1:  # a depthwise conv stays depthwise; other groups shrink with the filters
            set_key(lines, "groups", new if groups == filters else max(1, groups // spec["divide"]))
    for name, lines in secs:
        if name in ("softmax", "soft"):
            for k, v in spec.get("softmax", {}).items():
                set_key(lines, k, v)
        if name == "dropout" and "dropout" in spec:
            set_key(lines, "probability", spec["dropout"])
    return "\n".join(f"[{name}]\n" + "".join(l + "\n" for l in lines) for name, lines in secs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case_json")
    ap.add_argument("out")
    ap.add_argument("--source", default=str(HERE / "c1-darknet-ref"))
    a = ap.parse_args()
    spec = json.loads(Path(a.case_json).read_text())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = spec["name"]
    (out / "case.json").write_text(json.dumps(spec, indent=1) + "\n")
    (out / f"{name}.cfg").write_text(make_cfg(spec))
    src = Path(a.source)
    (out / "obj").mkdir(exist_ok=True)
    shutil.copy(src / "obj" / "dog.png", out / "obj" / "dog.png")
    shutil.copy(src / "train.txt", out / "train.txt")
    labels = spec.get("labels", ["bird", "cat", "dog"])
    (out / "labels.txt").write_text("".join(n + "\n" for n in labels))
    data = {"classes": len(labels), "train": "train.txt", "valid": "train.txt", "labels": "labels.txt",
            "names": "labels.txt", "backup": "backup/", "top": 2}
    data.update(spec.get("data", {}))
    (out / "obj.data").write_text("".join(f"{k}={v}\n" for k, v in data.items()))
    if "tree" in spec:
        index = {n: i for i, (n, _) in enumerate(spec["tree"])}
        (out / "tree.txt").write_text("".join(f"{n} {index[p] if p else -1}\n" for n, p in spec["tree"]))
    from darknet_py.network import build_network

    net = build_network(out / f"{name}.cfg", batch=1)
    (out / "summary.json").write_text(json.dumps({"layers": net.summary()}) + "\n")
    subprocess.run([sys.executable, str(ROOT / "tests" / "data" / "make_weights.py"), str(out / "summary.json"),
                    "7", "1.0", str(out / "init.weights")], check=True)


if __name__ == "__main__":
    main()
