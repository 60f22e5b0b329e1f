"""cfg parsing: typed values, located errors (file, line, key), unused-key warnings, fuzzing."""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darknet_py.cfg import CfgError, parse_cfg_text, read_data_cfg
from darknet_py.network import Network

BASE = """[net]
batch=1
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,0

[convolutional]
filters=21
size=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


def build(text, path="test.cfg"):
    return Network(parse_cfg_text(text, path), path)


def line_of(text, needle):
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


def expect_error(text, key, line):
    with pytest.raises(CfgError) as e:
        build(text)
    err = e.value
    assert err.path == "test.cfg"
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert f"test.cfg:{line}:" in str(err)
    return err


def test_base_builds_and_values_are_typed():
    net = build(BASE)
    assert [l.type_name for l in net.layers] == ["convolutional", "maxpool", "convolutional", "yolo", "route",
                                                  "none", "route", "convolutional", "yolo"]
    assert net.layers[3].anchors == [10, 14, 23, 27, 37, 58]
    assert net.options.width == 64 and isinstance(net.options.learning_rate, float)


def test_whitespace_and_comments_like_upstream():
    # upstream's strip() removes every whitespace character, '#' and ';' start comments
    secs = parse_cfg_text("[net]\n  wid th = 3 2 \n# c\n;c\nheight=32 # trailing\n")
    s = secs[0]
    assert s.int("width") == 32 and s.int("height") == 32


def test_unknown_section():
    text = BASE.replace("[maxpool]", "[maxpoool]")
    with pytest.raises(CfgError) as e:
        build(text)
    assert e.value.line == line_of(text, "[maxpoool]") and "unknown section [maxpoool]" in str(e.value)


def test_malformed_value():
    text = BASE.replace("filters=16", "filters=sixteen")
    err = expect_error(text, "filters", line_of(text, "filters=sixteen"))
    assert "'sixteen' is not an integer" in str(err)


def test_malformed_float():
    text = BASE.replace("[net]\n", "[net]\nmomentum=0.9x\n")
    expect_error(text, "momentum", 2)


def test_key_outside_section():
    with pytest.raises(CfgError) as e:
        parse_cfg_text("width=3\n[net]\n", "test.cfg")
    assert e.value.line == 1 and e.value.key == "width"


def test_line_without_equals():
    with pytest.raises(CfgError) as e:
        parse_cfg_text("[net]\nwidth\n", "test.cfg")
    assert e.value.line == 2


def test_net_must_be_first():
    with pytest.raises(CfgError) as e:
        build("[convolutional]\nfilters=1\n[net]\nwidth=8\n")
    assert e.value.line == 1


def test_anchors_must_match_num():
    text = BASE.replace("anchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n\n[route]",
                        "anchors=10,14, 23,27\nclasses=2\nnum=3\n\n[route]")
    err = expect_error(text, "anchors", line_of(text, "anchors=10,14, 23,27"))
    assert "num=3" in str(err)


def test_route_out_of_range():
    text = BASE.replace("layers=-3", "layers=-30")
    err = expect_error(text, "layers", line_of(text, "layers=-30"))
    assert "refers to layer" in str(err)


def test_route_forward_reference():
    text = BASE.replace("layers=-1,0", "layers=-1,9")
    expect_error(text, "layers", line_of(text, "layers=-1,9"))


def test_route_size_mismatch():
    text = BASE.replace("layers=-1,0", "layers=-1,1")
    err = expect_error(text, "layers", line_of(text, "layers=-1,1"))
    assert "same width and height" in str(err)


def test_shortcut_size_mismatch():
    text = BASE.replace("[route]\nlayers=-1,0", "[shortcut]\nfrom=1\nactivation=linear")
    expect_error(text, "from", line_of(text, "from=1"))


def test_yolo_filters_mismatch():
    text = BASE.replace("filters=21\nsize=1\nstride=1", "filters=20\nsize=1\nstride=1")
    with pytest.raises(CfgError) as e:
        build(text)
    assert e.value.line == line_of(text, "classes=2") and e.value.key == "classes"


def test_unused_key_warned_with_line(capsys):
    text = BASE.replace("size=2\nstride=2", "size=2\nstride=2\nfilterz=3")
    build(text)
    err = capsys.readouterr().err
    assert f"test.cfg:{line_of(text, 'filterz=3')}: Unused field: 'filterz = 3'" in err


def test_data_cfg():
    import tempfile, os
    with tempfile.NamedTemporaryFile("w", suffix=".data", delete=False) as f:
        f.write("classes= 3\ntrain = a.txt\n# x\nnames=obj.names\n")
    try:
        d = read_data_cfg(f.name)
        assert d.int("classes") == 3 and d.str("train") == "a.txt" and d.find("names").line == 4
    finally:
        os.unlink(f.name)


# -- fuzzing -----------------------------------------------------------------------------
LINES = BASE.splitlines()
JUNK = st.sampled_from(["", "-1", "0", "1", "2", "-5", "3.5", "abc", "1,2", "1e9", "nan", "inf", "[x]", "=", ",",
                        "999999", "-999999", "0x10", "1,,2", "leaky", "mish", "yolo"])


@st.composite
def mutated(draw):
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, len(lines) - 1))
        if op == 0 and "=" in lines[i]:
            k = lines[i].split("=")[0]
            lines[i] = f"{k}={draw(JUNK)}"
        elif op == 1:
            del lines[i]
        elif op == 2:
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
        elif op == 3:
            lines.insert(i, draw(st.sampled_from(["[convolutional]", "[route]", "[shortcut]", "[yolo]", "[maxpool]",
                                                  "[upsample]", "[net]", "[bogus]", "stride=0", "size=0",
                                                  "groups=3", "from=-1", "layers=-2", "mask=5", "num=0"])))
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            lines = ["[net]"]
    return "\n".join(lines) + "\n"


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_fuzz_only_cfg_errors(text):
    try:
        net = build(text)
    except CfgError as e:
        assert re.match(r"test\.cfg(:\d+)?: ", str(e)), str(e)
        return
    net.summary()
