"""Upstream: show_image / show_image_mat / wait_key_cv / destroy_all_windows_cv (src/image_opencv.cpp).

OpenCV windows where a display exists: the chart while training, -show_imgs' augmented
images, `detector test`'s predictions, the demos' frames, the tools' pictures. Without a
display (no DISPLAY or WAYLAND_DISPLAY, an X server that does not answer, or an OpenCV
built without a GUI) nothing is shown and nothing fails: the callers write files, as
upstream's build without OpenCV does. The X server is
probed before OpenCV is asked, because OpenCV's Qt backend aborts the whole process
(not an exception) when it cannot reach the display. The probe's connection stays open
until OpenCV has made its own: an X server with no other client (Xvfb, xvfb-run) resets
when its last client leaves, and a connection made during the reset fails.
"""
from __future__ import annotations

import os
import re
import socket
import sys

_state: dict = {}


def _x_server_answers(display: str) -> bool:
    """Connect to the display's socket; the connection is kept in _state["probe"]."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(\.\d+)?", display)
    if not m:
        return False
    host, num = m.group("host"), int(m.group("num"))
    if host in ("", "unix"):
        candidates = [f"/tmp/.X11-unix/X{num}"]
        for path in candidates:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect(path)
                _state["probe"] = s
                return True
            except OSError:
                s.close()
        if host == "unix":
            return False
        host = "127.0.0.1"
    try:
        _state["probe"] = socket.create_connection((host, 6000 + num), timeout=1.0)
        return True
    except OSError:
        return False


def _release_probe() -> None:
    probe = _state.pop("probe", None)
    if probe is not None:
        probe.close()


def _opencv_has_gui() -> bool:
    import cv2

    info = cv2.getBuildInformation()
    start = info.find("GUI:")
    if start < 0:
        return False
    block = info[start:start + 400]
    return bool(re.search(r"\b(QT|GTK\+?|GTK2|GTK3|WIN32 UI|Cocoa|Wayland|FRAMEBUFFER)\b[^\n]*YES", block)) or \
        bool(re.search(r"GUI:\s+(QT\d?|GTK\d?|WIN32|COCOA|WAYLAND)", block))


def has_display() -> bool:
    """True when OpenCV can open a window here (probed once per process)."""
    if "ok" not in _state:
        display = os.environ.get("DISPLAY", "")
        ok = False
        if display and _x_server_answers(display):
            ok = True
        elif os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("win32", "darwin"):
            ok = True
        _state["ok"] = ok and _opencv_has_gui()
        if not _state["ok"]:
            _release_probe()
    return _state["ok"]


def _failed(name: str, e: Exception) -> None:
    _state["ok"] = False
    print(f"Warning: OpenCV cannot show the window {name!r} ({str(e).strip().splitlines()[-1] if str(e) else e}); "
          f"continuing as with -dont_show", file=sys.stderr)


def show(name: str, img, wait_ms: int | None = None, *, size: tuple[int, int] | None = None,
         move: tuple[int, int] | None = None) -> int | None:
    """show_image_mat(img, name) (a resizable window), then wait_key_cv(wait_ms) when given
    (0: until a key is pressed). Returns the key (-1 for none), or None where nothing can be shown."""
    if not has_display():
        return None
    import cv2

    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
        if move is not None:
            cv2.moveWindow(name, *move)
        if size is not None:
            cv2.resizeWindow(name, *size)
        _release_probe()  # OpenCV holds its own connection now
        cv2.imshow(name, img)
        return cv2.waitKey(wait_ms) if wait_ms is not None else -1
    except cv2.error as e:
        _release_probe()
        _failed(name, e)
        return None


def destroy_all() -> None:
    if not _state.get("ok"):
        return
    import cv2

    try:
        cv2.destroyAllWindows()
    except cv2.error:
        pass


def show_image(name: str, im, wait_ms: int = 1) -> bool:
    """show_image_cv: a (C, H, W) float image in [0, 1] in the window `name`, then
    waitKey(wait_ms); False where no window can be opened."""
    from .image import to_bgr_uint8

    return show(name, to_bgr_uint8(im), wait_ms) is not None


def wait_key(ms: int = 0) -> int:
    """wait_key_cv / wait_until_press_key_cv (0: until a key is pressed); -1 without a display."""
    if not _state.get("ok"):
        return -1
    import cv2

    try:
        return cv2.waitKey(ms)
    except cv2.error:
        return -1


def show_batch(x, truth=None, *, wait_ms: int = 0) -> bool:
    """-show_imgs without -dont_show: each augmented image of the batch (with its truth boxes
    for a detector) in its own window aug_I, waiting for a key as upstream does
    (wait_until_press_key_cv). False where nothing can be shown."""
    if not has_display():
        return False
    import numpy as np

    from .image import to_bgr_uint8

    xs = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    ys = None
    if truth is not None:
        ys = truth.detach().cpu().numpy() if hasattr(truth, "detach") else np.asarray(truth)
    for i in range(xs.shape[0]):
        if ys is not None and ys.ndim == 3:  # (n, max_boxes, truth_size)
            from .data.detection import draw_preview

            pic = draw_preview(xs[i], ys[i])
        else:
            pic = to_bgr_uint8(xs[i])
        if show(f"aug_{i}", pic, wait_ms) is None:
            return False
    return True


def show_and_wait(name: str, im) -> bool:
    """`detector test` without -dont_show: show_image(im, name), wait_until_press_key_cv,
    destroy_all_windows_cv. `im`: CHW float RGB in [0, 1] (darknet's image). False where
    nothing can be shown (then nothing waits)."""
    if not has_display():
        return False
    shown = show_image(name, im, 0)
    destroy_all()
    return shown
