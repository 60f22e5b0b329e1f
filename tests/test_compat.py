"""darknet.py imported: upstream's Python module surface (darknet_py/compat.py).

The fixture network (tests/data/map) is used the way upstream's darknet_images.py and
darknet_video.py use darknet.py: cv2 frame -> RGB -> resize to the network size ->
make_image + copy_image_from_bytes -> detect_image -> print_detections / draw_boxes, and the
batch path (network_predict_batch + do_nms_obj + remove_negatives). Expected values are
what those scripts print over upstream's libdarknet (CPU build) for the same files.

If upstream's scripts can be found (env DARKNET_UPSTREAM: a darknet checkout or bare git
repository; by default the local mirror), they are also run unchanged against our
darknet.py.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import darknet  # noqa: E402  (tests/conftest.py puts the repository root on sys.path)
from darknet_py import compat  # noqa: E402
from darknet_py.outputs.detections import network_boxes, nms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAP = Path(__file__).resolve().parent / "data" / "map"
CFG, DATA, WEIGHTS = "map-yolov4-tiny.cfg", "obj.data", "trained.weights"
IMAGES = ["val/v0.png", "val/v1_flip.png", "val/v2_shift.png", "val/v3_vflip.png"]

# upstream darknet_images.py --input val.txt --thresh .05 --ext_output --dont_show over
# libdarknet (FPS lines left out)
UPSTREAM_THRESH_05 = """
Objects:
truck: 99.4%    (left_x: 97   top_y:  27   width:   37   height:  21)
dog: 99.67%    (left_x: 36   top_y:  85   width:   30   height:  70)
bicycle: 99.78%    (left_x: 58   top_y:  62   width:   74   height:  67)

Objects:
truck: 12.2%    (left_x: 100   top_y:  86   width:   20   height:  24)
truck: 19.96%    (left_x: 100   top_y:  54   width:   22   height:  25)
truck: 58.85%    (left_x: 100   top_y:  23   width:   25   height:  23)
truck: 8.3%    (left_x: 69   top_y:  18   width:   22   height:  15)

Objects:
truck: 18.24%    (left_x: 113   top_y:  26   width:   34   height:  29)
dog: 33.1%    (left_x: 78   top_y:  79   width:   33   height:  35)
bicycle: 41.84%    (left_x: 84   top_y:  55   width:   37   height:  129)
dog: 95.09%    (left_x: 39   top_y:  82   width:   29   height:  63)
bicycle: 97.13%    (left_x: 52   top_y:  60   width:   105   height:  85)
truck: 97.23%    (left_x: 98   top_y:  25   width:   32   height:  22)

Objects:
truck: 13.0%    (left_x: 100   top_y:  86   width:   21   height:  23)
truck: 14.71%    (left_x: 100   top_y:  54   width:   22   height:  24)
truck: 41.16%    (left_x: 100   top_y:  23   width:   23   height:  22)
truck: 6.13%    (left_x: 40   top_y:  84   width:   21   height:  16)
truck: 7.76%    (left_x: 70   top_y:  19   width:   21   height:  15)
"""

# the --save_labels file upstream writes for val/v1_flip.png at --thresh .05
UPSTREAM_LABELS_V1_FLIP = """\
2 0.7848 0.6724 0.1589 0.1837 12.2000
2 0.7840 0.4221 0.1692 0.1933 19.9600
2 0.7823 0.1821 0.1977 0.1764 58.8500
2 0.5427 0.1433 0.1741 0.1200 8.3000
"""


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def loaded():
    """(network, class_names, class_colors) as darknet_images.py loads them (cwd = the
    fixture folder: obj.data names obj.names relative to it, as upstream reads it)."""
    old = os.getcwd()
    os.chdir(MAP)
    try:
        random.seed(3)
        return darknet.load_network(CFG, DATA, WEIGHTS, batch_size=1)
    finally:
        os.chdir(old)


def network_frame(network, path):
    """A BGR file -> RGB resized to the network size (what the scripts feed darknet)."""
    w, h = darknet.network_width(network), darknet.network_height(network)
    rgb = cv2.cvtColor(cv2.imread(str(MAP / path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def detect(network, class_names, path, **kw):
    w, h = darknet.network_width(network), darknet.network_height(network)
    image = darknet.make_image(w, h, 3)
    darknet.copy_image_from_bytes(image, network_frame(network, path).tobytes())
    try:
        return darknet.detect_image(network, class_names, image, **kw)
    finally:
        darknet.free_image(image)


def predicted(network, path):
    """An IMAGE of `path` after predict_image (freed by the caller)."""
    w, h = darknet.network_width(network), darknet.network_height(network)
    image = darknet.make_image(w, h, 3)
    darknet.copy_image_from_bytes(image, network_frame(network, path).tobytes())
    darknet.predict_image(network, image)
    return image


# ---------------------------------------------------------------------------- the module
def test_import_prints_nothing_and_starts_nothing(tmp_path):
    code = ("import threading, darknet; "
            "assert threading.active_count() == 1, threading.enumerate(); "
            "print(len(darknet.__all__))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.strip().isdigit()


def test_module_surface():
    for name in ("load_network", "network_width", "network_height", "make_image",
                 "copy_image_from_bytes", "free_image", "predict_image", "detect_image",
                 "network_predict_batch", "free_batch_detections", "get_network_boxes",
                 "free_detections", "do_nms_sort", "do_nms_obj", "remove_negatives",
                 "remove_negatives_faster", "decode_detection", "non_max_suppression_fast",
                 "print_detections", "draw_boxes", "bbox2points", "class_colors", "lib",
                 "load_net", "load_net_custom", "load_meta", "load_image", "letterbox_image",
                 "rgbgr_image", "predict_image_letterbox", "make_network_boxes", "network_predict",
                 "predict", "set_gpu", "init_cpu", "reset_rnn", "free_ptrs", "free_network_ptr",
                 "IMAGE", "DETECTION", "DETNUMPAIR", "METADATA", "BOX", "FloatPtr", "IntPtr",
                 "DETECTIONPtr", "DETNUMPAIRPtr", "POINTER", "pointer", "c_float", "c_int"):
        assert hasattr(darknet, name), name
    fields = lambda s: [f[0] for f in s._fields_]  # noqa: E731
    assert fields(darknet.BOX) == ["x", "y", "w", "h"]
    assert fields(darknet.IMAGE) == ["w", "h", "c", "data"]
    assert fields(darknet.METADATA) == ["classes", "names"]
    assert fields(darknet.DETNUMPAIR) == ["num", "dets"]
    assert fields(darknet.DETECTION) == ["bbox", "classes", "best_class_idx", "prob", "mask", "objectness",
                                         "sort_class", "uc", "points", "embeddings", "embedding_size", "sim",
                                         "track_id"]
    assert darknet.lib.network_predict_image is darknet.predict_image


def test_load_network(loaded):
    network, class_names, colors = loaded
    assert class_names == ["bicycle", "dog", "truck"]
    assert (darknet.network_width(network), darknet.network_height(network)) == (128, 128)
    random.seed(3)  # class_colors draws (b, g, r) per name, in order, from `random`
    assert colors == {n: (random.randint(0, 255), random.randint(0, 255), random.randint(0, 255))
                      for n in class_names}


def test_load_meta(monkeypatch):
    monkeypatch.chdir(MAP)
    meta = darknet.load_meta(DATA)
    assert meta.classes == 3
    assert [meta.names[i] for i in range(meta.classes)] == [b"bicycle", b"dog", b"truck"]


# ---------------------------------------------------------------------------- detect_image
def test_detect_image_matches_upstream_test_log(loaded):
    # test_ext.log (upstream CLI, same image): "truck: 59%  (left_x: 87 top_y: 12 width: 25 height: 23)"
    network, class_names, _ = loaded
    found = detect(network, class_names, "val/v1_flip.png", thresh=.25)
    assert len(found) == 1
    label, confidence, (x, y, w, h) = found[0]
    assert label == "truck" and confidence == "58.85"
    assert round(float(confidence)) == 59
    assert (round(x - w / 2), round(y - h / 2), round(w), round(h)) == (87, 12, 25, 23)


def test_detect_image_prints_what_upstream_prints(loaded, capsys):
    network, class_names, _ = loaded
    for path in IMAGES:
        darknet.print_detections(detect(network, class_names, path, thresh=.05), True)
    assert capsys.readouterr().out.strip() == UPSTREAM_THRESH_05.strip()


def test_detect_image_format_and_order(loaded):
    network, class_names, _ = loaded
    found = detect(network, class_names, "val/v3_vflip.png", thresh=.01, nms=.45)
    assert found == sorted(found, key=lambda d: d[1])  # by the confidence *string*, as upstream
    for label, confidence, box in found:
        assert label in class_names
        assert re.fullmatch(r"\d{1,3}\.\d{1,2}", confidence)
        assert isinstance(box, tuple) and len(box) == 4 and all(isinstance(v, float) for v in box)
    assert [d[1] for d in found] != sorted((d[1] for d in found), key=float)  # '6.13' after '41.16'
    # nms=0 skips do_nms_sort (upstream over libdarknet: 4 detections in v0.png, 3 with NMS)
    assert len(detect(network, class_names, "val/v0.png", thresh=.25, nms=0)) == 4
    assert len(detect(network, class_names, "val/v0.png", thresh=.25)) == 3


def test_predict_image_resizes_and_returns_the_last_output(loaded):
    network, _, _ = loaded
    small = darknet.make_image(64, 48, 3)
    darknet.copy_image_from_bytes(small, cv2.resize(network_frame(network, "val/v0.png"), (64, 48)).tobytes())
    out = darknet.predict_image(network, small)
    last = network.outputs[len(network.model.layers) - 1]
    assert [out[i] for i in range(5)] == last[:5].tolist()
    darknet.free_image(small)
    darknet.free_image(small)  # a second free is harmless (C would crash)


# ---------------------------------------------------------------------------- DETECTION arrays
def test_get_network_boxes_fills_detection_structs(loaded):
    network, class_names, _ = loaded
    image = predicted(network, "val/v2_shift.png")
    pnum = darknet.pointer(darknet.c_int(0))
    dets = darknet.get_network_boxes(network, 640, 480, .05, .5, None, 0, pnum, 0)
    num = pnum[0]
    ours, _, _, classes = network_boxes(network.model, network.outputs, .05, .5, 640, 480, False, False)
    assert num == len(ours) > 0 and classes == 3
    for i in range(num):
        d = dets[i]
        assert (d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h) == tuple(ours.boxes[i].tolist())
        assert [d.prob[k] for k in range(classes)] == ours.probs[i].tolist()
        assert d.objectness == float(ours.objectness[i]) and d.classes == 3
        assert d.best_class_idx == 0 and not d.uc and not d.mask  # as libdarknet leaves a [yolo] detection
    faster = darknet.remove_negatives_faster(dets, class_names, num)
    assert [f[0] for f in faster] == ["bicycle"] * num
    darknet.free_detections(dets, num)

    relative = darknet.get_network_boxes(network, 640, 480, .05, .5, None, 1, pnum, 0)
    assert abs(relative[0].bbox.x * 640 - ours.boxes[0, 0]) < 1e-3
    darknet.free_detections(relative, pnum[0])
    darknet.free_image(image)


def test_do_nms_sort_in_place(loaded):
    network, class_names, _ = loaded
    image = predicted(network, "val/v0.png")
    pnum = darknet.pointer(darknet.c_int(0))
    dets = darknet.get_network_boxes(network, 128, 128, .005, .5, None, 0, pnum, 0)
    num = pnum[0]
    before = [((d.bbox.x, d.bbox.y), [d.prob[k] for k in range(3)]) for d in (dets[i] for i in range(num))]
    darknet.do_nms_sort(dets, num, len(class_names), .45)
    after = [((d.bbox.x, d.bbox.y), [d.prob[k] for k in range(3)], d.sort_class)
             for d in (dets[i] for i in range(num))]
    # the same boxes, each with its suppressed probs zeroed, sorted by the last class's prob
    ours, _, _, _ = network_boxes(network.model, network.outputs, .005, .5, 128, 128, False, False)
    kept = nms(ours, 3, .45)
    expected = {tuple(b[:2].tolist()): p.tolist() for b, p in zip(ours.boxes, kept.probs)}
    assert sorted(a[0] for a in after) == sorted(b[0] for b in before)
    assert all(expected[xy] == probs for xy, probs, _ in after)
    assert any(b[1] != expected[b[0]] for b in before)  # something was suppressed
    last = [probs[2] for _, probs, _ in after]
    assert last == sorted(last, reverse=True)
    assert {s for _, _, s in after} == {2}
    removed = darknet.remove_negatives(dets, class_names, num)
    assert all(p > 0 for _, p, _ in removed)
    assert len(removed) == sum(p > 0 for _, probs, _ in after for p in probs)
    darknet.free_detections(dets, num)
    darknet.free_image(image)


def test_batch_prediction_as_darknet_images_does_it(loaded):
    """network_predict_batch on concatenated CHW frames, then do_nms_obj + remove_negatives
    per image: the same detections as one image at a time."""
    network, class_names, _ = loaded
    w, h = darknet.network_width(network), darknet.network_height(network)
    frames = [network_frame(network, p) for p in IMAGES[:3]]
    batch = np.ascontiguousarray(np.concatenate([f.transpose(2, 0, 1) for f in frames]).flat,
                                 dtype=np.float32) / 255.0
    image = darknet.IMAGE(200, 150, 3, batch.ctypes.data_as(darknet.POINTER(darknet.c_float)))
    pairs = darknet.network_predict_batch(network, image, 3, 200, 150, .1, .5, None, 0, 0)
    for i, path in enumerate(IMAGES[:3]):
        num, dets = pairs[i].num, pairs[i].dets
        darknet.do_nms_obj(dets, num, len(class_names), .45)
        got = darknet.remove_negatives(dets, class_names, num)

        single = predicted(network, path)
        pnum = darknet.pointer(darknet.c_int(0))
        one = darknet.get_network_boxes(network, 200, 150, .1, .5, None, 0, pnum, 0)
        darknet.do_nms_obj(one, pnum[0], len(class_names), .45)
        want = darknet.remove_negatives(one, class_names, pnum[0])
        darknet.free_detections(one, pnum[0])
        darknet.free_image(single)

        assert [g[0] for g in got] == [x[0] for x in want]
        assert np.allclose([g[1] for g in got], [x[1] for x in want], atol=1e-4)
        assert np.allclose([g[2] for g in got], [x[2] for x in want], atol=1e-2)
        # do_nms_obj left the structs by objectness, highest first (suppressed ones now 0)
        objectness = [dets[j].objectness for j in range(num) if dets[j].objectness]
        assert objectness == sorted(objectness, reverse=True)
    darknet.free_batch_detections(pairs, 3)


# ---------------------------------------------------------------------------- helpers
def test_python_helpers(capsys):
    assert darknet.bbox2points((10.0, 20.0, 5.0, 8.0)) == (8, 16, 12, 24)  # round() halves to even
    assert darknet.decode_detection([("dog", 0.58851, (1, 2, 3, 4)), ("cat", 1.0, (0, 0, 1, 1))]) == \
        [("dog", "58.85", (1, 2, 3, 4)), ("cat", "100.0", (0, 0, 1, 1))]
    darknet.print_detections([("dog", "58.85", (10.4, 20.6, 5.0, 8.0))])
    darknet.print_detections([("dog", "58.85", (10.4, 20.6, 5.0, 8.0))], coordinates=True)
    assert capsys.readouterr().out == ("\nObjects:\ndog: 58.85%\n\nObjects:\n"
                                       "dog: 58.85%    (left_x: 10   top_y:  21   width:   5   height:  8)\n")
    dets = [("a", "90", (50, 50, 20, 20)), ("b", "80", (52, 51, 20, 20)), ("c", "70", (10, 10, 8, 8))]
    kept = darknet.non_max_suppression_fast(dets, 0.5)
    assert sorted(k[0] for k in kept) == ["b", "c"]  # the box lower in the image wins
    assert darknet.non_max_suppression_fast([], 0.5) == []
    image = np.zeros((64, 64, 3), np.uint8)
    drawn = darknet.draw_boxes([("a", "90.0", (32.0, 32.0, 20.0, 20.0))], image, {"a": (0, 255, 0)})
    assert drawn is image and image[22, 30, 1] == 255


def test_image_helpers(tmp_path):
    im = darknet.load_image(str(MAP / "val" / "v0.png"), 64, 32)
    assert (im.w, im.h, im.c) == (64, 32, 3)
    pixels = np.ctypeslib.as_array(im.data, shape=(3, 32, 64)).copy()
    darknet.rgbgr_image(im)
    assert np.array_equal(np.ctypeslib.as_array(im.data, shape=(3, 32, 64)), pixels[::-1])
    boxed = darknet.letterbox_image(im, 64, 64)
    assert (boxed.w, boxed.h) == (64, 64)
    assert np.ctypeslib.as_array(boxed.data, shape=(3, 64, 64))[0, 0, 0] == np.float32(0.5)
    for image in (im, boxed):
        darknet.free_image(image)


def test_copy_image_from_bytes_values():
    frame = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10  # h=2, w=4, HWC
    image = darknet.make_image(4, 2, 3)
    darknet.copy_image_from_bytes(image, frame.tobytes())
    data = np.ctypeslib.as_array(image.data, shape=(3, 2, 4))
    assert np.array_equal(data, (frame.transpose(2, 0, 1) / 255.).astype(np.float32))
    darknet.free_image(image)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("which", ["cfg", "data", "weights"])
def test_missing_files_name_the_file(tmp_path, monkeypatch, which):
    monkeypatch.chdir(MAP)
    files = {"cfg": CFG, "data": DATA, "weights": WEIGHTS}
    files[which] = str(tmp_path / f"missing.{which}")
    with pytest.raises(Exception) as err:
        darknet.load_network(files["cfg"], files["data"], files["weights"])
    assert f"missing.{which}" in str(err.value)


def test_names_file_shorter_than_classes(tmp_path):
    (tmp_path / "two.names").write_text("a\nb\n")
    (tmp_path / "x.data").write_text(f"classes=3\nnames={tmp_path / 'two.names'}\n")
    with pytest.raises(ValueError, match="two.names"):
        darknet.load_network(str(MAP / CFG), str(tmp_path / "x.data"), str(MAP / WEIGHTS))


def test_wrong_frame_size_names_the_sizes(loaded):
    network, class_names, _ = loaded
    image = darknet.make_image(128, 128, 3)
    frame = np.zeros((480, 640, 3), np.uint8)  # not resized to the network size
    with pytest.raises(ValueError) as err:
        darknet.copy_image_from_bytes(image, frame.tobytes())
    assert "921600" in str(err.value) and "128 x 128 x 3" in str(err.value)
    with pytest.raises(ValueError, match=r"\(480, 640, 3\)"):
        darknet.copy_image_from_bytes(image, frame)
    with pytest.raises(TypeError):
        darknet.copy_image_from_bytes(image, "not bytes")
    darknet.free_image(image)


def test_boxes_before_any_prediction(loaded):
    fresh = compat.NetworkHandle(loaded[0].model)
    with pytest.raises(RuntimeError, match="predict"):
        darknet.get_network_boxes(fresh, 128, 128, .5, .5, None, 0, darknet.pointer(darknet.c_int(0)), 0)
    with pytest.raises(TypeError):
        darknet.network_width("not a network")


def test_threads_like_darknet_video(loaded):
    """Frames prepared in one thread (make_image + copy_image_from_bytes), detected and freed
    in another, as darknet_video.py does."""
    import queue

    network, class_names, _ = loaded
    q: queue.Queue = queue.Queue(maxsize=1)
    results = []

    def capture():
        for path in IMAGES * 2:
            image = darknet.make_image(128, 128, 3)
            darknet.copy_image_from_bytes(image, network_frame(network, path).tobytes())
            q.put(image)
        q.put(None)

    def infer():
        while (image := q.get()) is not None:
            results.append(darknet.detect_image(network, class_names, image, thresh=.25))
            darknet.free_image(image)

    threads = [threading.Thread(target=capture), threading.Thread(target=infer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8 and results[:4] == results[4:]
    assert results[1] == detect(network, class_names, IMAGES[1], thresh=.25)


# ---------------------------------------------------------------------------- upstream's scripts
def _upstream_scripts(dest: Path) -> bool:
    """Copy upstream's darknet_images.py and darknet_video.py into `dest` (not darknet.py)."""
    source = Path(os.environ.get("DARKNET_UPSTREAM", "/work/.mirror/AlexeyAB+darknet/repo"))
    names = ("darknet_images.py", "darknet_video.py")
    if all((source / n).is_file() for n in names):
        for n in names:
            shutil.copy(source / n, dest / n)
        return True
    if (source / "HEAD").is_file() and shutil.which("git"):
        for n in names:
            run = subprocess.run(["git", f"--git-dir={source}", "show", f"HEAD:{n}"], capture_output=True)
            if run.returncode:
                return False
            (dest / n).write_bytes(run.stdout)
        return True
    return False


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("upstream_scripts")
    if not _upstream_scripts(scripts):
        pytest.skip("upstream's darknet_images.py / darknet_video.py not found (set DARKNET_UPSTREAM)")
    work = tmp_path_factory.mktemp("fixture") / "map"
    shutil.copytree(MAP, work)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return scripts, work, env


def test_upstream_darknet_images_script(upstream):
    scripts, work, env = upstream
    assert not (scripts / "darknet.py").exists()
    run = subprocess.run(
        [sys.executable, str(scripts / "darknet_images.py"), "--input", "val.txt", "--batch_size", "2",
         "--save_labels", "--weights", WEIGHTS, "--config_file", CFG, "--data_file", DATA,
         "--dont_show", "--ext_output", "--thresh", ".05"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("FPS"))
    assert printed.strip() == UPSTREAM_THRESH_05.strip()
    assert (work / "val" / "v1_flip.txt").read_text() == UPSTREAM_LABELS_V1_FLIP


def test_upstream_darknet_video_script(upstream, tmp_path):
    scripts, work, env = upstream
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 192))
    for path in IMAGES * 2:
        writer.write(cv2.resize(cv2.imread(str(MAP / path)), (256, 192)))
    writer.release()
    out = tmp_path / "out.avi"
    run = subprocess.run(
        [sys.executable, str(scripts / "darknet_video.py"), "--input", str(clip), "--weights", WEIGHTS,
         "--config_file", CFG, "--data_file", DATA, "--dont_show", "--out_filename", str(out)],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("Objects:") >= 6 and "truck" in run.stdout
    assert run.stdout.rstrip().endswith("Done.")
    assert out.stat().st_size > 0
