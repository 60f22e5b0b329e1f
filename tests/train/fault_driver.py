"""Runs darknet.py's command line in this process and makes real faults at given iterations.

    python fault_driver.py SPEC.json -- detector train obj.data t.cfg init.weights -dont_show

SPEC: {"at": {"K": [action, ...]}, "start": [action, ...], "report": "driver.json"}. The actions
of iteration K run when the trainer prints its ` K: loss, ...` line, that is after the iteration
and before its saves. Actions (all real faults, nothing mocked):
  ["fsize", N]       RLIMIT_FSIZE soft limit N bytes (None: no limit). Python ignores SIGXFSZ,
                     so a write past N fails with EFBIG, as a full disk's fails with ENOSPC
  ["as_extra", N]    RLIMIT_AS: the address space in use now plus N bytes
  ["sha", NAME]      record the sha256 of file NAME (None if missing) under "sha:NAME:K"
  ["ls", DIR]        record the names in DIR under "ls:DIR:K"
  ["delete", PATH] / ["truncate", PATH, N] / ["garbage", PATH]
The report (JSON) is written at the end, before the limits could stop it (they are lifted).
"""
import hashlib
import json
import os
import re
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

spec = json.loads(Path(sys.argv[1]).read_text())
argv = sys.argv[sys.argv.index("--") + 1:]
report: dict = {}


def act(action, k):
    what = action[0]
    if what == "fsize":
        n = resource.RLIM_INFINITY if action[1] is None else int(action[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    elif what == "as_extra":
        used = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + int(action[1]), resource.getrlimit(resource.RLIMIT_AS)[1]))
    elif what == "sha":
        p = Path(action[1])
        report[f"sha:{action[1]}:{k}"] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    elif what == "ls":
        report[f"ls:{action[1]}:{k}"] = sorted(os.listdir(action[1]))
    elif what == "delete":
        os.unlink(action[1])
    elif what == "truncate":
        os.truncate(action[1], int(action[2]))
    elif what == "garbage":  # the same bytes every run: one line, neither an image nor label lines
        Path(action[1]).write_bytes(b"\x89garbage, neither an image nor a label \x00\xff" * 64)
    else:
        raise ValueError(action)


class Tap:
    """stdout, watched for the trainer's ` K: ` lines."""

    def __init__(self, stream):
        self.stream, self.buf = stream, ""

    def write(self, text):
        self.stream.write(text)
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            m = re.match(r"^ ?(\d+)[:,] ", line)
            if m and m.group(1) in spec.get("at", {}):
                for action in spec["at"].pop(m.group(1)):
                    act(action, m.group(1))
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


for a in spec.get("start", []):
    act(a, "start")
from darknet_py.cli import main  # noqa: E402

sys.stdout = Tap(sys.stdout)
try:
    rc = main(argv)
finally:
    for limit in (resource.RLIMIT_FSIZE, resource.RLIMIT_AS):  # lifted to the hard limits
        resource.setrlimit(limit, (resource.getrlimit(limit)[1],) * 2)
    Path(spec.get("report", "driver.json")).write_text(json.dumps(report))
sys.stdout.flush()
sys.exit(rc)
