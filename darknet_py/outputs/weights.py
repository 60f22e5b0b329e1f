"""Upstream: load_weights_upto / save_weights_upto (src/parser.c).

Header: int32 major, minor, revision, then `seen` as uint64 when major*10+minor >= 2, else
uint32. Connected weights are stored transposed when major or minor > 1000. Then every
layer's arrays in order (Layer.load_arrays). A shorter file (a pretrained backbone such as
yolov4.conv.137) loads the layers it holds; a longer one is reported. Saving always writes
upstream's current layout (0, 2, 5, uint64 seen) through a temporary file and a rename.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_writer


class WeightsError(OSError):
    pass


@dataclass
class Header:
    major: int
    minor: int
    revision: int
    seen: int

    @property
    def transpose(self) -> bool:
        return self.major > 1000 or self.minor > 1000


class _Reader:
    def __init__(self, data: np.ndarray):
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def fill(self, t: torch.Tensor) -> bool:
        """Copy the next t.numel() floats into t; a short tail fills a prefix (as fread does)."""
        n = min(t.numel(), self.left)
        if n > 0:
            with torch.no_grad():
                # in the tensor's logical (row-major) order, whatever its memory format
                # (load_network makes convolution weights channels_last)
                flat = t.detach().contiguous().view(-1)
                flat[:n].copy_(torch.from_numpy(self.data[self.pos:self.pos + n].copy()))
                if flat.data_ptr() != t.data_ptr():
                    t.detach().copy_(flat.view(t.shape))
        self.pos += n
        return n == t.numel()


@dataclass
class LoadReport:
    header: Header
    layers_loaded: int  # layers (with weights) read completely
    layers_with_weights: int
    floats_left: int  # floats in the file after the last layer

    @property
    def partial(self) -> bool:
        return self.layers_loaded < self.layers_with_weights


def read_header(f, path) -> Header:
    head = f.read(12)
    if len(head) < 12:
        raise WeightsError(f"{path}: not a darknet .weights file (only {len(head)} bytes)")
    major, minor, revision = struct.unpack("<iii", head)
    if major * 10 + minor >= 2:
        raw = f.read(8)
        seen = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
    else:
        raw = f.read(4)
        seen = struct.unpack("<I", raw)[0] if len(raw) == 4 else 0
    return Header(major, minor, revision, seen)


def load_weights(net, path: str | os.PathLike, cutoff: int | None = None, verbose: bool = True) -> LoadReport:
    path = str(path)
    try:
        with open(path, "rb") as f:
            header = read_header(f, path)
            body = f.read()
    except OSError as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from None
    data = np.frombuffer(body[: len(body) // 4 * 4], dtype="<f4")
    reader = _Reader(data)
    loaded = with_weights = 0
    complete = True
    layers = net.layers if cutoff is None else net.layers[:cutoff]
    for layer in layers:
        if layer.dontload or not layer.load_arrays():
            continue
        with_weights += 1
        if not complete or reader.left == 0:
            complete = False
            continue
        complete = layer.load_from(reader, header.transpose)
        if complete:
            loaded += 1
    net.seen = header.seen
    report = LoadReport(header, loaded, with_weights, reader.left)
    if verbose:
        if report.partial:
            print(f"Loaded {loaded} of {with_weights} layers with weights from {path} "
                  f"(the file ends there: a partial / pretrained file)", file=sys.stderr)
        elif report.floats_left and cutoff is None:  # with a cutoff the rest is meant to stay unread
            print(f"Warning: {path} has {report.floats_left} more floats than the network uses "
                  f"(is it for another cfg?)", file=sys.stderr)
    return report


def save_weights(net, path: str | os.PathLike, cutoff: int | None = None) -> None:
    """Write upstream's layout atomically: temporary file in the same folder, on the disk (fsync), then
    renamed over `path`; a failed write raises OSError and leaves `path` as it was."""
    path = Path(path)
    layers = net.layers if cutoff is None else net.layers[:cutoff]
    with atomic_writer(path, fsync=True) as f:
        f.write(struct.pack("<iiiQ", 0, 2, 5, int(net.seen)))
        for layer in layers:
            for t in layer.weight_arrays():
                f.write(np.asarray(t.detach().to("cpu", torch.float32).contiguous().numpy(), dtype="<f4").data)
