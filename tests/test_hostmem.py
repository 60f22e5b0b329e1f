"""The command line restarts itself once, same pid, with glibc's allocator set to keep freed
buffers (darknet_py/hostmem.py); the user's own choice is kept."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import os, sys\n"
         "print('start', os.getpid(), flush=True)\n"
         "from darknet_py.hostmem import restart_with_malloc_env\n"
         "restart_with_malloc_env()\n"
         "print('run', os.getpid(), os.environ.get('MALLOC_MMAP_MAX_'), os.environ.get('MALLOC_TRIM_THRESHOLD_'),"
         " 'torch' in sys.modules, sys.flags.dont_write_bytecode, os.environ.get('OMP_WAIT_POLICY'))\n")


def _probe(*args, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("DARKNET_MALLOC", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-B", "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                       env=dict(base, PYTHONPATH=str(ROOT), **env), timeout=120)
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's variables: Linux only")
def test_restarts_once_with_the_allocator_set_up():
    lines = _probe()
    starts = [l for l in lines if l[0] == "start"]
    runs = [l for l in lines if l[0] == "run"]
    assert len(starts) == 2 and len(runs) == 1  # the script ran again from the top, once
    assert starts[0][1] == starts[1][1] == runs[0][1]  # the same process
    assert runs[0][2:] == ["0", str(256 << 20), "False", "1", "None"]  # torch not loaded first; -B kept
    # a command that trains: OpenMP threads sleep while they wait (the user's own value is kept)
    assert _probe("detector", "train")[-1][-1] == "PASSIVE"
    assert _probe("detector", "train", OMP_WAIT_POLICY="ACTIVE")[-1][-1] == "ACTIVE"


def test_the_users_choice_is_kept():
    for env in ({"DARKNET_MALLOC": "default"}, {"MALLOC_TRIM_THRESHOLD_": "1000"}):
        lines = _probe(**env)
        assert [l[0] for l in lines] == ["start", "run"]
        assert lines[1][2] in ("None",) and lines[1][3] == env.get("MALLOC_TRIM_THRESHOLD_", "None")
