"""Helpers the benchmarks share: the `detector train` output lines they read, and a child
process run that time-stamps those lines as they arrive and returns the child's own rusage."""
from __future__ import annotations

import os
import re
import subprocess
import time

# upstream's iteration line (detector.c), which darknet_py prints the same way:
#  N: loss, avg avg loss, rate rate, S seconds, IMG images, H hours left
ITERATION_LINE = re.compile(r"^ (\d+): ([-+\w.]+), ([-+\w.]+) avg loss, ([-+\w.]+) rate, ([\d.]+) seconds, "
                            r"(\d+) images")
LOADED_LINE = re.compile(r"^Loaded: ([\d.]+) seconds")


def run_stamped(cmd: list[str], cwd, env: dict | None = None, timeout: float | None = None) -> dict:
    """Run `cmd`, reading its stdout and stderr (merged) line by line as they arrive.

    Returns rc, wall_s, the iteration lines as (iteration, arrival time in s since start,
    printed step seconds, images), the printed "Loaded:" seconds, the last lines of output, and
    the child's peak resident memory (ru_maxrss of os.wait4 on its pid: that process alone,
    not its children; MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)  # buffered reads return what the pipe has
    iterations, loads, tail = [], [], []
    try:
        for raw in p.stdout:
            now = time.perf_counter() - t0
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            m = ITERATION_LINE.match(line)
            if m:
                iterations.append((int(m.group(1)), now, float(m.group(5)), int(m.group(6))))
            m = LOADED_LINE.match(line)
            if m:
                loads.append(float(m.group(1)))
            tail = (tail + [line])[-30:]
            if timeout is not None and now > timeout:
                p.kill()
                tail.append(f"(killed after {timeout:.0f} s)")
                break
    finally:
        p.stdout.close()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": time.perf_counter() - t0, "iterations": iterations, "loaded_s": loads,
            "tail": tail, "peak_rss_mb": usage.ru_maxrss / 1024}  # Linux: ru_maxrss in KiB
