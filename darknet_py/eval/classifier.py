"""Upstream: validate_classifier_single / _10 / _multi / _full / _crop, predict_classifier,
label_classifier, test_classifier, demo_classifier (src/classifier.c); top_k (src/utils.c);
hierarchy_predictions, change_leaves (src/tree.c).

`classifier valid DATA CFG WEIGHTS`: each image of `valid` resized so that its shorter side
is the network width, its centre cropped to the network size and classified; its class is
the first label (of `labels`) whose name the path contains; a line per image,
`N: top 1: A, top K: B` (K = `top`, at most `classes`). validmulti / valid10 / validfull /
validcrop are upstream's other ways to look at each image. `predict` prints the top `-t N`
(default `top`) `name: prob` lines of one image (or of each path read from standard input),
`label` the best class name of each image of `test`, `test` every class value of each image
of `test`, `demo` the top classes of each video frame.

Bad data: an image that cannot be read, or (valid) whose path contains no label name, is
reported on stderr and left out of the averages (upstream: a blank image / a wrong answer).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .. import image as imagelib
from ..cfg import read_data_cfg
from ..image import ImageError
from .common import EvalError, c_nan_str, load_eval_network, read_valid_list


# ------------------------------------------------------------------------------ helpers
def top_k(values, k: int) -> list[int]:
    """Upstream's top_k: the indices of k largest values, largest first.

    Upstream inserts each value in index order into k slots, carrying a displaced value on
    to the following slots, where it only displaces a strictly smaller one: among equal
    values the result is NOT simply "earlier index first" ([0, 0, 1], k=2 gives 2, 1).
    Values below the k-th largest act like empty slots there, so only the others are run."""
    a = np.asarray(values, dtype=np.float32).reshape(-1)
    k = min(k, a.size)
    if k <= 0:
        return []
    kth = np.partition(a, a.size - k)[a.size - k]
    index = [-1] * k
    for curr in np.flatnonzero(~(a < kth)).tolist():
        for j in range(k):
            if index[j] < 0 or a[curr] > a[index[j]]:
                index[j], curr = curr, index[j]
    return index


def hierarchy_predictions(pred: np.ndarray, hierarchy, only_leaves: bool) -> np.ndarray:
    """Each node's probability times its parent's (in node order: the parent's is already
    absolute); with only_leaves, 0 for every node that is not a leaf."""
    pred = np.array(pred, dtype=np.float32)
    n = min(len(pred), len(hierarchy.parents))
    for j in range(n):
        parent = hierarchy.parents[j]
        if parent >= 0:
            pred[j] *= pred[parent]
    if only_leaves:
        pred[:n][~np.asarray(hierarchy.leaf[:n], dtype=bool)] = 0
    return pred


def label_of(path: str, labels: list[str]) -> int:
    """The first label whose name the path contains (valid's class_id), -1 if none."""
    return next((j for j, name in enumerate(labels) if name in path), -1)


def center_crop(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """resize_min to w, then the centre w x h window (valid, predict, label)."""
    resized = imagelib.resize_min(im, w)
    _, rh, rw = resized.shape
    return imagelib.crop_image(resized, (rw - w) // 2, (rh - h) // 2, w, h)


class Classifier:
    """A network for the classifier commands (batch 1, inference, fused) with the data file's
    labels, classes and top, and the network's hierarchy (`leaves` applied)."""

    def __init__(self, datacfg, cfgfile: str | None = None, weightfile: str | None = None, net=None,
                 device=None, err=None, labels_key: str = "labels"):
        from ..data.classifier import Hierarchy, read_label_names

        self.data = datacfg if hasattr(datacfg, "str") else read_data_cfg(datacfg)
        self.err = err or sys.stderr
        self.net = net if net is not None else load_eval_network(cfgfile, weightfile, device)
        self.classes = self.data.int("classes", 2)
        self.hierarchy = Hierarchy.from_network(self.net)
        if self.hierarchy is not None and self.data.has("leaves"):
            leaves = read_valid_list(self.data.str("leaves"), "leaves")
            self.hierarchy = self.hierarchy.with_leaves(leaves)
            print(f"Found {sum(self.hierarchy.leaf)} leaves.", file=self.err)
        self.labels_path = self._labels_path(labels_key)
        self.labels = read_label_names(self.labels_path)

    def _labels_path(self, key: str) -> str:
        if key == "names":  # predict / demo: names, else labels
            if self.data.has("names") and self.data.str("names"):
                return self.data.str("names")
            key = "labels"
        return self.data.str(key, "data/labels.list")

    def top(self, custom: int = 0) -> int:
        return min(custom if custom > 0 else self.data.int("top", 1), self.classes)

    @property
    def size(self) -> tuple[int, int]:
        return self.net.options.width, self.net.options.height

    def predict(self, x: np.ndarray, only_leaves: bool = True, net=None) -> np.ndarray:
        pred = (net or self.net).predict(x)
        if self.hierarchy is not None:
            pred = hierarchy_predictions(pred, self.hierarchy, only_leaves)
        return pred

    def load(self, path: str, w: int = 0, h: int = 0):
        """The image, or None (reported) when it cannot be read."""
        try:
            return imagelib.load_image_color(path, w, h)
        except ImageError as e:
            print(f"Cannot load image {path}: {e.message}; skipped", file=self.err)
            return None

    def check_classes(self, out) -> None:
        """Upstream's check that a last [softmax] / [cost] layer has `classes` outputs."""
        last = self.net.layers[-1]
        if last.type_name in ("softmax", "cost") and last.outputs != self.classes:
            print(f"\n Error: num of filters = {last.outputs} in the last conv-layer in cfg-file doesn't match to "
                  f"classes = {self.classes} in data-file ", file=out)
            raise EvalError(f"{self.net.path}: the last layer has {last.outputs} outputs but the data file says "
                            f"classes={self.classes}")


class _Accuracy:
    """Top-1 and top-K counts over the images seen so far."""

    def __init__(self, topk: int):
        self.topk, self.n, self.top1, self.hits = topk, 0, 0, 0

    def add(self, pred, class_id: int, classes: int) -> None:
        best = top_k(np.asarray(pred)[:classes], self.topk)
        self.n += 1
        self.top1 += best[0] == class_id
        self.hits += class_id in best

    def line(self) -> str:
        return f"{self.n - 1}: top 1: {self.top1 / self.n:f}, top {self.topk}: {self.hits / self.n:f}"


# ------------------------------------------------------------------------------ valid
def validate_classifier_single(datacfg, cfgfile: str | None = None, weightfile: str | None = None, net=None,
                               topk_custom: int = -1, out=None, err=None, device=None) -> float:
    """Upstream: validate_classifier_single: top-1 and top-K accuracy over `valid`, returns
    the top-K one. With `net` (the training loop's -topk) that network is used in inference
    mode and each line overwrites the previous one (\\r), as upstream."""
    out = out or sys.stdout
    existing = net is not None
    c = Classifier(datacfg, cfgfile, weightfile, net=net, device=device, err=err)
    print(" TOP calculation...", file=out)
    acc = _Accuracy(c.top(topk_custom))
    was_training = c.net.training
    c.net.eval()
    try:
        for path, class_id in _labelled(c, c.data.str("valid", "data/train.list")):
            im = c.load(path)
            if im is None:
                continue
            acc.add(c.predict(center_crop(im, *c.size)), class_id, c.classes)
            print(("\r" if existing else "\n") + acc.line(), end="", file=out, flush=True)
    finally:
        c.net.train(was_training)
    if not existing:
        print(file=out)
    return acc.hits / acc.n if acc.n else 0.0


def _labelled(c: Classifier, list_path: str):
    """(path, class) for each image of the list whose path names a label; the others reported."""
    for path in read_valid_list(list_path):
        class_id = label_of(path, c.labels)
        if class_id < 0:
            print(f"{path}: no label name ({c.labels_path}) in the path; skipped", file=c.err)
            continue
        yield path, class_id


def validate_classifier_views(datacfg, cfgfile, weightfile, how: str, out=None, err=None, device=None) -> float:
    """Upstream: validate_classifier_10 (`valid10`: the corners and centre of the image
    resized to network size + 32, and of its mirror), _multi (`validmulti`: the whole image
    at shorter sides 224, 288, 320, 352, 384 and mirrored), _full (`validfull`: the whole
    image at shorter side = network width): the predictions of each image's views summed.
    A line per image; returns the top-K accuracy."""
    out = out or sys.stdout
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err)
    acc = _Accuracy(c.top())
    for path, class_id in _labelled(c, c.data.str("valid", "data/train.list")):
        im = c.load(path)
        if im is None:
            continue
        acc.add(sum(_view_predictions(c, im, how)), class_id, c.classes)
        print(acc.line(), file=out, flush=True)
    return acc.hits / acc.n if acc.n else 0.0


MULTI_SCALES = (224, 288, 320, 352, 384)
TEN_CROP_SHIFT = 32


def _view_predictions(c: Classifier, im: np.ndarray, how: str):
    w, h = c.size
    if how == "10":
        big = imagelib.resize_image(im, w + TEN_CROP_SHIFT, h + TEN_CROP_SHIFT)
        s = TEN_CROP_SHIFT
        for src in (big, imagelib.flip_image(big)):
            for dx, dy in ((-s, -s), (s, -s), (0, 0), (-s, s), (s, s)):
                yield c.predict(imagelib.crop_image(src, dx, dy, w, h))
        return
    for size in (MULTI_SCALES if how == "multi" else (w,)):
        r = imagelib.resize_min(im, size)
        net = c.net.resized(r.shape[2], r.shape[1])
        yield c.predict(r, net=net)
        if how == "multi":  # the mirrored view, without the hierarchy (as upstream)
            yield net.predict(imagelib.flip_image(r))


def validate_classifier_crop(datacfg, cfgfile, weightfile, out=None, err=None, device=None) -> float:
    """Upstream: validate_classifier_crop (`validcrop`): images resized to the network size,
    classified in parts of about 1000 (upstream needs at least 1000 images; here fewer make
    one part); per part `I: top 1: A, top K: B, S seconds, N images` with the mean of the
    parts' accuracies so far. Returns the top-K mean."""
    out = out or sys.stdout
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err)
    topk = c.top()
    paths = list(_labelled(c, c.data.str("valid", "data/train.list")))
    splits = max(len(paths) // 1000, 1)
    sum1 = sumk = 0.0
    for i in range(splits):
        t0 = time.time()
        part = paths[i * len(paths) // splits:(i + 1) * len(paths) // splits]
        images = [(c.load(p, *c.size), cid) for p, cid in part]
        images = [(x, cid) for x, cid in images if x is not None]
        print(f"Loaded: {len(images)} images in {time.time() - t0:f} seconds", file=out)
        t0 = time.time()
        acc = _Accuracy(topk)
        for x, cid in images:
            acc.add(c.predict(x), cid, c.classes)
        n = max(acc.n, 1)
        sum1, sumk = sum1 + acc.top1 / n, sumk + acc.hits / n
        print(f"{i + 1}: top 1: {sum1 / (i + 1):f}, top {topk}: {sumk / (i + 1):f}, {time.time() - t0:f} seconds, "
              f"{len(images)} images", file=out, flush=True)
    return sumk / splits


# ------------------------------------------------------------------------------ predict
def _input_paths(filename: str | None, out):
    """The one image path given, or paths read from standard input after the prompt."""
    if filename:
        yield filename.rstrip("\r")
        return
    while True:
        print("Enter Image Path: ", end="", file=out, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        yield line.rstrip("\r\n")


def _input_images(c: Classifier, filename: str | None, out):
    """(path, image) of each input path; an unreadable one is reported and skipped, or, when it is
    the one image named on the command line, an EvalError."""
    for path in _input_paths(filename, out):
        im = c.load(path)
        if im is None:
            if filename:
                raise EvalError(f"{path}: cannot load the image")
            continue
        yield path, im


def predict_classifier(datacfg, cfgfile: str, weightfile: str | None, filename: str | None = None, top: int = 0,
                       out=None, err=None, device=None) -> int:
    """Upstream: predict_classifier: the top `top` classes of each image (`name: prob`, or
    with a hierarchy `index, name: prob, parent: NAME`). Returns how many images were read."""
    out = out or sys.stdout
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err, labels_key="names")
    print(f" classes = {c.classes}, output in cfg = {c.net.layers[-1].c} ", file=out)
    c.check_classes(out)
    top = c.top(top)
    done = 0
    for path, im in _input_images(c, filename, out):
        x = center_crop(im, *c.size)
        print(f"{x.shape[2]} {x.shape[1]}", file=out)
        t0 = time.perf_counter()
        pred = c.predict(x, only_leaves=False)
        print(f"{path}: Predicted in {(time.perf_counter() - t0) * 1000:f} milli-seconds.", file=out)
        for index in top_k(pred, top):
            name = c.labels[index] if index < len(c.labels) else str(index)
            if c.hierarchy is not None:
                parent = c.hierarchy.parents[index]
                pname = c.labels[parent] if parent >= 0 else "Root"
                print(f"{index}, {name}: {c_nan_str(pred[index], '%f')}, parent: {pname} ", file=out)
            else:
                print(f"{name}: {c_nan_str(pred[index], '%f')}", file=out)
        out.flush()
        done += 1
    return done


# upstream's try_classifier normalizes its 224x224 centre crop with these ImageNet statistics
_TRY_MEAN = np.array([0.48263312050943, 0.45230225481413, 0.40099074308742], np.float32)
_TRY_STD = np.array([0.22590347483426, 0.22120921437787, 0.22103996251583], np.float32)


def try_classifier(datacfg, cfgfile: str, weightfile: str | None, filename: str | None, layer_num: int,
                   out=None, err=None, device=None) -> int:
    """Upstream: try_classifier: the image's shorter side resized to 256, the centre 224x224
    window normalized by ImageNet's mean and variance (normalize_cpu, + .00001), then layer
    `layer_num`'s rolling statistics and scales and its whole output printed, one number a line,
    and the top classes. The network is built at 224x224, the size upstream's crop feeds it."""
    from ..network import build_network

    out = out or sys.stdout
    net = build_network(cfgfile, batch=1, width=224, height=224, quiet=True)
    if weightfile:
        net.load_weights(weightfile, verbose=False)
    net.eval()
    if device is not None:
        net.to(device)
    if not -len(net.layers) <= layer_num < len(net.layers):
        raise EvalError(f"classifier try: layer {layer_num} does not exist ({cfgfile} has {len(net.layers)} layers)")
    c = Classifier(datacfg, net=net, err=err, labels_key="names")
    top = c.top()
    layer = net.layers[layer_num]
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    var = (_TRY_STD * _TRY_STD).astype(np.float32)
    try:
        for path, im in _input_images(c, filename, out):
            r = imagelib.resize_min(im, 256)
            x = imagelib.crop_image(r, imagelib._c_div(r.shape[2] - 224 - 1, 2) + 1,
                                    imagelib._c_div(r.shape[1] - 224 - 1, 2) + 1, 224, 224)
            x = (x - _TRY_MEAN[:, None, None]) / np.sqrt(var + np.float32(.00001))[:, None, None]
            t0 = time.process_time()
            pred = c.predict(x.astype(np.float32), only_leaves=False)
            if getattr(layer, "bn", False):
                stats = [t.detach().cpu().numpy() for t in (layer.rolling_mean, layer.rolling_variance, layer.scales)]
                for i in range(min(layer.c, len(stats[0]))):  # upstream loops over l.c (its input channels)
                    print(f"{stats[0][i]:f} {stats[1][i]:f} {stats[2][i]:f}", file=out)
            for v in seen["out"].detach().float().cpu().reshape(-1).numpy():
                print(c_nan_str(v, "%f"), file=out)
            print(f"{path}: Predicted in {time.process_time() - t0:f} seconds.", file=out)
            for index in top_k(pred, top):
                name = c.labels[index] if index < len(c.labels) else str(index)
                print(f"{name}: {c_nan_str(pred[index], '%f')}", file=out)
            out.flush()
            if filename:
                break
    finally:
        hook.remove()
    return 0


def label_classifier(datacfg, cfgfile: str, weightfile: str | None, out=None, err=None, device=None) -> int:
    """Upstream: label_classifier (`label`): the best class's name (from `names`) of each
    image of `test`, centre-cropped as valid."""
    out = out or sys.stdout
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err, labels_key="names")
    n = 0
    for path in read_valid_list(c.data.str("test", "data/train.list"), "test"):
        im = c.load(path)
        if im is None:
            continue
        pred = c.net.predict(center_crop(im, *c.size))
        print(c.labels[int(np.argmax(pred[:c.classes]))], file=out)
        n += 1
    return n


def test_classifier(datacfg, cfgfile: str, weightfile: str | None, out=None, err=None, device=None) -> int:
    """Upstream: test_classifier: each image of `test` (default data/test.list) resized to
    the network size, then its path and every output value (`\\t%g`) on one line; timing on
    stderr. Upstream's loop never prints its last batch; here every image is printed."""
    out, err = out or sys.stdout, err or sys.stderr
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err, labels_key="names")
    paths = read_valid_list(c.data.str("test", "data/test.list"), "test")
    batch = max(1, c.net.options.mini_batch)
    done = 0
    for start in range(0, len(paths), batch):
        t0 = time.time()
        part = [(p, c.load(p, *c.size)) for p in paths[start:start + batch]]
        part = [(p, x) for p, x in part if x is not None]
        print(f"Loaded: {len(part)} images in {time.time() - t0:f} seconds", file=err)
        t0 = time.time()
        for p, x in part:
            print(p + "".join(f"\t{v:g}" for v in c.net.predict(x)), file=out)
        done += len(part)
        print(f"{time.time() - t0:f} seconds, {len(part)} images, {done} total", file=err)
    return done


# ------------------------------------------------------------------------------ demo
def demo_classifier(datacfg, cfgfile: str, weightfile: str | None, cam_index: int = 0, filename: str | None = None,
                    benchmark: bool = False, dont_show: bool = False, mjpeg_port: int = -1, out=None, err=None,
                    device=None, benchmark_layers: bool = False) -> dict:
    """Upstream: demo_classifier: each frame of the video (or camera -c N) resized to the
    network, classified, its top classes printed (`NN.N%: name`) with the FPS; shown in a
    window unless -dont_show (or no display). -benchmark classifies a blank image as fast as
    it can. -mjpeg_port N streams the frames (darknet_py/stream.py). Returns {"frames", "avg_fps"}."""
    import cv2

    from .demo import close_streams, open_streams, show_frame

    out = out or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    print("Classifier Demo", file=out)
    c = Classifier(datacfg, cfgfile, weightfile, device=device, err=err, labels_key="names")
    if benchmark_layers:
        c.net.benchmark_layers = True
    top = c.top()
    w, h = c.size
    cap = None
    if not benchmark:
        cap = cv2.VideoCapture(filename) if filename else cv2.VideoCapture(cam_index)
        if not cap.isOpened():
            raise EvalError(f"{filename}: cannot open this video" if filename else
                            f"camera {cam_index}: Couldn't connect to webcam.")
    show = not (dont_show or benchmark)
    mjpeg = open_streams(mjpeg_port if not benchmark else -1, out=out)[0]
    blank = np.zeros((3, h, w), np.float32)
    fps = avg_fps = 0.0
    frames = counter = 0
    start = t_start = time.perf_counter()
    try:
        while True:
            if benchmark:
                x, frame = blank, None
                if frames >= 1000:
                    break
            else:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                small = cv2.resize(frame[:, :, :3], (w, h), interpolation=cv2.INTER_LINEAR)
                x = np.ascontiguousarray(small[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
            t0 = time.perf_counter()
            pred = c.predict(x)
            curr = 1.0 / max(time.perf_counter() - t0, 1e-9)
            frames += 1
            counter += 1
            if tty:
                print("\033[H\033[J", end="", file=out)
            if benchmark:
                print(f"\rFPS: {fps:.2f} \t AVG_FPS = {avg_fps:.2f} ", end="", file=out)
            else:
                print(f"\rFPS: {fps:.2f}  (use -benchmark command line flag for correct measurement)", file=out)
                for index in top_k(pred, top):
                    print(f"{pred[index] * 100:.1f}%: {c.labels[index]}", file=out)
                print(file=out)
            if show:
                show, esc = show_frame("Classifier", frame, 10)
                if esc:
                    break
            if mjpeg is not None and frame is not None:
                mjpeg.push(frame)
                print(" MJPEG-stream sent. ", file=out)
            fps = curr if fps == 0 else 0.9 * fps + 0.1 * curr
            spent = time.perf_counter() - start
            if spent >= 3.0:
                avg_fps = counter / spent
                counter = 0
                start = time.perf_counter()
    finally:
        close_streams(mjpeg)
        if cap is not None:
            cap.release()
        if show:
            from .. import display
            display.destroy_all()
    elapsed = time.perf_counter() - t_start
    print(f"\n{frames} frames in {elapsed:.2f} s", file=out)
    return {"frames": frames, "avg_fps": frames / elapsed if elapsed > 0 else 0.0}


__all__ = ["Classifier", "try_classifier", "top_k", "hierarchy_predictions", "label_of", "center_crop", "validate_classifier_single",
           "validate_classifier_views", "validate_classifier_crop", "predict_classifier", "label_classifier",
           "test_classifier", "demo_classifier"]
