"""Upstream: main (src/darknet.c) and run_detector (src/detector.c).

The command line a darknet user knows: `detector test|train|valid|map|calc_anchors|recall|demo`,
`partial`, and darknet_py's own `export` (ONNX), with upstream's positional arguments and
single-dash flags, which (as upstream's find_arg) may appear anywhere. Every error a user can
cause is printed as one line naming the file (and line and key where there is one); no traceback.
"""
from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

from .cfg import CfgError, read_data_cfg
from .devices import DeviceError
from .flags import FlagError, Flags, UsageError, c_atoi
from .image import ImageError
from .outputs.weights import WeightsError

USAGE = """usage: darknet.py <function> ...   (darknet.py --help: the flags)
  detector test|train|valid|map|recall|calc_anchors|demo|draw DATA CFG [WEIGHTS] ...
  classifier train|valid|validmulti|valid10|validcrop|validfull|predict|label|test|demo|try DATA CFG [WEIGHTS] ...
  detect CFG WEIGHTS [IMAGE]        classify CFG WEIGHTS [IMAGE]
  partial CFG WEIGHTS OUT N         average CFG OUT WEIGHTS1 WEIGHTS2 ...
  rescale|rgbgr|reset|normalize|denormalize|oneoff CFG WEIGHTS OUT
  statistics CFG WEIGHTS            ops CFG           speed CFG [N]
  visualize CFG [WEIGHTS]           imtest|test IMAGE
  rnn train|generate|valid|vec CFG [WEIGHTS] [-file F] [-seed S] [-len N] [-temp T] [-srand N]
  export CFG WEIGHTS OUT.onnx       (darknet_py's own)"""
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


def _own_trainer_flags(f: Flags, a: SimpleNamespace) -> None:
    """darknet_py's own flags of the commands that train and run networks (README)."""
    a.train_flavor = f.str("-train_flavor", None)
    if a.train_flavor not in (None, "cpu", "cudnn"):
        raise UsageError(f"-train_flavor {a.train_flavor}: must be cudnn (upstream's GPU build, the default) or cpu")
    seed = f.str("-seed", None)  # an int for the trainers (rnn's -seed is its text)
    if seed is not None and not _is_int(seed):
        raise UsageError(f"-seed {seed}: must be an integer")
    a.seed = None if seed is None else int(seed)
    a.workers = f.int("-workers", None)
    a.nogpu = f.flag("-nogpu")
    a.no_tf32 = f.flag("-no_tf32")
    a.tf32 = f.flag("-tf32")


def _is_int(word: str) -> bool:
    try:
        int(word)
        return True
    except ValueError:
        return False


def detector_flags(f: Flags) -> SimpleNamespace:
    """Upstream's run_detector reads these, in this order, before its positional arguments."""
    a = SimpleNamespace(i=f.gpu_index)
    a.dont_show = f.flag("-dont_show")
    a.benchmark = f.flag("-benchmark")
    a.benchmark_layers = f.flag("-benchmark_layers")
    if a.benchmark:
        a.dont_show = True
    a.show = f.flag("-show")
    a.letter_box = f.flag("-letter_box")
    a.map = f.flag("-map")
    a.points = f.int("-points", 0)
    a.show_imgs = f.flag("-show_imgs")
    a.mjpeg_port = f.int("-mjpeg_port", -1)
    a.avgframes = f.int("-avgframes", 3)
    a.dontdraw_bbox = f.flag("-dontdraw_bbox")
    a.json_port = f.int("-json_port", -1)
    a.http_post_host = f.str("-http_post_host", None)
    a.time_limit_sec = f.int("-time_limit_sec", 0)
    a.out_filename = f.str("-out_filename", None)
    a.json_file_output = f.str("-json_file_output", None)
    a.out = f.str("-out", None)
    a.prefix = f.str("-prefix", None)
    a.thresh = f.float("-thresh", 0.25)
    a.iou_thresh = f.float("-iou_thresh", 0.5)
    a.hier = f.float("-hier", 0.5)
    a.c = f.int("-c", 0)
    a.s = f.int("-s", 0)
    a.num_of_clusters = f.int("-num_of_clusters", 5)
    a.width = f.int("-width", -1)
    a.height = f.int("-height", -1)
    a.ext_output = f.flag("-ext_output")
    a.save_labels = f.flag("-save_labels")
    a.chart = f.str("-chart", None)
    a.mAP_epochs = f.int("-mAP_epochs", 4)
    a.gpus = f.str("-gpus", None)
    a.clear = f.flag("-clear")
    _own_trainer_flags(f, a)
    return a


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
    net.benchmark_layers = args.benchmark_layers
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
            if not args.dont_show:  # a window where a display exists (display.py), as upstream
                from .display import show_and_wait
                show_and_wait("predictions", drawn)
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
              flavor=args.train_flavor, seed=args.seed, workers=args.workers, benchmark_layers=args.benchmark_layers,
              mjpeg_port=args.mjpeg_port)
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


def export(f: Flags) -> int:
    """darknet_py's own `export CFG WEIGHTS OUT.onnx` (darknet_py/export.py)."""
    from .outputs.export import ExportError, export_onnx
    from .network import build_network

    args = SimpleNamespace(batch=f.int("-batch", 1), width=f.int("-width", 0), height=f.int("-height", 0),
                           dynamic=f.flag("-dynamic"), postprocess=f.flag("-postprocess"),
                           thresh=f.float("-thresh", 0.25))
    args.positional = f.positional("export")[1:]
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
        demo(pos[1], weights, names, classes, video, thresh=args.thresh, cam_index=args.c, frame_skip=args.s,
             prefix=args.prefix, out_filename=args.out_filename, dont_show=args.dont_show or args.benchmark,
             ext_output=args.ext_output, letter_box=args.letter_box, time_limit_sec=args.time_limit_sec,
             json_file_output=args.json_file_output, dontdraw_bbox=args.dontdraw_bbox, benchmark=args.benchmark,
             mjpeg_port=args.mjpeg_port, json_port=args.json_port, http_post_host=args.http_post_host,
             benchmark_layers=args.benchmark_layers, device=_eval_device(args))
        return 0
    return _eval_call(run, args)

# ================================================================= end of evaluation commands


def draw_cmd(args) -> int:
    """Upstream's `detector draw` (draw_object): you draw an object's box on the image with the
    mouse, then the image itself is optimized for that box (an adversarial example); it needs
    OpenCV windows and CUDA in upstream. darknet_py does not provide it yet."""
    raise UsageError("detector draw: not provided by darknet_py (upstream's interactive adversarial drawing "
                     "needs a window to draw the box in with the mouse)")


DETECTOR_SUBCOMMANDS = ("test", "train", "map", "valid", "recall", "calc_anchors", "demo", "draw")


def detector(f: Flags) -> int:
    args = detector_flags(f)
    words = f.peek()
    if len(words) < 3:  # upstream: argc < 4 (its argv[0] is the program), before the sub-command is looked at
        raise UsageError("usage: darknet.py detector [train/test/valid/demo/map] [data] [cfg] [weights (optional)]")
    sub = words[1]
    args.positional = f.positional(f"detector {sub}")[2:]
    args.argv = f.line_without_command  # the command line again, for train's processes (train/distributed.py)
    commands = {"test": test_detector, "train": train, "map": map_cmd, "valid": valid_cmd, "recall": recall_cmd,
                "calc_anchors": calc_anchors_cmd, "demo": demo_cmd, "draw": draw_cmd}
    if sub not in commands:
        # upstream prints " There isn't such command: X" and exits 0; a script deserves a status
        raise UsageError(f" There isn't such command: {sub} (detector commands: {', '.join(DETECTOR_SUBCOMMANDS)})")
    return commands[sub](args)


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
                          "test", "demo", "try")


def classifier_flags(f: Flags) -> SimpleNamespace:
    """Upstream's run_classifier reads these, in this order."""
    a = SimpleNamespace(i=f.gpu_index)
    a.mjpeg_port = f.int("-mjpeg_port", -1)
    a.gpus = f.str("-gpus", None)
    a.dont_show = f.flag("-dont_show")
    a.benchmark = f.flag("-benchmark")
    a.benchmark_layers = f.flag("-benchmark_layers")
    if a.benchmark_layers:
        a.benchmark = True
    a.dontuse_opencv = f.flag("-dontuse_opencv")
    a.show_imgs = f.flag("-show_imgs")
    a.topk = f.flag("-topk")
    a.c = f.int("-c", 0)
    a.t = f.int("-t", 0)
    a.clear = f.flag("-clear")
    a.chart = f.str("-chart", None)
    _own_trainer_flags(f, a)
    return a


def classifier(f: Flags) -> int:
    """Upstream: run_classifier (src/classifier.c)."""
    usage = (f"usage: darknet.py classifier [{'/'.join(CLASSIFIER_SUBCOMMANDS)}] DATA CFG [WEIGHTS] [IMAGE]")
    args = classifier_flags(f)
    words = f.peek()
    if len(words) < 2 or words[1] not in CLASSIFIER_SUBCOMMANDS:
        sub = words[1] if len(words) > 1 else ""
        raise UsageError(f"classifier {sub}: not available in darknet_py\n{usage}" if sub else usage)
    sub = words[1]
    args.positional = f.positional(f"classifier {sub}")[2:]
    args.argv = f.line_without_command
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
              workers=args.workers, mjpeg_port=args.mjpeg_port)
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
    elif sub == "try":  # upstream: the layer's index is the 5th positional (atoi; -1 when missing)
        layer = c_atoi(pos[4]) if len(pos) > 4 else -1
        ev.try_classifier(datacfg, cfgfile, weights, filename, layer, device=device)
    elif sub == "label":
        ev.label_classifier(datacfg, cfgfile, weights, device=device)
    elif sub == "test":
        ev.test_classifier(datacfg, cfgfile, weights, device=device)
    else:
        ev.demo_classifier(datacfg, cfgfile, weights, args.c, filename, benchmark=args.benchmark,
                           benchmark_layers=args.benchmark_layers, dont_show=args.dont_show, mjpeg_port=args.mjpeg_port,
                           device=device)
    return 0


def _upstream_data_file(path: str, command: str) -> str:
    import os

    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file ({command} reads upstream's {path} from the current directory: "
                         "run it from the darknet_py folder)")
    return path


def detect(f: Flags) -> int:
    """Upstream's `detect CFG WEIGHTS [IMAGE]`: detector test with cfg/coco.data; main reads only
    -thresh (default .24) and -ext_output for it."""
    args = SimpleNamespace(i=f.gpu_index, thresh=f.float("-thresh", 0.24), ext_output=f.flag("-ext_output"),
                           hier=0.5, dont_show=False, save_labels=False, out=None, letter_box=False, gpus=None,
                           benchmark_layers=False)
    _own_trainer_flags(f, args)
    pos = f.positional("detect")[1:]
    if len(pos) < 2:
        raise UsageError("usage: darknet.py detect CFG WEIGHTS [IMAGE] [-thresh T] [-ext_output]")
    args.positional = [_upstream_data_file("cfg/coco.data", "detect")] + pos
    return test_detector(args)


def classify(f: Flags) -> int:
    """Upstream's `classify CFG WEIGHTS [IMAGE]`: classifier predict with cfg/imagenet1k.data, top 5
    (main reads no flag for it)."""
    args = SimpleNamespace(i=f.gpu_index, gpus=None, t=5)
    _own_trainer_flags(f, args)
    pos = f.positional("classify")[1:]
    if len(pos) < 2:
        raise UsageError("usage: darknet.py classify CFG WEIGHTS [IMAGE]")
    args.positional = [_upstream_data_file("cfg/imagenet1k.data", "classify")] + pos
    return _eval_call(lambda a: classifier_eval("predict", a), args)

# ================================================================ end of classifier commands


# upstream's old demo programs (src/yolo.c, coco.c, cifar.c, go.c, ...): trained on data sets of their
# own, with windows and cameras, not part of darknet's documented use; darknet_py does not provide them
NOT_PROVIDED = ("yolo", "coco", "cifar", "go", "vid", "art", "tag", "compare", "dice", "writing", "captcha",
                "nightmare", "super", "voxel", "3d")


def _commands() -> dict:
    from . import tools
    from .train.rnn import rnn_command
    return {"detector": detector, "classifier": classifier, "detect": detect, "classify": classify,
            "export": export, "rnn": rnn_command, **tools.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cmd = argv[0] if argv else None
        rest = argv[1:]
        if cmd in ("-h", "--help", "help") or (cmd in ("detector", "classifier", "detect", "classify")
                                               and rest[-1:] in (["-h"], ["--help"])):
            print(HELP)
            print(CLASSIFIER_HELP)
            return 0
        f = Flags(argv)
        f.gpu_index = f.int("-i", 0)  # upstream's main reads -i before the command (`-i 1 detector test ...`)
        if f.flag("-cuda_debug_sync"):  # upstream: synchronize after every CUDA call, to find a failing kernel
            os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
        if not f.words:
            raise UsageError(USAGE)
        cmd = f.words[0]
        line = list(argv)
        line.remove(cmd)
        f.line_without_command = line
        commands = _commands()
        if cmd in commands:
            return commands[cmd](f)
        if cmd in NOT_PROVIDED:
            print(f"darknet.py {cmd}: upstream's `{cmd}` demo program is not provided by darknet_py\n{USAGE}",
                  file=sys.stderr)
            return 2
        raise UsageError(f"Not an option: {cmd}\n{USAGE}")
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except FlagError as e:
        print(f"Error: {e}", file=sys.stderr)
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
