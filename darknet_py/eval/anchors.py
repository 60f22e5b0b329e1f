"""Upstream: calc_anchors (src/detector.c) with do_kmeans (src/matrix.c):
`detector calc_anchors DATA -num_of_clusters N -width W -height H [-show]`.

Every box of the training labels (the data file's `train` list) becomes a point
(w * W, h * H). Upstream's k-means (despite its "k-means++" message) then:

* starts from N training boxes picked at random (a Fisher-Yates shuffle with C's
  rand(), seeded with the time: each run may differ, and a run may settle in a poor
  local optimum); DARKNET_SEED=S seeds it with S instead: glibc's rand() is reproduced,
  so this is exactly the upstream run that started at time S;
* measures the distance of a box to a centre as 1 - IoU of the two boxes put at the
  same corner;
* alternates assignment (closest centre, the first on ties) and update (the mean of
  each centre's boxes; a centre without boxes, or a coordinate that comes out 0, keeps
  its old value) until no assignment changes, at most 1000 rounds.

The anchors, sorted by area, are printed and written to anchors.txt (`%3.0f,%3.0f` when
W > 32, else `%2.4f,%2.4f`, joined by ", "), with the mean IoU of each box with its best
anchor and the number of boxes per class (counters_per_class.txt). -show draws the boxes
and anchors into cloud.png.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..outputs.fileio import atomic_write_bytes, atomic_write_text
from .common import EvalError, load_data, data_str, read_valid_list

F32 = np.float32
RAND_MAX = 2**31 - 1


class GlibcRand:
    """C's rand() as glibc implements it (the additive feedback generator random_r, TYPE_3):
    srand(seed) then rand() give glibc's sequence, so a seed reproduces an upstream run
    that was seeded with it (upstream seeds with time(0))."""

    def __init__(self, seed: int):
        seed = int(seed) & 0xFFFFFFFF
        word = seed - 2**32 if seed >= 2**31 else seed  # srand's unsigned seed stored as int32
        if word == 0:
            word = 1
        r = [word]
        for _ in range(1, 31):
            hi = int(word / 127773)  # C division truncates toward zero
            lo = word - hi * 127773
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            r.append(word)
        r += [r[0], r[1], r[2]]  # r[31..33] = r[0..2]
        self._r = [v & 0xFFFFFFFF for v in r]
        for _ in range(34, 344):  # glibc discards the first 310 outputs
            self._next()

    def _next(self) -> int:
        r = self._r
        v = (r[-31] + r[-3]) & 0xFFFFFFFF
        r.append(v)
        if len(r) > 64:
            del r[:-34]
        return v

    def rand(self) -> int:
        return self._next() >> 1

    def integers(self, low, high, endpoint=True) -> int:  # numpy Generator's spelling, [0, RAND_MAX]
        return self.rand()


def _iou(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, k) float32 IoU of corner-aligned boxes, in upstream dist()'s order of operations."""
    x0, x1 = points[:, None, 0], points[:, None, 1]
    y0, y1 = centers[None, :, 0], centers[None, :, 1]
    inter = (np.minimum(x0, y0) * np.minimum(x1, y1)).astype(F32)
    union = ((x0 * x1 + y0 * y1).astype(F32) - inter).astype(F32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (inter / union).astype(F32)


def _iou_dist(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, k) float32 1 - IoU: upstream's k-means distance."""
    return (F32(1) - _iou(points, centers)).astype(F32)


def _closest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Upstream closest_center: the first centre with the smallest distance."""
    d = _iou_dist(points, centers)
    best = np.zeros(points.shape[0], np.int64)
    best_d = d[:, 0].copy()
    for j in range(1, centers.shape[0]):
        better = d[:, j] < best_d
        best[better] = j
        best_d[better] = d[better, j]
    return best


def _maximize(points: np.ndarray, assign: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Upstream kmeans_maximization: float32 sums in point order, divided by the count."""
    k = centers.shape[0]
    new = np.zeros_like(centers)
    counts = np.bincount(assign, minlength=k)
    for j in range(k):
        sel = points[assign == j]
        if sel.size:
            acc = np.zeros(2, F32)
            for p in sel:  # sequential float32 accumulation, as upstream
                acc = (acc + p).astype(F32)
            new[j] = (acc / F32(counts[j])).astype(F32)
    return np.where(new == 0, centers, new).astype(F32)


def kmeans(points: np.ndarray, k: int, rng) -> tuple[np.ndarray, np.ndarray, int]:
    """Upstream do_kmeans: (centres (k, 2) float32, assignments, iterations)."""
    n = points.shape[0]
    order = np.arange(n)
    for i in range(n - 1, -1, -1):  # upstream sample(): swap i with rand() % (i + 1)
        j = int(rng.integers(0, RAND_MAX, endpoint=True)) % (i + 1)
        order[i], order[j] = order[j], order[i]
    centers = points[order[:k]].astype(F32).copy()
    assign = np.zeros(n, np.int64)
    if k == 1:
        centers = _maximize(points, assign, centers)
    it = 0
    while it < 1000:
        new_assign = _closest(points, centers)
        converged = bool(np.array_equal(new_assign, assign))
        assign = new_assign
        if converged:
            break
        centers = _maximize(points, assign, centers)
        it += 1
    return centers, assign, it


def read_box_sizes(train_list: str, classes: int, width: int, height: int, out):
    """All label boxes of the images of `train_list` as (w * width, h * height) float32,
    and the count of boxes per class (grown when a label has a larger class id, as upstream)."""
    from ..data.labels import image_to_label_path

    paths = read_valid_list(train_list, "train")
    print(f" read labels from {len(paths)} images ", file=out)
    sizes = []
    counts = [0] * classes
    for i, path in enumerate(paths):
        label_path = image_to_label_path(path)
        try:
            with open(label_path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            print(f"Can't open label file. (This can be normal only if you use MSCOCO): {label_path} ", file=out)
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 5:
                    raise ValueError
                cid = int(fields[0])
                x, y, w, h = (float(v) for v in fields[1:])
            except ValueError:
                raise EvalError(f"{label_path}:{lineno}: Wrong annotation: expected 'class x y w h', "
                                f"got '{line.strip()}'") from None
            x, y, w, h = F32(x), F32(y), F32(w), F32(h)
            if not (0 < x <= 1 and 0 < y <= 1 and 0 < w <= 1 and 0 < h <= 1):
                raise EvalError(f"{label_path}:{lineno}: Wrong label: x = {float(x):f}, y = {float(y):f}, "
                                f"width = {float(w):f}, height = {float(h):f}: coordinates must be in (0, 1]")
            if cid < 0:
                raise EvalError(f"{label_path}:{lineno}: Wrong annotation: class_id = {cid} is negative")
            if cid >= len(counts):
                counts += [0] * (cid + 1 - len(counts))
            counts[cid] += 1
            sizes.append((w * F32(width), h * F32(height)))
            print(f"\r loaded \t image: {i + 1} \t box: {len(sizes)}", end="", file=out)
    return np.asarray(sizes, F32).reshape(-1, 2), counts


def _seed():
    s = os.environ.get("DARKNET_SEED")
    if s is None or s == "":
        return None
    try:
        return int(s)
    except ValueError:
        raise EvalError(f"DARKNET_SEED={s!r}: not an integer") from None


def calc_anchors(datacfg, num_of_clusters: int, width: int, height: int, show: bool = False, out=None,
                 seed=None, workdir: str = ".") -> dict:
    """Prints upstream's report, writes anchors.txt and counters_per_class.txt (and
    cloud.png with show) in `workdir`; returns {"anchors": (k, 2) array, "avg_iou": %, ...}."""
    out = out or sys.stdout
    print(f"\n num_of_clusters = {num_of_clusters}, width = {width}, height = {height} ", file=out)
    if width < 0 or height < 0:
        print("Usage: darknet detector calc_anchors data/voc.data -num_of_clusters 9 -width 416 -height 416 ",
              file=out)
        raise EvalError("calc_anchors: set -width and -height")
    if num_of_clusters < 1:
        raise EvalError(f"-num_of_clusters {num_of_clusters}: must be at least 1")
    d = load_data(datacfg)
    train = data_str(d, "train", "data/train.list")
    classes = d.int("classes", 1) if d.has("classes") else 1
    points, counts = read_box_sizes(train, classes, width, height, out)
    n = points.shape[0]
    print("\n all loaded. ", file=out)
    if n < num_of_clusters:
        raise EvalError(f"{train}: the labels hold {n} boxes, fewer than -num_of_clusters {num_of_clusters}")
    print("\n calculating k-means++ ...", end="", file=out)
    print("", file=out)
    if seed is None:
        seed = _seed()
    if seed is None:
        seed = int(time.time())  # upstream: srand(time(0))
    rng = GlibcRand(seed)
    centers, assign, iterations = kmeans(points, num_of_clusters, rng)
    print(f"\n iterations = {iterations} ", file=out)
    # sort by area, ascending (upstream's qsort; glibc's merge sort keeps ties in order)
    area = (centers[:, 0] * centers[:, 1]).astype(F32)
    order = np.argsort(area, kind="stable")
    centers = centers[order]
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    assign = relabel[assign]

    print("", file=out)
    iou = _iou(points, centers)
    dist = (F32(1) - iou).astype(F32)
    best = np.zeros(n, np.int64)
    best_d = np.full(n, np.finfo(F32).max, F32)
    best_iou = np.zeros(n, F32)
    for j in range(num_of_clusters):
        better = dist[:, j] < best_d
        best[better] = j
        best_d[better] = dist[better, j]
        best_iou[better] = iou[better, j]
    avg = F32(0)
    for i in range(n):
        v = best_iou[i]
        if v > 1 or v < 0:
            print(f" Wrong label: i = {i}, box_w = {float(points[i, 0]):f}, box_h = {float(points[i, 1]):f}, "
                  f"anchor_w = {float(centers[best[i], 0]):f}, anchor_h = {float(centers[best[i], 1]):f}, "
                  f"iou = {float(v):f} ", file=out)
        else:
            avg = F32(avg + v)

    counters = ", ".join(str(c) for c in counts)
    print(f"\ncounters_per_class = {counters}", file=out)
    atomic_write_text(os.path.join(workdir, "counters_per_class.txt"), f"counters_per_class = {counters}")
    avg = F32(F32(100) * avg / F32(n))
    print(f"\n avg IoU = {float(avg):2.2f} % ", file=out)

    fmt = "%3.0f,%3.0f" if width > 32 else "%2.4f,%2.4f"
    text = ", ".join(fmt % (float(w), float(h)) for w, h in centers)
    print("\nSaving anchors to the file: anchors.txt ", file=out)
    print(f"anchors = {text}", file=out)
    atomic_write_text(os.path.join(workdir, "anchors.txt"), text)
    result = {"anchors": centers, "avg_iou": float(avg), "iterations": iterations, "counts": counts,
              "assignments": assign, "text": text}
    if show:
        path = os.path.join(workdir, "cloud.png")
        atomic_write_bytes(path, cloud_png(points, centers, assign, width, height))
        print(f"Saved {path}", file=out)
        result["cloud"] = path
    out.flush()
    return result


def cloud_png(points, centers, assign, width: int, height: int, size: int = 700) -> bytes:
    """Upstream show_acnhors' picture: each box a dot at (w, h) coloured by its cluster,
    each anchor a white rectangle from the origin, on a 700x700 canvas (PNG bytes)."""
    import cv2

    img = np.zeros((size, size, 3), np.uint8)
    for (w, h), c in zip(points, assign):
        x, y = int(float(w) * size / width), int(float(h) * size / height)
        c = int(c)
        rgb = ((c * 123 + 55) % 255, (c * 321 + 33) % 255, (c * 11 + 99) % 255)
        cv2.circle(img, (x, y), 1, (rgb[2], rgb[1], rgb[0]), cv2.FILLED, cv2.LINE_8)
    for w, h in centers:
        cv2.rectangle(img, (0, 0), (int(float(w) * size / width), int(float(h) * size / height)),
                      (255, 255, 255), 1, cv2.LINE_8)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise EvalError("cloud.png: cannot encode the picture")
    return buf.tobytes()
