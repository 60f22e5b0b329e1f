"""obj.data and list files (upstream: read_data_cfg, get_paths)."""
import pytest

from darknet_py.cfg import CfgError
from darknet_py.data import DataFileError, read_list, read_obj_data


def test_obj_data_keys_and_defaults(tmp_path):
    p = tmp_path / "obj.data"
    p.write_text("classes = 3\ntrain = a/train.txt\nnames = obj.names\n")
    d = read_obj_data(p)
    assert (d.classes, d.train, d.valid, d.names) == (3, "a/train.txt", "a/train.txt", "obj.names")
    assert d.backup == "/backup/" and d.eval is None
    assert d.section.find("classes").line == 1


def test_obj_data_all_keys(tmp_path):
    p = tmp_path / "obj.data"
    p.write_text("classes=80\ntrain=t.txt\nvalid=v.txt\nnames=n\nbackup=backup/\neval=coco\n")
    d = read_obj_data(p)
    assert (d.valid, d.backup, d.eval) == ("v.txt", "backup/", "coco")


def test_obj_data_missing_classes_uses_upstream_default(tmp_path, capsys):
    p = tmp_path / "obj.data"
    p.write_text("train=t.txt\n")
    assert read_obj_data(p).classes == 20
    assert "Using default '20'" in capsys.readouterr().err


@pytest.mark.parametrize("text, line", [("train=t.txt\nclasses=three\n", 2), ("classes=0\n", 1)])
def test_obj_data_errors_name_file_line_key(tmp_path, text, line):
    p = tmp_path / "obj.data"
    p.write_text(text)
    with pytest.raises(CfgError) as e:
        read_obj_data(p)
    assert f"obj.data:{line}" in str(e.value) and "classes" in str(e.value)


def test_obj_data_missing_file_is_named(tmp_path):
    with pytest.raises(CfgError, match="nope.data"):
        read_obj_data(tmp_path / "nope.data")


def test_read_list_skips_blank_lines_and_crlf(tmp_path):
    p = tmp_path / "train.txt"
    p.write_bytes(b"a/1.jpg\r\n\r\n  \nb/2 x.png\n\nc/3.jpg")
    assert read_list(p) == ["a/1.jpg", "b/2 x.png", "c/3.jpg"]


def test_read_list_missing_file_is_named(tmp_path):
    with pytest.raises(DataFileError) as e:
        read_list(tmp_path / "missing.txt")
    assert "missing.txt" in str(e.value) and "Couldn't open file" in str(e.value)
