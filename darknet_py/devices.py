"""Upstream: the device choice of main (src/darknet.c: -i, -nogpu) and run_detector (-gpus),
and the math the GPU build's cuDNN runs with.

With CUDA present, every command runs on GPU 0 unless told otherwise: `-gpus 1,2` (the first
is this process's), `-i 1`, or `-nogpu` for the CPU. Without CUDA everything runs on the CPU.

TF32: upstream's cuDNN build leaves cuDNN's default math on, which on Ampere and newer GPUs
runs float32 convolutions with TF32 inputs (10-bit mantissa). Training follows it by default
(`-no_tf32` turns it off); `test`, `map`, `valid`, `recall`, `demo` and the tests compute in
strict float32 unless asked (`-tf32`), so that their outputs are those of the CPU.
"""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    pass


def parse_gpus(text: str | None) -> list[int] | None:
    """-gpus 0,1,2 -> [0, 1, 2]; None or empty -> None."""
    if not text:
        return None
    try:
        return [int(g) for g in text.split(",") if g.strip()] or None
    except ValueError:
        raise DeviceError(f"-gpus {text}: not a list of GPU numbers") from None


def select_device(nogpu: bool = False, gpus: list[int] | None = None, index: int = 0) -> torch.device:
    """GPU gpus[0] (else GPU `index`) when CUDA is present and not nogpu; else the CPU."""
    if nogpu or not torch.cuda.is_available():
        return torch.device("cpu")
    i = gpus[0] if gpus else index
    count = torch.cuda.device_count()
    if not 0 <= i < count:
        raise DeviceError(f"GPU {i} asked for, but this machine has {count} CUDA device(s) (0..{count - 1})")
    return torch.device("cuda", i)


def configure(device: torch.device, tf32: bool) -> None:
    """cuDNN's autotuner on (fixed shapes between resizes) and the float32 math (TF32 or strict)
    for a CUDA device; nothing for the CPU."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    set_tf32(tf32)


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
