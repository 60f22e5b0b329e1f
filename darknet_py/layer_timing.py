"""Upstream: the -benchmark_layers timing of forward_network_gpu / backward_network_gpu
(src/network_kernels.cu).

With -benchmark_layers every layer's forward (and, in training, backward) is timed, the device
synchronized around it; each line gives the time and a running average (0.9 old + 0.1 new, the
first time as it is), and after each pass the layers are listed slowest first. Upstream's lines:

     fw-layer 3 - type: 0 - 0.512000 ms - avg_time 0.498000 ms
    Sorted by time (forward):
    0 - fw-sort-layer 3 - type: 0 - avg_time 0.498000 ms

The type is upstream's LAYER_TYPE number (0 convolutional, 28 yolo, ...: Layer.type_id).
A backward time is measured between the moments autograd has the gradient of a layer's output
and of its input (and, for the first trained layer, of its weights).
"""
from __future__ import annotations

import sys
import time

import torch


def _now(device) -> float:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class LayerTimes:
    """Running per-layer averages of one direction ("fw" or "bw"), as upstream's static arrays."""

    ALPHA = 0.9

    def __init__(self, kind: str, out=None):
        self.kind = kind
        self.avg: dict[int, tuple[float, int]] = {}  # layer index -> (avg ms, type id)
        self.out = out

    def record(self, index: int, type_id: int, ms: float) -> None:
        old = self.avg.get(index)
        avg = ms if old is None or old[0] == 0 else old[0] * self.ALPHA + ms * (1 - self.ALPHA)
        self.avg[index] = (avg, type_id)
        print(f"\n {self.kind}-layer {index} - type: {type_id} - {ms:f} ms - avg_time {avg:f} ms ",
              file=self.out or sys.stdout)

    def report(self) -> None:
        out = self.out or sys.stdout
        name = "forward" if self.kind == "fw" else "backward"
        print(f"\n\nSorted by time ({name}):", file=out)
        ranked = sorted(self.avg.items(), key=lambda kv: -kv[1][0])
        for rank, (index, (avg, type_id)) in enumerate(ranked):
            print(f"{rank} - {self.kind}-sort-layer {index} - type: {type_id} - avg_time {avg:f} ms ", file=out)


class ForwardTimer:
    """Times each layer of one forward pass: `with timer.layer(layer): x = layer(x)`."""

    def __init__(self, times: LayerTimes, device):
        self.times, self.device = times, device

    def run(self, layer, fn):
        start = _now(self.device)
        y = fn()
        self.times.record(layer.index, layer.type_id, (_now(self.device) - start) * 1000)
        return y

    def done(self) -> None:
        self.times.report()


class BackwardTimer:
    """Marks when autograd reaches each layer's output gradient during the coming backward pass
    and prints the layers' backward times when the first trained layer's weights have theirs."""

    def __init__(self, times: LayerTimes, device):
        self.times, self.device = times, device
        self.marks: dict[int, float] = {}
        self.types: dict[int, int] = {}
        self.handles: list = []

    def watch(self, layer, y: torch.Tensor) -> None:
        if y.requires_grad:
            self.types[layer.index] = layer.type_id
            self.handles.append(y.register_hook(self._mark(layer.index)))

    def arm(self, layers) -> None:
        """After the forward pass: the end is when the lowest watched layer's weights get their gradient."""
        if not self.types:
            return
        first = layers[min(self.types)]
        params = [p for p in first.parameters() if p.requires_grad]
        if params:
            self.handles.append(params[0].register_post_accumulate_grad_hook(lambda p: self._finish()))
        else:
            self.types.pop(first.index)  # nothing to time the first layer's backward against

    def _mark(self, index: int):
        def hook(grad):
            self.marks[index] = _now(self.device)
        return hook

    def _finish(self) -> None:
        end = _now(self.device)
        order = sorted(self.marks, reverse=True)  # backward order: last layer first
        for k, index in enumerate(order):
            stop = self.marks[order[k + 1]] if k + 1 < len(order) else end
            self.times.record(index, self.types[index], max(stop - self.marks[index], 0.0) * 1000)
        self.times.report()
        for h in self.handles:
            h.remove()
        self.handles.clear()
