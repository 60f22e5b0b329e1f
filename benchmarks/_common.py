"""Helpers the benchmarks share: the `detector train` output lines they read, and a child
process run that time-stamps those lines as they arrive and returns the child's peak memory."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# upstream's iteration line (detector.c), which darknet_py prints the same way:
#  N: loss, avg avg loss, rate rate, S seconds, IMG images, H hours left
ITERATION_LINE = re.compile(r"^ (\d+): ([-+\w.]+), ([-+\w.]+) avg loss, ([-+\w.]+) rate, ([\d.]+) seconds, "
                            r"(\d+) images")
LOADED_LINE = re.compile(r"^Loaded: ([\d.]+) seconds")


# Runs the command as its own child and writes "status maxrss_kib" of it to argv[1]. Linux
# counts in a child's ru_maxrss the resident size of the process it was forked from (the
# address space it had before exec), so a child forked straight from a benchmark that holds
# torch and a network would report at least that; forked from this small interpreter, the
# floor is a few MB.
_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        print(f"cannot run {sys.argv[2]}: {e}", file=sys.stderr)
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{status} {usage.ru_maxrss}")
"""


def run_stamped(cmd: list[str], cwd, env: dict | None = None) -> dict:
    """Run `cmd`, reading its stdout and stderr (merged) line by line as they arrive.

    Returns rc (negative: killed by that signal), wall_s, the iteration lines as (iteration,
    arrival time in s since start, printed step seconds, images), the printed "Loaded:"
    seconds, the last lines of output, and the child's peak resident memory (ru_maxrss from
    os.wait4: that process alone, not processes it starts; MB)."""
    fd, report = tempfile.mkstemp(prefix="rusage-")
    os.close(fd)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, report, *cmd], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    iterations, loads, tail = [], [], []
    try:
        for raw in p.stdout:  # buffered reads return what the pipe holds: lines come as printed
            now = time.perf_counter() - t0
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            m = ITERATION_LINE.match(line)
            if m:
                iterations.append((int(m.group(1)), now, float(m.group(5)), int(m.group(6))))
            m = LOADED_LINE.match(line)
            if m:
                loads.append(float(m.group(1)))
            tail = (tail + [line])[-30:]
    finally:
        p.stdout.close()
        p.wait()
        wall = time.perf_counter() - t0
        try:
            status, maxrss = (int(v) for v in Path(report).read_text().split())
            rc = os.waitstatus_to_exitcode(status)
        except ValueError:  # the launcher itself failed
            rc, maxrss = p.returncode or 1, 0
        os.unlink(report)
    if rc < 0:
        tail.append(f"(killed by signal {-rc}: {signal.Signals(-rc).name})")
    return {"rc": rc, "wall_s": wall, "iterations": iterations, "loaded_s": loads, "tail": tail,
            "peak_rss_mb": maxrss / 1024}  # Linux: ru_maxrss in KiB
