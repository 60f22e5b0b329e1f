"""Flags as upstream's find_arg family reads them (darknet_py/flags.py), and the README's table of them."""
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from darknet_py.flags import OWN_FLAGS, UPSTREAM_FLAGS, FlagError, Flags, c_atof, c_atoi

ROOT = Path(__file__).resolve().parent.parent
MAP = Path(__file__).parent / "data" / "map"


def flags(*argv):
    err = io.StringIO()
    return Flags(list(argv), err=err), err


def test_taken_wherever_it_stands_and_only_by_its_exact_word():
    f, err = flags("detector", "-thresh", ".3", "test", "a.data", "-ext_output", "b.cfg", "-th", "9", "w")
    assert f.float("-thresh", .25) == pytest.approx(.3)
    assert f.flag("-ext_output") and not f.flag("-e") and not f.flag("-ext")
    assert f.int("-t", 0) == 0  # -th is not -t, nor -thresh: no prefix matching
    # a word upstream has nowhere: dropped; whether it took a value nobody knows, so "9" stays
    assert f.positional("detector test") == ["detector", "test", "a.data", "b.cfg", "9", "w"]
    assert "-th" in err.getvalue() and "not a flag of darknet" in err.getvalue()


def test_a_flag_before_the_command():
    f, _ = flags("-i", "1", "detector", "test", "x")
    assert f.int("-i", 0) == 1 and f.words[0] == "detector"


def test_flag_of_another_command_is_dropped_with_its_value_and_said_once():
    f, err = flags("classifier", "train", "-thresh", "0.5", "a.data", "b.cfg", "-srand", "5", "-srand", "6")
    assert f.positional("classifier train") == ["classifier", "train", "a.data", "b.cfg"]
    text = err.getvalue()
    assert "`-thresh 0.5` is not read by `classifier train`" in text
    assert text.count("-srand") == 2  # two different words: each named once


def test_a_flag_given_twice_reads_the_first():
    f, err = flags("x", "-thresh", ".1", "-thresh", ".9")
    assert f.float("-thresh", 0) == pytest.approx(.1)
    assert f.positional() == ["x"] and "given twice" in err.getvalue()


def test_value_missing_at_the_end_is_an_error():
    f, _ = flags("x", "-thresh")
    with pytest.raises(FlagError, match="-thresh needs a value"):
        f.float("-thresh", .25)


def test_numbers_and_negative_values_are_not_flags():
    f, err = flags("speed", "x.cfg", "-5", "-c", "-1")
    assert f.int("-c", 0) == -1
    assert f.positional() == ["speed", "x.cfg", "-5"] and not err.getvalue()


def test_values_read_as_c_reads_them():
    assert c_atoi("12abc") == 12 and c_atoi("abc") == 0 and c_atoi(" -3") == -3
    assert c_atof(".5x") == 0.5 and c_atof("1e-2") == 0.01 and c_atof("x") == 0.0
    f, err = flags("-points", "11th")
    assert f.int("-points", 0) == 11 and "not a number" in err.getvalue()


def test_tabs_and_carriage_returns_are_stripped_as_upstreams_strip_args():
    f, _ = flags("detector\r", "test", "-dont_show\r\n")
    assert f.flag("-dont_show") and f.words == ["detector", "test"]


@given(st.lists(st.sampled_from(["a", "b.cfg", "-map", "-thresh", ".5", "-gpus", "0,1", "-1", "-zz"]), max_size=8))
def test_reading_never_invents_or_reorders_positionals(words):
    f, _ = flags(*words)
    f.flag("-map")
    try:
        f.float("-thresh", .25)
        f.str("-gpus", None)
    except FlagError:  # a value flag last on the line: an error, never a guess
        return
    pos = f.positional()
    it = iter(words)
    assert all(p in it for p in pos)  # a subsequence of the line, in order


def test_readme_lists_every_upstream_flag():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| flag |"):]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    rows = {flag for cell in first_cells for flag in re.findall(r"`(-[A-Za-z_0-9]+)", cell)}
    missing = set(UPSTREAM_FLAGS) - rows
    assert not missing, f"README's flag table lacks {sorted(missing)}"
    assert set(OWN_FLAGS) - {"-batch", "-dynamic", "-postprocess"} <= rows


# ------------------------------------------------------------------------------- on the command line

def run(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "darknet.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def mapdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags") / "map"
    shutil.copytree(MAP, d)
    return d


def test_issue_lines_run(mapdir):
    """The command lines of the issue: each ran into argparse's prefix matching before."""
    base = ["detector", "test", "obj.data", "map-yolov4-tiny.cfg", "trained.weights", "val/v0.png", "-dont_show"]
    want = run(base, mapdir)
    assert want.returncode == 0, want.stderr
    for extra in (["-cuda_debug_sync"], ["-srand", "5"], ["-iters", "3"], ["-benchmark"]):
        r = run(base + extra, mapdir)
        assert r.returncode == 0, (extra, r.stderr)
        assert r.stdout.split("Predicted in")[1].split("\n", 1)[1] == want.stdout.split("Predicted in")[1].split("\n", 1)[1]
    r = run(["-i", "0", *base], mapdir)
    assert r.returncode == 0, r.stderr
    r = run(["classifier", "predict", "obj.data", "x.cfg", "-thresh", "0.5"], mapdir)
    assert "argument" not in r.stderr and "`-thresh 0.5` is not read by `classifier predict`" in r.stderr
