"""Upstream: demo (src/demo.c) with draw_detections_cv_v3 (src/image_opencv.cpp):
`detector demo DATA CFG WEIGHTS [VIDEO] [-out_filename out.avi] [-dont_show] [-thresh T]
[-ext_output] [-prefix NAME] [-json_file_output F] [-time_limit_sec S] [-c CAMERA] [-s SKIP]
[-mjpeg_port N] [-json_port N] [-http_post_host H]`.

Frames are read with OpenCV (a file, a stream URL, or camera -c N when no video is
given), resized (or letterboxed) to the network with cv2.resize as upstream's OpenCV
build, detected with hier_thresh = thresh and NMS 0.45, and drawn on the frame as
upstream draws them (box, label "name (NN%)"). Per frame the objects and the FPS are
printed ("Objects:", "name: NN%" lines, "FPS:x AVG_FPS:y"); -out_filename writes the
annotated video (DIVX fourcc as upstream for .avi, mp4v for .mp4, then the other
codecs OpenCV has), -prefix writes every frame to NAME_%08d.jpg, -json_file_output the
detections of every frame as a JSON array. -mjpeg_port streams the annotated frames,
-json_port the same JSON frames as -json_file_output, -http_post_host posts each frame's
objects (darknet_py/stream.py: servers beside the loop, which only hands frames over).

Unlike upstream, each frame is drawn with its own detections (upstream shows a frame
with the detections of a later one while its threads overlap capture and inference),
and the screen-clearing escape codes are only written to a terminal.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from ..outputs.detections import network_boxes
from ..layers.yolo import Yolo
from .common import F32, EvalError, load_eval_network, nms_in_upstream_order

DEMO_NMS = 0.45
_U8 = (np.arange(256, dtype=np.float64) / 255.0).astype(F32)


def _frame_to_input(frame: np.ndarray, netw: int, neth: int, letter: bool) -> np.ndarray:
    import cv2
    from .. import image as imagelib

    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if letter:
        im = np.ascontiguousarray(_U8[frame[:, :, 2::-1]].transpose(2, 0, 1))
        return imagelib.letterbox_image(im, netw, neth)
    small = cv2.resize(frame[:, :, :3], (netw, neth), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(_U8[small[:, :, ::-1]].transpose(2, 0, 1))


def show_frame(title: str, frame: np.ndarray, wait_ms: int) -> tuple[bool, bool]:
    """Show a frame in the window `title`: (still showing, Esc pressed). Without a display,
    a warning and no more showing (as -dont_show)."""
    from .. import display

    key = display.show(title, frame, wait_ms)
    if key is None:
        print("Warning: no display for the demo window; continuing as with -dont_show", file=sys.stderr)
        return False, False
    return True, key in (27, 1048603)


def _c_round_pct(p: float) -> str:
    return f"{float(F32(p) * F32(100)):.0f}"


def draw_frame(frame: np.ndarray, dets, names: list[str], thresh: float, ext_output: bool, out,
               draw: bool = True) -> list[str]:
    """draw_detections_cv_v3 on a BGR uint8 frame (in place); prints and returns its lines."""
    import cv2
    from ..image import class_color

    rows, cols = frame.shape[:2]
    classes = len(names)
    t = F32(thresh)
    lines = []
    for i in range(len(dets)):
        label, class_id, text = "", -1, ""
        for j in range(min(classes, dets.probs.shape[1])):
            p = dets.probs[i, j]
            if p > t and not names[j].startswith("dont_show"):
                if class_id < 0:
                    class_id = j
                    label = f"{names[j]} ({float(p * F32(100)):2.0f}%)"
                    text += f"{names[j]}: {_c_round_pct(p)}% "
                else:
                    label += f", {names[j]}"
                    text += f", {names[j]}: {_c_round_pct(p)}% "
        if class_id < 0:
            continue
        x, y, w, h = (float(v) for v in dets.boxes[i])
        w = 0.5 if not math.isfinite(w) else min(w, 1.0)
        h = 0.5 if not math.isfinite(h) else min(h, 1.0)
        x = 0.5 if not math.isfinite(x) else min(x, 1.0)
        y = 0.5 if not math.isfinite(y) else min(y, 1.0)
        left, right = int((x - w / 2.0) * cols), int((x + w / 2.0) * cols)
        top, bot = int((y - h / 2.0) * rows), int((y + h / 2.0) * rows)
        left, top = max(left, 0), max(top, 0)
        right, bot = min(right, cols - 1), min(bot, rows - 1)
        if ext_output:
            text += (f"\t(left_x: {float(left):4.0f}   top_y: {float(top):4.0f}   "
                     f"width: {float(F32(w) * F32(cols)):4.0f}   height: {float(F32(h) * F32(rows)):4.0f})")
        lines.append(text)
        print(text, file=out)
        if not draw:
            continue
        width = max(1, int(max(1.0, rows * 0.002)))
        r, g, b = class_color(class_id, classes)
        colour = (b * 255.0, g * 255.0, r * 255.0)
        font = float(F32(rows) / F32(1000))
        (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_COMPLEX_SMALL, font, 1)
        bg1 = (left, int(top - (3 + 18 * font)))
        bg2 = (left + tw if right - left < tw else right, top)
        cv2.rectangle(frame, (left, top), (right, bot), colour, width, cv2.LINE_8)
        cv2.rectangle(frame, bg1, bg2, colour, width, cv2.LINE_8)
        cv2.rectangle(frame, bg1, bg2, colour, cv2.FILLED, cv2.LINE_8)
        cv2.putText(frame, label, (left, top - 4), cv2.FONT_HERSHEY_COMPLEX_SMALL, font, (0, 0, 0),
                    int(2 * font), cv2.LINE_AA)
    return lines


def _json_frame(dets, names: list[str], frame_id: int) -> str:
    items = []
    for i in range(len(dets)):
        for j in range(min(len(names), dets.probs.shape[1])):
            p = dets.probs[i, j]
            if p > F32(0.005) and not names[j].startswith("dont_show"):
                x, y, w, h = (float(v) for v in dets.boxes[i])
                items.append(f'  {{"class_id":{j}, "name":"{names[j]}", "relative_coordinates":{{"center_x":{x:f}, '
                             f'"center_y":{y:f}, "width":{w:f}, "height":{h:f}}}, "confidence":{float(p):f}}}')
    return f'{{\n "frame_id":{frame_id}, \n "objects": [ \n' + ", \n".join(items) + "\n ] \n}"


def http_post_message(dets, names: list[str], videosource: str, out) -> str:
    """send_http_post_request's text: "name, id: N" per object (its first class above
    0.005, not "dont_show..."), then the local time and the video source; "" when no object.
    Prints "name: NN% " per class as upstream does."""
    lines = []
    for i in range(len(dets)):
        class_id = -1
        for j in range(min(len(names), dets.probs.shape[1])):
            p = dets.probs[i, j]
            if p > F32(0.005) and not names[j].startswith("dont_show"):
                if class_id < 0:
                    class_id = j
                print(f"{names[j]}: {_c_round_pct(p)}% ", end="", file=out)
        if class_id >= 0:
            lines.append(f"{names[class_id]}, id: {class_id}\n")
    if not lines:
        return ""
    return "".join(lines) + f"\ntime:\n{time.strftime('%A %F %T')}\nvideosource:\n{videosource}"


def open_streams(mjpeg_port: int = -1, json_port: int = -1, http_post_host: str | None = None, out=None):
    """The demo's servers (None where not asked for, or where the port cannot be bound)."""
    from ..stream import DEMO_QUALITY, DEMO_TIMEOUT, HttpPoster, JsonServer, MjpegServer

    mjpeg = MjpegServer(mjpeg_port, timeout=DEMO_TIMEOUT, quality=DEMO_QUALITY, out=out) if mjpeg_port > 0 else None
    jsons = JsonServer(json_port, out=out) if json_port > 0 else None
    poster = None
    if http_post_host:
        try:
            poster = HttpPoster(http_post_host)
        except ValueError as e:
            print(f"Warning: {e}; nothing is posted", file=sys.stderr)
    return (mjpeg if mjpeg is not None and mjpeg.running else None,
            jsons if jsons is not None and jsons.running else None, poster)


def close_streams(*servers) -> None:
    for s in servers:
        if s is not None:
            s.close()


def _open_writer(path: str, fps: float, size: tuple[int, int]):
    import cv2

    ext = os.path.splitext(path)[1].lower()
    codes = ("mp4v", "avc1", "MJPG") if ext in (".mp4", ".m4v", ".mov") else ("DIVX", "mp4v", "MJPG")
    for code in codes:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*code), fps, size, True)
        if writer.isOpened():
            return writer, code
        writer.release()
    raise EvalError(f"{path}: OpenCV cannot write this kind of video file (tried {', '.join(codes)})")


def demo(cfgfile: str, weightfile: str | None, names: list[str], classes: int, filename: str | None = None,
         thresh: float = 0.25, cam_index: int = 0, frame_skip: int = 0, prefix: str | None = None,
         out_filename: str | None = None, dont_show: bool = False, ext_output: bool = False,
         letter_box: bool = False, time_limit_sec: int = 0, json_file_output: str | None = None,
         dontdraw_bbox: bool = False, benchmark: bool = False, mjpeg_port: int = -1, json_port: int = -1,
         http_post_host: str | None = None, out=None, net=None, device=None, benchmark_layers: bool = False) -> dict:
    """Run the demo loop to the end of the video; returns {"frames", "avg_fps", "output"}."""
    import cv2
    from ..outputs.fileio import atomic_write_bytes, atomic_write_text

    out = out or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    print("Demo", file=out)
    if net is None:
        net = load_eval_network(cfgfile, weightfile, device)
    net.benchmark_layers = benchmark_layers
    letter = bool(letter_box or net.options.letter_box)
    netw, neth = net.options.width, net.options.height
    if filename:
        print(f"video file: {filename}", file=out)
        cap = cv2.VideoCapture(filename)
        if not cap.isOpened():
            raise EvalError(f"{filename}: cannot open this video (missing file or a format OpenCV cannot read)")
    else:
        print(f"Webcam index: {cam_index}", file=out)
        cap = cv2.VideoCapture(cam_index)
        if not cap.isOpened():
            raise EvalError(f"camera {cam_index}: Couldn't connect to webcam.")
    layer = net.layers[-1]
    for lc in net.layers:
        if isinstance(lc, Yolo):  # upstream's demo checks the last [yolo] layer's classes
            layer = lc
    lclasses = getattr(layer, "classes", None)
    if lclasses != classes:
        print(f"\n Parameters don't match: in cfg-file classes={lclasses}, in data-file classes={classes} ", file=out)
        raise EvalError(f"{cfgfile}: classes={lclasses} but the data file says classes={classes}")
    if len(names) < classes:
        raise EvalError(f"the names file has {len(names)} names for classes={classes}")
    kind = getattr(layer, "nms_kind", "default")
    beta = getattr(layer, "beta_nms", 0.6)

    ok, frame = cap.read()
    if not ok or frame is None or frame.size == 0:
        cap.release()
        raise EvalError(f"{filename if filename else f'camera {cam_index}'}: no frame could be read")
    print(f"Video stream: {frame.shape[1]} x {frame.shape[0]} ", file=out)
    writer = None
    tmp_video = None
    if out_filename:
        src_fps = cap.get(cv2.CAP_PROP_FPS)
        src_fps = int(src_fps) if src_fps and src_fps > 0 and math.isfinite(src_fps) else 25
        # written under a temporary name beside the target (same extension, so OpenCV
        # picks the same container) and renamed at the end: never a half-written video
        root, ext = os.path.splitext(out_filename)
        tmp_video = os.path.join(os.path.dirname(out_filename) or ".",
                                 f".{os.path.basename(root)}.{os.getpid()}.tmp{ext}")
        writer, _ = _open_writer(tmp_video, max(1, src_fps), (frame.shape[1], frame.shape[0]))
    show = not dont_show and not prefix
    json_parts: list[str] = []
    mjpeg, jsons, poster = open_streams(mjpeg_port, json_port, http_post_host, out)
    post_once = False
    source = filename if filename else str(cam_index)
    fps = avg_fps = 0.0
    start_lim = before = start = time.perf_counter()
    frame_counter = frames = 0
    delay = frame_skip
    was_training = net.training
    net.eval()
    completed = False
    try:
        while True:
            frames += 1
            sized = _frame_to_input(frame, netw, neth, letter)
            raw = net.predict_raw(sized)
            if letter:
                dets, _, _, _ = network_boxes(net, raw, thresh, thresh, frame.shape[1], frame.shape[0], True)
            else:
                dets, _, _, _ = network_boxes(net, raw, thresh, thresh, netw, neth, False)
            dets = nms_in_upstream_order(dets, int(layer.classes), DEMO_NMS, kind, beta)
            if tty:
                print("\033[H\033[J", end="", file=out)
            print("Objects:\n", file=out)
            frame_json = _json_frame(dets, names, frames) if (json_file_output or jsons) else None
            if jsons is not None:
                jsons.push(frame_json)
                print(" JSON-stream sent. ", file=out)
            if json_file_output:
                json_parts.append(frame_json)
            if poster is not None and not post_once:
                message = http_post_message(dets, names, source, out)
                if message:
                    poster.post(message)
                    post_once = time_limit_sec > 0  # upstream: once per run under -time_limit_sec
            draw_frame(frame, dets, names, thresh, ext_output, out, draw=not (benchmark or dontdraw_bbox))
            print(f"\nFPS:{fps:.1f} \t AVG_FPS:{avg_fps:.1f}", file=out)
            if prefix:
                ok_jpg, buf = cv2.imencode(".jpg", frame)
                if ok_jpg:
                    atomic_write_bytes(f"{prefix}_{frames:08d}.jpg", buf.tobytes())
            elif show:
                show, esc = show_frame("Demo", frame, 1)
                if esc:
                    break
            if mjpeg is not None:
                mjpeg.push(frame)
                print(" MJPEG-stream sent. ", file=out)
            if writer is not None:
                writer.write(frame)
                print("\n cvWriteFrame ", file=out)
            out.flush()
            if time_limit_sec > 0 and time.perf_counter() - start_lim > time_limit_sec:
                print(f" time spent = {time.perf_counter() - start_lim:f} s: -time_limit_sec {time_limit_sec} reached ",
                      file=out)
                break
            ok, frame = cap.read()
            if not ok or frame is None:
                print("Stream closed.", file=out)
                break
            delay -= 1
            if delay < 0:
                delay = frame_skip
                after = time.perf_counter()
                curr = 1.0 / max(after - before, 1e-9)
                fps = fps * 0.9 + curr * 0.1
                before = after
                frame_counter += 1
                spent = after - start
                if spent >= 3.0:
                    avg_fps = frame_counter / spent
                    frame_counter = 0
                    start = after
        completed = True
    finally:
        close_streams(mjpeg, jsons, poster)
        if was_training:
            net.train()
        cap.release()
        if writer is not None:
            writer.release()
            if completed:
                os.replace(tmp_video, out_filename)
            else:
                try:
                    os.unlink(tmp_video)
                except OSError:
                    pass
        if show:
            from .. import display
            display.destroy_all()
    elapsed = time.perf_counter() - start_lim
    overall = frames / elapsed if elapsed > 0 else 0.0
    print("input video stream closed. ", file=out)
    if writer is not None:
        print("output_video_writer closed. ", file=out)
    if json_file_output:
        atomic_write_text(json_file_output, "[\n" + ", \n".join(json_parts) + "\n]")
    print(f"{frames} frames in {elapsed:.2f} s: {overall:.1f} FPS", file=out)
    out.flush()
    return {"frames": frames, "avg_fps": overall, "output": out_filename}
