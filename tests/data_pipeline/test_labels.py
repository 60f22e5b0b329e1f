"""Label paths and label files (upstream: replace_image_to_label, read_boxes, custom_hash)."""
import numpy as np
import pytest

from darknet_py.data import custom_hash, image_to_label_path, read_labels
from darknet_py.data.labels import IMAGE_EXTENSIONS, track_id_base
from darknet_py.data_paths import image_to_label_path as legacy


@pytest.mark.parametrize("image, label", [
    ("data/obj/img1.jpg", "data/obj/img1.txt"),  # beside the image
    ("coco/images/train2014/a.jpg", "coco/labels/train2014/a.txt"),
    ("coco/images/val2017/a.jpg", "coco/labels/val2017/a.txt"),
    ("VOC2007/JPEGImages/0001.jpg", "VOC2007/labels/0001.txt"),
    ("c:\\coco\\images\\train2017\\a.png", "c:\\coco\\labels\\train2017\\a.txt"),
    ("d/images/x.png", "d/images/x.txt"),  # plain images/ is NOT renamed (commented out upstream)
    ("x.jpg.png", "x.jpg.txt"),  # only the extension at the very end
    (" a/b.jpeg\t", "a/b.txt"),  # trimmed
    ("a/b.gif", "a/b.gif"),  # unknown extension: unchanged (upstream warns)
])
def test_label_paths(image, label):
    assert image_to_label_path(image) == label
    assert legacy(image) == label


@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS)
def test_every_upstream_extension(ext):
    assert image_to_label_path("a/b" + ext) == "a/b.txt"


def test_track_id_hash_matches_upstream_fixture():
    # tests/data/train/*/step1/truth.f32 has track ids 4956000 + index for obj/dog.txt
    assert track_id_base("obj/dog.txt") == 4956000
    assert custom_hash("") == 5381


def test_read_labels_float32_and_track_ids(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("0 0.449 0.482 0.586 0.530\n\n2 0.755 0.213 0.286 0.165\n")
    lab = read_labels(str(p), classes=3)
    assert lab.ids.tolist() == [0, 2] and lab.xywh.dtype == np.float32 and not lab.issues
    assert lab.track.tolist() == [track_id_base(str(p)), track_id_base(str(p)) + 1]
    # read_boxes' edges in float32
    assert lab.ltrb[0, 0] == np.float32(0.449) - np.float32(0.586) / np.float32(2)


def test_bad_lines_are_reported_with_line_and_skipped(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("5 0.5 0.5 0.1 0.1\n0 abc 0.5 0.1 0.1\n0 1.5 0.5 0.1 0.1\n"
                 "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.2\n1 0.2 0.3\n1.0 0.5 0.5 0.1 0.1\n0 nan 0.5 0.1 0.1\n")
    lab = read_labels(str(p), classes=3)
    assert lab.ids.tolist() == [0] and lab.xywh[0].tolist() == pytest.approx([0.5, 0.5, 0.2, 0.2])
    assert [i.line for i in lab.issues] == [1, 2, 3, 5, 6, 7, 8]
    text = [str(i) for i in lab.issues]
    assert f"{p}:1:" in text[0] and "class_id = 5" in text[0] and "[from 0 to 2]" in text[0]
    assert "'abc' is not a number" in text[1]
    assert "x = 1.500000" in text[2] and "(0, 1]" in text[2]
    assert "w = 0.000000" in text[3]
    assert "expected 5 values" in text[4]
    assert "not an integer" in text[5]
    assert all(i.bad_label_list.startswith(str(p)) for i in lab.issues)


def test_missing_and_empty_label_files_are_negatives(tmp_path):
    missing = read_labels(str(tmp_path / "none.txt"), classes=3)
    assert len(missing) == 0 and missing.issues[0].kind == "missing_label"
    assert missing.issues[0].bad_list == str(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("")
    empty = read_labels(str(tmp_path / "empty.txt"), classes=3)
    assert len(empty) == 0 and not empty.issues
