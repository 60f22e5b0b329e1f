#!/usr/bin/env python3
"""What upstream's Python API (darknet.py -> darknet_py.compat) costs over darknet_py itself.

    .venv/bin/python benchmarks/compat.py [--cfg cfg/yolov4-tiny.cfg] [--size 416] [--repeat 30]

yolov4-tiny with random weights (normal(0, 0.05), seed 0, BN folded) on a random frame.
Per threshold it times, on the same network outputs:

* decode_ms: darknet_py's own decoding, as Network.detect does it after predict_raw:
  network_boxes + NMS + Detections.to_dicts (one dict per kept box);
* compat_decode_ms: the part of detect_image after the forward pass: get_network_boxes
  (filling the DETECTION structs), do_nms_sort in place, remove_negatives, decode_detection,
  free_detections and the sort;
* overhead_ms = compat_decode_ms - decode_ms;

and end to end (medians, interleaved): predict_raw + decoding vs copy_image_from_bytes +
detect_image. Prints one JSON object.

The decoding times are medians of this process's CPU time (time.process_time; decoding
is single-threaded), which other load on the machine disturbs far less than wall-clock
time. End to end includes torch's multi-threaded forward pass (whose spinning threads make
CPU time meaningless), so it is wall-clock time: the minimum (the least disturbed run) and
the median. On a loaded machine only the minimum means much.

With these random weights, thresh 0.5 leaves 169 boxes and no class above it (a realistic
amount of post-processing); thresh 0.25 keeps all 2535 boxes with ~28000 (box, class)
detections, where the cost is dominated by building one Python tuple (and confidence
string) per detection, as upstream's detect_image does.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_ms(fn, repeat: int, budget_s: float = 3.0) -> float:
    """Median CPU ms of up to `repeat` runs (at least 3), stopping once `budget_s` is spent."""
    times = []
    start = time.perf_counter()
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def wall_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov4-tiny.cfg"))
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.25])
    args = ap.parse_args()

    import torch
    from darknet_py import compat
    from darknet_py.outputs.detections import network_boxes, nms
    from darknet_py.network import build_network

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_network(args.cfg, batch=1, width=args.size, height=args.size)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    model.eval().fuse().to(memory_format=torch.channels_last)
    net = compat.NetworkHandle(model)
    names = [f"class{i}" for i in range(model.layers[-1].classes)]
    w, h = compat.network_width(net), compat.network_height(net)

    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()
    image = compat.make_image(w, h, 3)
    compat.copy_image_from_bytes(image, frame)
    pixels = np.ctypeslib.as_array(image.data, shape=(3, h, w)).copy()

    def decode(raw, thresh):
        dets, _kind, _beta, classes = network_boxes(model, raw, thresh, 0.5, w, h, False, False)
        return nms(dets, classes, 0.45).to_dicts(thresh)

    def compat_decode(thresh):
        count = compat.pointer(compat.c_int(0))
        dets = compat.get_network_boxes(net, w, h, thresh, 0.5, None, 0, count, 0)
        num = count[0]
        compat.do_nms_sort(dets, num, len(names), 0.45)
        found = compat.decode_detection(compat.remove_negatives(dets, names, num))
        compat.free_detections(dets, num)
        return sorted(found, key=lambda d: d[1]), num

    for _ in range(3):  # warm up
        compat.predict_image(net, image)
    raw = net.outputs
    result = {"cfg": Path(args.cfg).name, "size": args.size, "threads": torch.get_num_threads(),
              "repeat": args.repeat, "thresholds": []}
    for thresh in args.thresholds:
        found, boxes = compat_decode(thresh)
        decode_ms = median_ms(lambda: decode(raw, thresh), args.repeat)
        compat_ms = median_ms(lambda: compat_decode(thresh), args.repeat)
        result["thresholds"].append({
            "thresh": thresh, "boxes": boxes, "detections": len(found),
            "decode_ms": round(decode_ms, 3), "compat_decode_ms": round(compat_ms, 3),
            "overhead_ms": round(compat_ms - decode_ms, 3)})

    thresh = args.thresholds[0]
    def base():
        decode(model.predict_raw(pixels), thresh)

    def full():
        compat.copy_image_from_bytes(image, frame)
        compat.detect_image(net, names, image, thresh=thresh)

    base_ms, full_ms = [], []
    for _ in range(args.repeat):  # interleaved, so that both see the same machine load
        base_ms.append(wall_ms(base))
        full_ms.append(wall_ms(full))
    compat.free_image(image)
    result["end_to_end"] = {"thresh": thresh}
    for stat, f in (("min", min), ("median", statistics.median)):
        result["end_to_end"].update({
            f"predict_raw_plus_decode_{stat}_ms": round(f(base_ms), 3),
            f"copy_image_plus_detect_image_{stat}_ms": round(f(full_ms), 3),
            f"difference_{stat}_ms": round(f(full_ms) - f(base_ms), 3)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
