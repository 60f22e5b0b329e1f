"""scripts/device_check.py is only run for real where a GPU is lent: its checks must still work,
so their CPU dry run is run here (the quick ones)."""
import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "device_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step1_and_speed_checks_run_on_the_cpu():
    dc = _module()
    cpu = torch.device("cpu")
    step1 = dc.check_step1(cpu)
    assert step1["ok"], step1
    assert step1["cases"]
    speed = dc.check_speed(cpu, 64, ("yolov4-tiny",))
    assert speed["ok"] and speed["yolov4-tiny-tf32"]["images_per_s"] > 0
