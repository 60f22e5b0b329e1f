"""Upstream: main (src/darknet.c) and run_detector (src/detector.c).

The command line a darknet user knows: `detector test|train|valid|map|calc_anchors|recall|demo`,
`partial`, and darknet_py's own `export` (ONNX), with upstream's positional arguments and
single-dash flags, which (as upstream's find_arg) may appear anywhere. Every error a user can
cause is printed as one line naming the file (and line and key where there is one); no traceback.
"""
from __future__ import annotations

import argparse
import sys
import time

from .cfg import CfgError, read_data_cfg
from .devices import DeviceError
from .image import ImageError
from .outputs.weights import WeightsError

USAGE = ("usage: darknet.py <function>\n  functions: detector [test|train|valid|map|calc_anchors|recall|demo] ..., "
         "partial CFG WEIGHTS OUT N, export CFG WEIGHTS OUT.onnx")
EXPORT_USAGE = ("usage: darknet.py export CFG WEIGHTS OUT.onnx [-batch N] [-width W -height H] [-dynamic] "
                "[-postprocess [-thresh T]]")


HELP = """darknet.py: upstream darknet's command line (AlexeyAB/darknet), on PyTorch.

  darknet.py detector train DATA CFG [WEIGHTS] [-map] [-dont_show] [-clear] [-gpus 0,1] [-chart F]
                                                [-mAP_epochs N] [-show_imgs] [-train_flavor cudnn|cpu] [-seed N]
                                                [-workers N]
  darknet.py detector test DATA CFG WEIGHTS [IMAGE] [-thresh T] [-ext_output] [-dont_show] [-letter_box] [-out F]
  darknet.py detector map|valid|recall DATA CFG WEIGHTS [-thresh T] [-iou_thresh T] [-points N] [-letter_box]
  darknet.py detector calc_anchors DATA -num_of_clusters N -width W -height H [-show]
  darknet.py detector demo DATA CFG WEIGHTS VIDEO [-out_filename F] [-dont_show]
  darknet.py partial CFG WEIGHTS OUT N

Flags are upstream's (single dash, anywhere on the line). Device: GPU 0 when CUDA is present,
-gpus 0,1 / -i 1 to pick, -nogpu for the CPU. darknet_py's own:
  -train_flavor cudnn  (default) train with the arithmetic of upstream's GPU build, the one people
                       train with: batch norm as cuDNN computes it (batch-normalized layers' biases
                       trained, running statistics with factor .01), a convolution's backward adding
                       to the gradient of the layer before it (gradients through routes and shortcuts
                       kept), every layer's gradient cleared each pass. On any device.
  -train_flavor cpu    the arithmetic of upstream's CPU build (the parity fixtures were made with it):
                       it never trains the biases of batch-normalized layers, a convolution's
                       backward overwrites the gradient of the layer before it, and route/upsample
                       gradients are never cleared, so it learns poorly; use it to reproduce that build.
  -seed N              reproducible initialisation, augmentation and multi-scale sizes.
  -no_tf32 / -tf32     training allows TF32 on Ampere+ GPUs (cuDNN's default, as upstream's build);
                       -no_tf32 turns it off. test/map/valid compute in strict float32 unless -tf32.
  -workers N           data loading threads (default: one per CPU core, at most 8; 0: none, load
                       each batch in the training thread).
"""


class UsageError(Exception):
    pass


def detector_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darknet.py detector", add_help=False, allow_abbrev=False)
    flag = lambda name: p.add_argument(name, action="store_true")
    for name in ("-dont_show", "-benchmark", "-benchmark_layers", "-show", "-letter_box", "-map", "-show_imgs",
                 "-dontdraw_bbox", "-ext_output", "-save_labels", "-clear"):
        flag(name)
    p.add_argument("-points", type=int, default=0)
    p.add_argument("-mjpeg_port", type=int, default=-1)
    p.add_argument("-avgframes", type=int, default=3)
    p.add_argument("-json_port", type=int, default=-1)
    p.add_argument("-http_post_host")
    p.add_argument("-time_limit_sec", type=int, default=0)
    p.add_argument("-out_filename")
    p.add_argument("-json_file_output")
    p.add_argument("-out")
    p.add_argument("-prefix")
    p.add_argument("-thresh", type=float, default=0.25)
    p.add_argument("-iou_thresh", type=float, default=0.5)
    p.add_argument("-hier", type=float, default=0.5)
    p.add_argument("-c", type=int, default=0)
    p.add_argument("-s", type=int, default=0)
    p.add_argument("-num_of_clusters", type=int, default=5)
    p.add_argument("-width", type=int, default=-1)
    p.add_argument("-height", type=int, default=-1)
    p.add_argument("-chart")
    p.add_argument("-mAP_epochs", type=int, default=4)
    p.add_argument("-gpus")
    # darknet_py's own: which upstream build's training arithmetic to follow (see README)
    p.add_argument("-train_flavor", choices=("cpu", "cudnn"))
    p.add_argument("-seed", type=int)  # darknet_py's own: reproducible initialisation and augmentation
    p.add_argument("-workers", type=int)  # darknet_py's own: data loading threads (default: one per core, <= 8)
    p.add_argument("-i", type=int, default=0)
    p.add_argument("-nogpu", action="store_true")
    # darknet_py's own: TF32 on Ampere+ GPUs (training: on, as cuDNN's default; elsewhere: off)
    p.add_argument("-no_tf32", action="store_true")
    p.add_argument("-tf32", action="store_true")
    p.add_argument("positional", nargs="*")
    return p


def read_names(data_path: str) -> tuple[list[str], str]:
    """The names file a data file points to (upstream's get_labels_custom)."""
    from .eval.common import read_names_file

    return read_names_file(read_data_cfg(data_path))


def test_detector(args) -> int:
    from . import image as imagelib
    from .network import announce_detection_layers, load_network

    pos = args.positional
    if len(pos) < 2:
        raise UsageError("usage: darknet.py detector test DATA CFG [WEIGHTS] [IMAGE] [-thresh T] [-ext_output] "
                         "[-dont_show] [-letter_box] [-out result.json]")
    datacfg, cfgfile = pos[0], pos[1]
    weightfile = pos[2] if len(pos) > 2 and pos[2] else None
    filename = pos[3] if len(pos) > 3 else None
    names, names_path = read_names(datacfg)
    net = load_network(cfgfile, weightfile, device=_device(args))
    letter = bool(args.letter_box or net.options.letter_box)
    classes = getattr(net.layers[-1], "classes", None)
    if classes is not None and classes != len(names):
        print(f"\n Error: in the file {names_path} number of names {len(names)} that isn't equal to "
              f"classes={classes} in the file {cfgfile} ")
    json_file = open(args.out, "w") if args.out else None
    if json_file:
        json_file.write("[\n")
    image_id = 0
    try:
        while True:
            if filename:
                path = filename.rstrip("\r")
            else:
                print("Enter Image Path: ", end="", flush=True)
                line = sys.stdin.readline()
                if not line:
                    break
                path = line.rstrip("\r\n")
            try:
                im = imagelib.load_image_color(path)
            except ImageError as e:
                print(f"Cannot load image \"{path}\": {e}", file=sys.stderr)
                if filename:
                    return 1
                continue
            c, h, w = im.shape
            sized = (imagelib.letterbox_image if letter else imagelib.resize_image)(im, net.options.width, net.options.height)
            announce_detection_layers(net)
            t0 = time.perf_counter()
            dets = net.detect(sized, thresh=args.thresh, nms=0.45, hier_thresh=args.hier, im_w=w, im_h=h, letter=letter,
                              keep_all=True)
            print(f"{path}: Predicted in {(time.perf_counter() - t0) * 1000:f} milli-seconds.")
            imagelib.print_detections(dets, names, args.thresh, w, h, args.ext_output)
            drawn = imagelib.draw_detections(im, dets, names, args.thresh)
            imagelib.save_image(drawn, "predictions")
            if json_file:
                if image_id:
                    json_file.write(", \n")
                image_id += 1
                json_file.write(detection_json(dets, names, image_id, path))
            if args.save_labels:
                save_labels(dets, names, args.thresh, path)
            if filename:
                break
    finally:
        if json_file:
            json_file.write("\n]")
            json_file.close()
    return 0


def train(args) -> int:
    from .train.loop import train_detector

    pos = args.positional
    if len(pos) < 2:
        raise UsageError("usage: darknet.py detector train DATA CFG [WEIGHTS] [-map] [-dont_show] [-clear] "
                         "[-gpus 0,1] [-chart chart.png] [-mAP_epochs N]")
    weights = pos[2] if len(pos) > 2 and pos[2] else None
    from .devices import parse_gpus

    gpus = parse_gpus(args.gpus)
    kw = dict(clear=args.clear, dont_show=args.dont_show, calc_map=args.map, thresh=args.thresh,
              iou_thresh=args.iou_thresh, show_imgs=args.show_imgs, chart=args.chart, map_epochs=args.mAP_epochs,
              flavor=args.train_flavor, seed=args.seed, workers=args.workers)
    # --- several processes (train/distributed.py): -gpus with several ids, or under torchrun ---
    from .train import distributed
    if distributed.requested(gpus):
        why = distributed.bad_gpu_ids(gpus) if not distributed.torchrun_env() else None
        if why:
            raise UsageError(why)
        return distributed.train(pos[0], pos[1], weights, gpus=gpus, argv=getattr(args, "argv", None), entry=main,
                                 **kw)
    # --- end ---
    return train_detector(pos[0], pos[1], weights, device=_device(args, training=True), **kw)


def detection_json(dets, names, frame_id, filename) -> str:
    """Upstream's detection_to_json text (src/network.c), prob > 0.005, skipping 'dont_show' names."""
    head = f'{{\n "frame_id":{frame_id}, \n "filename":"{filename}", \n "objects": [ \n'
    items = []
    for d in dets:
        for j, p in sorted(d["probs"].items()):
            if p > 0.005 and not names[j].startswith("dont_show"):
                items.append(f'  {{"class_id":{j}, "name":"{names[j]}", "relative_coordinates":{{"center_x":{d["x"]:f}, '
                             f'"center_y":{d["y"]:f}, "width":{d["w"]:f}, "height":{d["h"]:f}}}, "confidence":{p:f}}}')
    return head + ", \n".join(items) + "\n ] \n}"


def save_labels(dets, names, thresh, image_path) -> None:
    from .data_paths import image_to_label_path
    lines = []
    for d in dets:
        best = max(((p, j) for j, p in d["probs"].items() if p > thresh), default=None)
        if best is not None:
            lines.append(f"{best[1]} {d['x']:2.4f} {d['y']:2.4f} {d['w']:2.4f} {d['h']:2.4f}\n")
    from .outputs.fileio import atomic_write_text
    atomic_write_text(image_to_label_path(image_path), "".join(lines))


def partial(argv) -> int:
    from .network import build_network
    if len(argv) < 4:
        raise UsageError("usage: darknet.py partial CFG WEIGHTS OUTPUT N")
    cfgfile, weightfile, outfile = argv[0], argv[1], argv[2]
    try:
        cutoff = int(argv[3])
    except ValueError:
        raise UsageError(f"partial: N must be an integer, got '{argv[3]}'") from None
    net = build_network(cfgfile, batch=1)
    if weightfile:
        net.load_weights(weightfile, cutoff=cutoff)
    net.seen = 0
    net.save_weights(outfile, cutoff=cutoff)
    print(f"Saved {min(cutoff, len(net.layers))} layers to {outfile}")
    return 0


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darknet.py export", add_help=False, allow_abbrev=False)
    p.add_argument("-batch", type=int, default=1)
    p.add_argument("-width", type=int, default=0)
    p.add_argument("-height", type=int, default=0)
    p.add_argument("-dynamic", action="store_true")
    p.add_argument("-postprocess", action="store_true")
    p.add_argument("-thresh", type=float, default=0.25)
    p.add_argument("positional", nargs="*")
    return p


def export(argv) -> int:
    """darknet_py's own `export CFG WEIGHTS OUT.onnx` (darknet_py/export.py)."""
    from .outputs.export import ExportError, export_onnx
    from .network import build_network

    args = parse_flags(export_parser(), argv)
    if len(args.positional) < 3:
        raise UsageError(EXPORT_USAGE)
    cfgfile, weightfile, outfile = args.positional[:3]
    net = build_network(cfgfile, batch=1, width=args.width or None, height=args.height or None)
    if weightfile:
        net.load_weights(weightfile)
    net.eval()
    try:
        names = export_onnx(net, outfile, batch=args.batch, dynamic=args.dynamic, postprocess=args.postprocess,
                            thresh=args.thresh)
    except ExportError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    o = net.options
    batch = "N" if args.dynamic else args.batch
    print(f"Saved {outfile}: input {batch}x{o.channels}x{o.height}x{o.width}, outputs {', '.join(names)}")
    return 0


# ===================================================================== evaluation commands
# detector map / valid / recall / calc_anchors / demo (darknet_py/eval/). Errors in the
# user's input (EvalError, a bad list file) are printed as one line, exit status 1.

def _eval_call(fn, args) -> int:
    from .data.files import DataFileError
    from .eval.common import EvalError

    try:
        return fn(args)
    except (EvalError, DataFileError) as e:
        sys.stdout.flush()
        print(f"Error: {e}", file=sys.stderr)
        return 1


def _device(args, training: bool = False):
    """Upstream's device choice (-gpus, else -i, -nogpu; GPU 0 when CUDA is present) and its
    float32 math: TF32 allowed in training unless -no_tf32, strict elsewhere unless -tf32."""
    from .devices import configure, parse_gpus, select_device

    device = select_device(args.nogpu, parse_gpus(args.gpus), args.i)
    configure(device, tf32=not args.no_tf32 if training else args.tf32)
    return device


def _eval_device(args):
    return _device(args)


def _need(args, n: int, usage: str) -> list:
    if len(args.positional) < n:
        raise UsageError(usage)
    return args.positional


def map_cmd(args) -> int:
    def run(args):
        from .eval.map import map_from_files

        pos = _need(args, 2, "usage: darknet.py detector map DATA CFG WEIGHTS [-points 0|11|101] [-iou_thresh T] "
                             "[-thresh T] [-letter_box]")
        weights = pos[2] if len(pos) > 2 and pos[2] else None
        # upstream's run_detector passes -letter_box to `detector map`, but validate_detector_map
        # replaces it with the cfg's letter_box: the flag changes nothing there, nor here
        map_from_files(pos[0], pos[1], weights, thresh=args.thresh, iou_thresh=args.iou_thresh, points=args.points,
                       letter_box=False, device=_eval_device(args))
        return 0
    return _eval_call(run, args)


def valid_cmd(args) -> int:
    def run(args):
        from .eval.valid import validate_detector

        pos = _need(args, 2, "usage: darknet.py detector valid DATA CFG WEIGHTS [-out NAME]")
        weights = pos[2] if len(pos) > 2 and pos[2] else None
        validate_detector(pos[0], pos[1], weights, outfile=args.out, device=_eval_device(args))
        return 0
    return _eval_call(run, args)


def recall_cmd(args) -> int:
    def run(args):
        from .eval.recall import validate_detector_recall

        pos = _need(args, 2, "usage: darknet.py detector recall DATA CFG WEIGHTS")
        weights = pos[2] if len(pos) > 2 and pos[2] else None
        validate_detector_recall(pos[0], pos[1], weights, device=_eval_device(args))
        return 0
    return _eval_call(run, args)


def calc_anchors_cmd(args) -> int:
    def run(args):
        from .eval.anchors import calc_anchors

        pos = _need(args, 1, "usage: darknet.py detector calc_anchors DATA -num_of_clusters N -width W -height H "
                             "[-show]")
        calc_anchors(pos[0], args.num_of_clusters, args.width, args.height, show=args.show)
        return 0
    return _eval_call(run, args)


def demo_cmd(args) -> int:
    def run(args):
        from .cfg import read_data_cfg
        from .eval.common import read_names_file
        from .eval.demo import demo

        pos = _need(args, 2, "usage: darknet.py detector demo DATA CFG WEIGHTS [VIDEO] [-out_filename OUT] "
                             "[-dont_show] [-thresh T] [-ext_output] [-prefix NAME] [-c CAMERA]")
        weights = pos[2] if len(pos) > 2 and pos[2] else None
        video = pos[3].rstrip("\r") if len(pos) > 3 and pos[3] else None
        data = read_data_cfg(pos[0])
        classes = data.int("classes", 20)
        names, _ = read_names_file(data)
        for flag in ("mjpeg_port", "json_port"):
            if getattr(args, flag) > 0:
                print(f"Warning: -{flag} is not implemented by this demo; ignored", file=sys.stderr)
        if args.http_post_host:
            print("Warning: -http_post_host is not implemented by this demo; ignored", file=sys.stderr)
        demo(pos[1], weights, names, classes, video, thresh=args.thresh, cam_index=args.c, frame_skip=args.s,
             prefix=args.prefix, out_filename=args.out_filename, dont_show=args.dont_show or args.benchmark,
             ext_output=args.ext_output, letter_box=args.letter_box, time_limit_sec=args.time_limit_sec,
             json_file_output=args.json_file_output, dontdraw_bbox=args.dontdraw_bbox, benchmark=args.benchmark,
             device=_eval_device(args))
        return 0
    return _eval_call(run, args)

# ================================================================= end of evaluation commands


def parse_flags(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Flags anywhere among the positional arguments (upstream's find_arg); unknown flags are
    ignored with a warning, as upstream ignores them."""
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        args.positional += [u for u in unknown if not u.startswith("-")]
        bad = [u for u in unknown if u.startswith("-")]
        if bad:
            print(f"Warning: unknown flag(s) ignored: {' '.join(bad)}", file=sys.stderr)
    return args


def detector(argv) -> int:
    if not argv:
        raise UsageError("usage: darknet.py detector [train/test/valid/demo/map] [data] [cfg] [weights (optional)]")
    sub, rest = argv[0], argv[1:]
    args = parse_flags(detector_parser(), rest)
    args.argv = list(argv)  # the command line again, for train's processes (train/distributed.py)
    if sub == "test":
        return test_detector(args)
    if sub == "train":
        return train(args)
    # --- evaluation commands (darknet_py/eval/) ---
    if sub == "map":
        return map_cmd(args)
    if sub == "valid":
        return valid_cmd(args)
    if sub == "recall":
        return recall_cmd(args)
    if sub == "calc_anchors":
        return calc_anchors_cmd(args)
    if sub == "demo":
        return demo_cmd(args)
    # --- end of evaluation commands ---
    raise UsageError(f"detector {sub}: not available in this version of darknet_py (available: test, train, map, valid, recall, calc_anchors, demo)")


# ===================================================================== classifier commands
# `classifier train|valid|validmulti|valid10|validcrop|validfull|predict|label|test|demo`
# (train/classifier.py, eval/classifier.py) and upstream's shortcuts `detect` and `classify`.

CLASSIFIER_HELP = """  darknet.py classifier train DATA CFG [WEIGHTS] [-topk] [-dont_show] [-show_imgs] [-clear] [-gpus 0,1]
                                                  [-chart F] [-dontuse_opencv] [-train_flavor cudnn|cpu] [-seed N] [-workers N]
  darknet.py classifier valid|validmulti|valid10|validcrop|validfull DATA CFG WEIGHTS
  darknet.py classifier predict DATA CFG WEIGHTS [IMAGE] [-t TOP] [-dont_show]
  darknet.py classifier label|test DATA CFG WEIGHTS
  darknet.py classifier demo DATA CFG WEIGHTS [VIDEO] [-c CAMERA] [-benchmark] [-dont_show]
  darknet.py detect CFG WEIGHTS [IMAGE] [-thresh T] [-ext_output]   (detector test cfg/coco.data ...)
  darknet.py classify CFG WEIGHTS [IMAGE]                            (classifier predict cfg/imagenet1k.data ... -t 5)
"""

CLASSIFIER_SUBCOMMANDS = ("train", "valid", "validmulti", "valid10", "validcrop", "validfull", "predict", "label",
                          "test", "demo")


def classifier_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darknet.py classifier", add_help=False, allow_abbrev=False)
    for name in ("-dont_show", "-benchmark", "-benchmark_layers", "-dontuse_opencv", "-show_imgs", "-topk", "-clear",
                 "-nogpu"):
        p.add_argument(name, action="store_true")
    p.add_argument("-mjpeg_port", type=int, default=-1)
    p.add_argument("-gpus")
    p.add_argument("-c", type=int, default=0)
    p.add_argument("-t", type=int, default=0)
    p.add_argument("-chart")
    p.add_argument("-i", type=int, default=0)
    p.add_argument("-no_tf32", action="store_true")  # darknet_py's own, as for detector (devices.py)
    p.add_argument("-tf32", action="store_true")
    p.add_argument("-train_flavor", choices=("cpu", "cudnn"))  # darknet_py's own, as for detector train
    p.add_argument("-seed", type=int)
    p.add_argument("-workers", type=int)
    p.add_argument("positional", nargs="*")
    return p


def classifier(argv) -> int:
    """Upstream: run_classifier (src/classifier.c)."""
    usage = (f"usage: darknet.py classifier [{'/'.join(CLASSIFIER_SUBCOMMANDS)}] DATA CFG [WEIGHTS] [IMAGE]")
    if not argv:
        raise UsageError(usage)
    sub, rest = argv[0], argv[1:]
    if sub not in CLASSIFIER_SUBCOMMANDS:
        raise UsageError(f"classifier {sub}: not available in this version of darknet_py\n{usage}")
    args, unknown = classifier_parser().parse_known_intermixed_args(rest)
    args.argv = list(argv)
    if unknown:
        args.positional += [u for u in unknown if not u.startswith("-")]
        bad = [u for u in unknown if u.startswith("-")]
        if bad:
            print(f"Warning: unknown flag(s) ignored: {' '.join(bad)}", file=sys.stderr)
    if len(args.positional) < 2:
        raise UsageError(usage)
    if sub == "train":
        return classifier_train(args)
    return _eval_call(lambda a: classifier_eval(sub, a), args)


def classifier_train(args) -> int:
    from .train.classifier import train_classifier
    from .train import distributed

    from .devices import parse_gpus

    pos = args.positional
    weights = pos[2] if len(pos) > 2 and pos[2] else None
    gpus = parse_gpus(args.gpus)
    if args.gpus and not distributed.torchrun_env():  # upstream echoes -gpus once
        print(args.gpus)
    kw = dict(clear=args.clear, dont_show=args.dont_show, calc_topk=args.topk, show_imgs=args.show_imgs,
              chart=args.chart, dontuse_opencv=args.dontuse_opencv, flavor=args.train_flavor, seed=args.seed,
              workers=args.workers)
    if distributed.requested(gpus):
        why = distributed.bad_gpu_ids(gpus) if not distributed.torchrun_env() else None
        if why:
            raise UsageError(why)
        return distributed.train(pos[0], pos[1], weights, gpus=gpus, argv=args.argv, entry=main,
                                 command="classifier", **kw)
    from .data import DataError

    def run(_):
        try:
            return train_classifier(pos[0], pos[1], weights, device=_device(args, training=True), **kw)
        except DataError as e:  # no usable image in the list
            raise DataFileError(pos[0], str(e)) from None
    from .data.files import DataFileError
    return _eval_call(run, args)


def classifier_eval(sub: str, args) -> int:
    from .eval import classifier as ev

    pos = args.positional
    datacfg, cfgfile = pos[0], pos[1]
    weights = pos[2] if len(pos) > 2 and pos[2] else None
    filename = pos[3] if len(pos) > 3 and pos[3] else None
    device = _eval_device(args)
    if sub == "valid":
        ev.validate_classifier_single(datacfg, cfgfile, weights, device=device)
    elif sub in ("validmulti", "valid10", "validfull"):
        ev.validate_classifier_views(datacfg, cfgfile, weights, sub[5:], device=device)
    elif sub == "validcrop":
        ev.validate_classifier_crop(datacfg, cfgfile, weights, device=device)
    elif sub == "predict":
        ev.predict_classifier(datacfg, cfgfile, weights, filename, args.t, device=device)
    elif sub == "label":
        ev.label_classifier(datacfg, cfgfile, weights, device=device)
    elif sub == "test":
        ev.test_classifier(datacfg, cfgfile, weights, device=device)
    else:
        ev.demo_classifier(datacfg, cfgfile, weights, args.c, filename, benchmark=args.benchmark or
                           args.benchmark_layers, dont_show=args.dont_show, device=device)
    return 0


def _upstream_data_file(path: str, command: str) -> str:
    import os

    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file ({command} reads upstream's {path} from the current directory: "
                         "run it from the darknet_py folder)")
    return path


def detect(argv) -> int:
    """Upstream's `detect CFG WEIGHTS [IMAGE]`: detector test with cfg/coco.data, thresh .24."""
    args, unknown = detector_parser().parse_known_intermixed_args(argv)
    args.positional += [u for u in unknown if not u.startswith("-")]
    if not any(a == "-thresh" for a in argv):
        args.thresh = 0.24
    if len(args.positional) < 2:
        raise UsageError("usage: darknet.py detect CFG WEIGHTS [IMAGE] [-thresh T] [-ext_output]")
    args.positional = [_upstream_data_file("cfg/coco.data", "detect")] + args.positional
    return test_detector(args)


def classify(argv) -> int:
    """Upstream's `classify CFG WEIGHTS [IMAGE]`: classifier predict with cfg/imagenet1k.data, top 5."""
    args, unknown = classifier_parser().parse_known_intermixed_args(argv)
    args.positional += [u for u in unknown if not u.startswith("-")]
    if len(args.positional) < 2:
        raise UsageError("usage: darknet.py classify CFG WEIGHTS [IMAGE]")
    args.positional = [_upstream_data_file("cfg/imagenet1k.data", "classify")] + args.positional
    args.t = 5
    return _eval_call(lambda a: classifier_eval("predict", a), args)

# ================================================================ end of classifier commands


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            raise UsageError(USAGE)
        cmd, rest = argv[0], argv[1:]
        if cmd in ("-h", "--help", "help") or (cmd == "detector" and rest[:1] and rest[0] in ("-h", "--help")) \
                or (cmd == "detector" and len(rest) == 2 and rest[1] in ("-h", "--help")):
            print(HELP)
            print(CLASSIFIER_HELP)
            return 0
        if cmd == "detector":
            return detector(rest)
        if cmd in ("classifier", "detect", "classify"):  # classifier commands and upstream's shortcuts
            if rest[-1:] in (["-h"], ["--help"]):
                print(CLASSIFIER_HELP)
                return 0
            return {"classifier": classifier, "detect": detect, "classify": classify}[cmd](rest)
        if cmd == "partial":
            return partial(rest)
        if cmd == "export":
            return export(rest)
        raise UsageError(f"Not an option: {cmd}\n{USAGE}")
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (CfgError, WeightsError, ImageError, DeviceError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"Error: {e.filename}: no such file", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"Error: {getattr(e, 'filename', '') or ''} {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
