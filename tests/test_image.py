"""Tests for darknet_py.image against upstream's load_image_color / resize_image /
letterbox_image outputs (tests/data/image/, made by upstream's CPU build), plus
hand-worked cases and the detector-test drawing and printing."""
from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from darknet_py.image import (
    ImageError,
    class_color,
    draw_detections,
    label_text,
    letterbox_image,
    load_image_color,
    print_detections,
    resize_image,
    save_image,
    to_bgr_uint8,
)

DATA = Path(__file__).parent / "data" / "image"
DOG = DATA / "dog_200x150.png"
SIZES = [(160, 160), (96, 128)]


def _fixture(kind: str, w: int, h: int) -> np.ndarray:
    return np.fromfile(DATA / f"dog_200x150_{kind}_{w}x{h}.f32", dtype="<f4").reshape(3, h, w)


def _png(arr: np.ndarray, colour_type: int, depth: int = 8) -> bytes:
    """A minimal PNG encoder, for layouts cv2 cannot write (grey+alpha, 16-bit grey)."""
    h = arr.shape[0]
    dtype = ">u2" if depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", arr.shape[1], h, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------ upstream fixtures


@pytest.mark.parametrize("w,h", SIZES)
def test_resize_matches_upstream(w, h):
    ref = _fixture("resize", w, h)
    out = resize_image(load_image_color(DOG), w, h)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1 / 255
    # load_image_color(path, w, h) is upstream's load + resize in one call.
    assert np.abs(load_image_color(DOG, w, h) - ref).max() <= 1 / 255


@pytest.mark.parametrize("w,h", SIZES)
def test_letterbox_matches_upstream(w, h):
    ref = _fixture("letterbox", w, h)
    out = letterbox_image(load_image_color(DOG), w, h)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1 / 255


def test_load_layout():
    im = load_image_color(DOG)
    assert im.shape == (3, 150, 200) and im.dtype == np.float32 and im.flags.c_contiguous
    bgr = cv2.imread(str(DOG), cv2.IMREAD_COLOR)
    assert np.array_equal(im[0], bgr[:, :, 2] / np.float32(255))  # channel 0 is red


# ----------------------------------------------------------------- hand-worked resize


def test_resize_2x2_to_3x3_by_hand():
    # scale = (2-1)/(3-1) = 0.5 on both axes.
    # Column pass, per row [a, b]: c=0 -> a; c=1: sx=0.5 -> 0.5a + 0.5b; c=2 -> last col b.
    #   [0, .25] -> [0, .125, .25];   [.5, .75] -> [.5, .625, .75]
    # Row pass: r=0 -> row 0; r=1: sy=0.5 -> half of each; r=2 (last): sy=1, dy=0 -> row 1.
    im = np.array([[[0.0, 0.25], [0.5, 0.75]]], dtype=np.float32)
    expected = np.array([[[0.0, 0.125, 0.25], [0.25, 0.375, 0.5], [0.5, 0.625, 0.75]]])
    np.testing.assert_array_equal(resize_image(im, 3, 3), expected)


def test_resize_3x1_to_2x2_by_hand():
    # Columns: w_scale = (3-1)/(2-1) = 2; c=0 -> x0, c=1 (last) -> x2. One source row:
    # every output row copies it (h_scale = 0, second tap skipped).
    im = np.array([[[0.1, 0.2, 0.3]]], dtype=np.float32)
    expected = np.float32([[[0.1, 0.3], [0.1, 0.3]]])
    np.testing.assert_array_equal(resize_image(im, 2, 2), expected)


def test_resize_to_one_column_takes_last_column():
    im = np.arange(12, dtype=np.float32).reshape(1, 3, 4) / 12
    np.testing.assert_array_equal(resize_image(im, 1, 3), im[:, :, 3:])


def test_resize_same_size_is_a_copy():
    im = load_image_color(DOG)
    out = resize_image(im, 200, 150)
    assert out is not im and np.array_equal(out, im)


def test_resize_last_row_quirk():
    # 2 rows -> 42 rows: float32(41) * float32(1/41) is just below 1, so upstream's last
    # row samples position 0.99999994 -> iy = 0, dy ~ 1, and only the (1 - dy) tap is
    # kept: the row comes out nearly black. We keep that to stay bit-compatible.
    scale = np.float32(1) / np.float32(41)
    sy = np.float32(41) * scale
    assert sy < 1
    im = np.ones((1, 2, 3), dtype=np.float32)
    out = resize_image(im, 3, 42)
    np.testing.assert_allclose(out[:, :-1], 1, atol=1e-6)
    np.testing.assert_array_equal(out[:, -1], np.float32(1) - sy)


def test_letterbox_offsets():
    # 200x150 into 96x128: 96/200 < 128/150 -> new_w = 96, new_h = 150*96//200 = 72,
    # centred at dy = (128 - 72) // 2 = 28.
    im = np.full((3, 150, 200), 0.25, dtype=np.float32)
    out = letterbox_image(im, 96, 128)
    assert np.all(out[:, :28] == 0.5) and np.all(out[:, 100:] == 0.5)
    np.testing.assert_allclose(out[:, 28:100], 0.25, atol=1e-7)


def _last_row_quirk(n_src: int, n_dst: int) -> bool:
    if n_src == 1 or n_dst == 1:
        return False
    scale = np.float32(n_src - 1) / np.float32(n_dst - 1)
    return np.float32(n_dst - 1) * scale < n_src - 1


dims = st.integers(min_value=1, max_value=40)


@settings(max_examples=200, deadline=None)
@given(c=st.sampled_from([1, 3]), iw=dims, ih=dims, w=dims, h=dims,
       v=st.floats(min_value=0, max_value=1, width=32))
def test_resize_constant_stays_constant(c, iw, ih, w, h, v):
    assume(not _last_row_quirk(ih, h))  # covered by test_resize_last_row_quirk
    im = np.full((c, ih, iw), v, dtype=np.float32)
    out = resize_image(im, w, h)
    assert out.shape == (c, h, w) and out.dtype == np.float32
    # a last-row position a few float32 ulps past the last source row leaves (1 - d) with
    # d ~ 2e-6 (e.g. 30 -> 23 rows), as in upstream
    np.testing.assert_allclose(out, v, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(iw=dims, ih=dims, w=dims, h=dims)
def test_letterbox_has_requested_size(iw, ih, w, h):
    im = np.random.default_rng(0).random((3, ih, iw), dtype=np.float32)
    out = letterbox_image(im, w, h)
    assert out.shape == (3, h, w) and out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))


# ------------------------------------------------------------------ loading / saving


def test_load_grey_png_gives_three_equal_channels(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    im = load_image_color(tmp_path / "g.png")
    assert im.shape == (3, 4, 5)
    for k in range(3):
        np.testing.assert_array_equal(im[k], grey / np.float32(255))


def test_load_drops_alpha_without_compositing(tmp_path):
    bgra = np.zeros((2, 3, 4), dtype=np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    im = load_image_color(tmp_path / "a.png")
    np.testing.assert_array_equal(im[:, 0, 0], np.float32([30, 20, 10]) / np.float32(255))


def test_load_grey_alpha_and_16_bit(tmp_path):
    la = np.zeros((2, 3, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 100, 7
    (tmp_path / "la.png").write_bytes(_png(la, colour_type=4))
    assert np.all(load_image_color(tmp_path / "la.png") == np.float32(100) / np.float32(255))
    deep = np.full((2, 3), 0xABCD, dtype=np.uint16)
    (tmp_path / "d.png").write_bytes(_png(deep, colour_type=0, depth=16))
    assert np.all(load_image_color(tmp_path / "d.png") == np.float32(0xAB) / np.float32(255))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg") as err:
        load_image_color(tmp_path / "nope.jpg")
    assert isinstance(err.value, OSError) and err.value.path.endswith("nope.jpg")
    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.path, copy.message) == (err.value.path, err.value.message)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image_color(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        load_image_color(tmp_path / "empty.png")


def test_uint8_conversion_truncates():
    im = np.array([[[0.999, 0.5, 1.5, -0.1]]] * 3, dtype=np.float32)
    u8 = to_bgr_uint8(im)
    assert u8.shape == (1, 4, 3) and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8[0, :, 0], [254, 127, 255, 0])


def test_save_appends_jpg_like_upstream(tmp_path):
    im = load_image_color(DOG)
    written = save_image(im, tmp_path / "predictions")
    assert written == str(tmp_path / "predictions.jpg")
    assert cv2.imread(written).shape == (150, 200, 3)
    png = save_image(im, tmp_path / "copy.png")
    assert png.endswith("copy.png")
    np.testing.assert_array_equal(cv2.imread(png), to_bgr_uint8(im))


# ------------------------------------------------------------------ detections output

NAMES = ["dog", "cat", "truck"]


def _det(x, y, w, h, probs, objectness=1.0):
    return {"x": x, "y": y, "w": w, "h": h, "objectness": objectness, "probs": probs}


def _printed(*args, **kwargs) -> list[str]:
    buf = io.StringIO()
    print_detections(*args, file=buf, **kwargs)
    return buf.getvalue().splitlines()


def test_print_orders_by_left_edge_then_best_class():
    dets = [
        _det(0.6, 0.5, 0.2, 0.2, {0: 0.9, 2: 0.5}),  # left edge 0.5
        _det(0.3, 0.5, 0.2, 0.2, {1: 0.3, 2: 0.8}),  # left edge 0.2: printed first
        _det(0.1, 0.1, 0.1, 0.1, {0: 0.1}),          # nothing above thresh
    ]
    assert _printed(dets, NAMES, 0.25, 200, 150, ext_output=False) == [
        "truck: 80%", "cat: 30%", "dog: 90%", "truck: 50%"]
    box = "\t(left_x:   40   top_y:   60   width:   40   height:   30)"
    assert _printed(dets, NAMES, 0.25, 200, 150, ext_output=True)[:2] == [
        "truck: 80%" + box, "cat: 30%" + box]


def test_print_ext_format_and_c_rounding():
    # (0.25 - 0.125) * 100 = 12.5 exactly: C's round() gives 13 (Python's round: 12).
    det = _det(0.25, 0.5, 0.25, 0.5, {2: 0.59})
    assert _printed([det], NAMES, 0.25, 100, 24, ext_output=True) == [
        "truck: 59%\t(left_x:   13   top_y:    6   width:   25   height:   12)"]


def test_print_matches_upstream_log_line():
    # Line from upstream's `detector test ... -ext_output` log (map/test_ext.log).
    det = _det((87 + 12.5) / 200, (12 + 11.5) / 100, 25 / 200, 23 / 100, {2: 0.59})
    assert _printed([det], NAMES, 0.25, 200, 100, ext_output=True) == [
        "truck: 59%\t(left_x:   87   top_y:   12   width:   25   height:   23)"]


def test_dont_show_is_never_the_best_class():
    names = ["dont_show_person", "cat"]
    det = _det(0.5, 0.5, 0.2, 0.2, {0: 0.9, 1: 0.5})
    # Upstream skips dont_show only when choosing the best class; the other classes
    # above thresh are still printed and added to the label.
    assert _printed([det], names, 0.25, 100, 100, ext_output=False) == [
        "cat: 50%", "dont_show_person: 90%"]
    assert label_text(det, 1, names, 0.25) == "cat: 0.50, dont_show_person"
    assert _printed([_det(0.5, 0.5, 0.2, 0.2, {0: 0.9})], names, 0.25, 9, 9, False) == []


def test_class_colors_follow_upstream_ramp():
    # offset = class * 123457 % classes; 3 classes: class 0 -> 0, class 1 -> 1.
    # offset 0 is colours[0] = (1,0,1) read as (c=2, c=1, c=0) -> (1, 0, 1).
    assert class_color(0, 3) == (1.0, 0.0, 1.0)
    # offset 1: ratio 5/3, between colours[1]=(0,0,1) and colours[2]=(0,1,1) at 2/3.
    np.testing.assert_allclose(class_color(1, 3), (1.0, 2 / 3, 0.0), atol=1e-6)


def test_draw_box_and_label():
    im = np.zeros((3, 100, 200), dtype=np.float32)
    det = _det(0.5, 0.5, 0.5, 0.5, {1: 0.9, 2: 0.3})
    out = draw_detections(im, [det], NAMES, 0.25)
    assert not im.any() and out.shape == im.shape  # input untouched
    colour = np.float32(class_color(1, 3))[:, None]
    # left = 0.25*200 = 50, right = 150, top = 0.25*100 = 25, bot = 75; width 1.
    np.testing.assert_array_equal(out[:, 75, 50:151], np.broadcast_to(colour, (3, 101)))
    np.testing.assert_array_equal(out[:, 25:76, 50], np.broadcast_to(colour, (3, 51)))
    np.testing.assert_array_equal(out[:, 25:76, 150], np.broadcast_to(colour, (3, 51)))
    assert not out[:, 26:75, 51:150].any()  # inside the box
    assert not out[:, 76:].any() and not out[:, :, :50].any()
    # The label background sits above the box: rows int(25 - (3 + 18*0.1)) = 20 .. 25,
    # with the black text on its upper rows (baseline at top - 4 = 21).
    np.testing.assert_array_equal(out[:, 22:25, 50:151], np.broadcast_to(colour[:, None], (3, 3, 101)))
    assert np.any(out[:, 20, 50:151] < colour) and not out[:, :20].any()
    assert label_text(det, 1, NAMES, 0.25) == "cat: 0.90, truck"


def test_draw_line_width_and_clamping():
    im = np.full((3, 1000, 400), 0.5, dtype=np.float32)
    # A box running off the left and bottom edges; width int(1000 * .002) = 2.
    det = _det(0.0, 0.9, 0.5, 0.4, {0: 0.8})
    out = draw_detections(im, [det], NAMES, 0.25, colors={0: (0.0, 1.0, 0.0)})
    green = np.float32([0, 1, 0])[:, None]
    # left clamps to 0, right = int(0.25*400) = 100, top = int(0.7*1000) = 700, bot = 999.
    for row in (998, 999):
        np.testing.assert_array_equal(out[:, row, 0:101], np.broadcast_to(green, (3, 101)))
    for col in (0, 1, 99, 100):
        np.testing.assert_array_equal(out[:, 700:1000, col], np.broadcast_to(green, (3, 300)))
    assert np.all(out[:, 702:998, 2:99] == 0.5)
