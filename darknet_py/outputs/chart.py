"""Upstream: draw_train_chart / draw_train_loss (src/image_opencv.cpp).

chart.png and chart_CFG.png: a 1000x1000 canvas, the avg loss as blue dots (y from 0 to
max_chart_loss), the accuracy points (a detector's mAP, a classifier's top-K) in red joined by
lines, a status line at the bottom. Saved every 100 iterations, at max_batches-1 and on
demand, atomically.

Without -dont_show and where a display exists, the chart is shown in the window
chart_CFG.png (waitKey(20) per iteration; 's' saves, as upstream). -mjpeg_port N hands the
chart to an MJPEG server (darknet_py/stream.py) after every iteration, as draw_train_loss
calls send_mjpeg(img, port, 500000, 70); the server encodes and sends in its own thread, at
most 10 pictures a second (the newest each time).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from .. import display
from .fileio import atomic_write_bytes, folder_unwritable

FONT = cv2.FONT_HERSHEY_COMPLEX_SMALL
IMG_SIZE, OFFSET, LINES = 1000, 60, 100


def _bgr(r: int, g: int, b: int) -> tuple[int, int, int]:
    return (b, g, r)


class TrainChart:
    def __init__(self, cfg_base: str, max_batches: int, max_loss: float = 20.0, chart_path: str | None = None,
                 out_dir: str | os.PathLike = ".", accuracy_name: str = "mAP%", dont_show: bool = True,
                 mjpeg_port: int = -1, out=None):
        self.names = [Path(out_dir) / "chart.png", Path(out_dir) / f"chart_{cfg_base}.png"]
        self.window_name = f"chart_{cfg_base}.png"
        self.max_batches = max(1, max_batches)
        self.max_loss = max_loss
        self.draw = IMG_SIZE - OFFSET
        self.img = None
        self._failed: set[str] = set()  # the files whose write failed (said once each)
        if chart_path:
            self.img = cv2.imread(str(chart_path)) if Path(chart_path).is_file() else None  # continue an old chart
            if self.img is None:
                print(f"Warning: -chart {chart_path}: cannot read it as an image; a new chart is drawn",
                      file=sys.stderr)
        if self.img is None:
            self.img = self._grid()
        why = folder_unwritable(out_dir)
        if why:
            self._failed.update(str(n) for n in self.names)
            print(f"Warning: the chart ({', '.join(map(str, self.names))}) cannot be saved: {out_dir}: {why}; "
                  f"training goes on", file=sys.stderr)
        self.old_batch = 0
        self.accuracy_name = accuracy_name  # the label of the red curve: "mAP%", or "top5" for -topk
        self.text_iteration = 0
        self.map_points: list[tuple[int, float]] = []
        self.out = out
        self.show = not dont_show and display.has_display()
        if self.show:
            print(" If error occurs - run training with flag: -dont_show ", file=out)
            shown = display.show(self.window_name, self.img, 20, size=(IMG_SIZE, IMG_SIZE), move=(0, 0))
            self.show = shown is not None
        self.mjpeg = None
        if mjpeg_port > 0:
            from ..stream import CHART_MAX_FPS, TRAIN_QUALITY, TRAIN_TIMEOUT, MjpegServer

            server = MjpegServer(mjpeg_port, timeout=TRAIN_TIMEOUT, quality=TRAIN_QUALITY, max_fps=CHART_MAX_FPS,
                                 out=out)
            self.mjpeg = server if server.running else None

    def _grid(self) -> np.ndarray:
        img = np.full((IMG_SIZE, IMG_SIZE, 3), 255, np.uint8)
        d, n = self.draw, LINES
        for i in range(1, n + 1):
            y = int(i * d / n)
            grey = _bgr(128, 128, 128) if i % 10 == 0 else _bgr(224, 224, 224)
            cv2.line(img, (OFFSET, y), (IMG_SIZE, y), grey, 1)
            if i % 10 == 0:
                cv2.putText(img, f"{self.max_loss * (n - i) / n:2.1f}", (30, y + 3), FONT, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        for i in range(0, n + 1):
            x = int(OFFSET + i * d / n)
            grey = _bgr(128, 128, 128) if i % 10 == 0 else _bgr(224, 224, 224)
            cv2.line(img, (x, d), (x, 0), grey, 1)
            if i % 10 == 0:
                cv2.putText(img, str(self.max_batches * i // n), (x - 20, d + 15), FONT, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, "Loss", (10, 60), FONT, 0.7, _bgr(0, 0, 255), 1, cv2.LINE_AA)
        cv2.putText(img, "Iteration number", (d // 2, IMG_SIZE - 10), FONT, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"in cfg max_batches={self.max_batches}", (d - 195, IMG_SIZE - 10), FONT, 0.7, (0, 0, 0), 1,
                    cv2.LINE_AA)
        return img

    def _xy(self, iteration: int, value: float) -> tuple[int, int]:
        return int(OFFSET + self.draw * iteration / self.max_batches), int(self.draw * (1 - value))

    def update(self, iteration: int, avg_loss: float, hours_left: float, mean_ap: float | None = None,
               force_save: bool = False) -> bool:
        """Add one iteration (and an mAP point when given); returns True when the files were written."""
        img, d = self.img, self.draw
        if np.isfinite(avg_loss):
            x, y = self._xy(iteration, avg_loss / self.max_loss)
            cv2.circle(img, (x, max(y, 1)), 1, _bgr(0, 0, 255), -1)
        if mean_ap is not None:
            if not self.map_points:
                cv2.putText(img, self.accuracy_name, (10, 12), FONT, 0.7, _bgr(255, 0, 0), 1, cv2.LINE_AA)
            else:
                it0, p0 = self.map_points[-1]
                cv2.line(img, self._xy(it0, p0), self._xy(iteration, mean_ap), _bgr(255, 0, 0), 1)
            text = f"{mean_ap * 100:2.1f}% "
            cv2.putText(img, text, (10, 28), FONT, 0.7, (255, 255, 255), 5, cv2.LINE_AA)
            cv2.putText(img, text, (10, 28), FONT, 0.7, _bgr(200, 0, 0), 1, cv2.LINE_AA)
            # upstream labels a point only when the value moved by > 0.1, is a new best, or a
            # tenth of the run has passed since the last label (frequent -topk points would clutter)
            old = self.map_points[-1][1] if self.map_points else 0.0
            best = max((v for _, v in self.map_points), default=0.0)
            if abs(old - mean_ap) > 0.1 or mean_ap > best or iteration - self.text_iteration >= self.max_batches // 10:
                self.text_iteration = iteration
                x, y = self._xy(iteration, mean_ap)
                cv2.putText(img, f"{mean_ap * 100:2.0f}% ", (x - 30, y + 15), FONT, 0.7, _bgr(200, 0, 0), 1,
                            cv2.LINE_AA)
            self.map_points.append((iteration, mean_ap))
        cv2.rectangle(img, (15, d + 18), (815, d + 38), (255, 255, 255), -1)
        cv2.putText(img, f"current avg loss = {avg_loss:2.4f}    iteration = {iteration}    approx. time left = "
                         f"{hours_left:2.2f} hours", (15, d + 33), FONT, 0.7, _bgr(0, 0, 100), 1, cv2.LINE_AA)
        key = -1
        if self.show:
            key = display.show(self.window_name, img, 20)
            self.show = key is not None
        saved = False
        if force_save or key == ord("s") or iteration == self.max_batches - 1 \
                or iteration // 100 > self.old_batch // 100 or mean_ap is not None:
            self.old_batch = iteration
            self.save()
            saved = True
        if self.mjpeg is not None:
            self.mjpeg.push(img)
            print(" MJPEG-stream sent. ", file=self.out)
        return saved

    def close(self) -> None:
        """The end of the run: the stream closes (its clients are let go), the window goes."""
        if self.mjpeg is not None:
            self.mjpeg.close()
            self.mjpeg = None
        if self.show:
            display.destroy_all()
            self.show = False

    def save(self) -> None:
        """Write the chart files; one that cannot be written is warned about once (training goes on)."""
        ok, buf = cv2.imencode(".png", self.img)
        if ok:
            for name in self.names:
                try:
                    atomic_write_bytes(name, buf.tobytes())
                except OSError as e:
                    if str(name) not in self._failed:
                        self._failed.add(str(name))
                        print(f"Warning: cannot save the chart {name}: {e.strerror or e}; training goes on",
                              file=sys.stderr)
