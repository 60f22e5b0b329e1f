"""How tests/eval/data/rich was made (kept for the record; the tests use the stored files).

Run inside a copy of tests/data/map: writes rich/ (three new images, label files, the
`difficult` labels under rich/dif/, valid.txt, difficult.txt, rich.data, rich_dif.data).
The tests add rich/e3_dup.png (= val/v0.png), rich/v3_nolabel.png (= val/v3_vflip.png, no
label file: a negative image) and rich/letter.cfg (the map cfg with letter_box=1).
"""
import os

import cv2

GRAY = (127, 127, 127)


def labels(p):
    return [l.split() for l in open(p).read().splitlines() if l.strip()]


def write_labels(p, rows):
    with open(p, "w") as f:
        f.write("".join("%s %.6f %.6f %.6f %.6f\n" % (r[0], *map(float, r[1:])) for r in rows))


def main():
    os.makedirs("rich/dif", exist_ok=True)
    # e0: v0 padded to 128 wide x 192 high; its bicycle becomes a `difficult` object
    rows = [[c, x, (float(y) * 128 + 32) / 192, w, float(h) * 128 / 192] for c, x, y, w, h in labels("val/v0.txt")]
    cv2.imwrite("rich/e0_tall.png", cv2.copyMakeBorder(cv2.imread("val/v0.png"), 32, 32, 0, 0,
                                                       cv2.BORDER_CONSTANT, value=GRAY))
    write_labels("rich/e0_tall.txt", [r for r in rows if r[0] != "0"])
    write_labels("rich/dif/e0_tall.txt", [r for r in rows if r[0] == "0"])
    # e1: v1_flip padded to 192 wide x 128 high
    cv2.imwrite("rich/e1_wide.png", cv2.copyMakeBorder(cv2.imread("val/v1_flip.png"), 0, 0, 40, 24,
                                                       cv2.BORDER_CONSTANT, value=GRAY))
    write_labels("rich/e1_wide.txt", [[c, (float(x) * 128 + 40) / 192, y, float(w) * 128 / 192, h]
                                      for c, x, y, w, h in labels("val/v1_flip.txt")])
    # e2: v2_shift stretched to 160 x 96 (relative labels unchanged)
    cv2.imwrite("rich/e2_stretch.png", cv2.resize(cv2.imread("val/v2_shift.png"), (160, 96),
                                                  interpolation=cv2.INTER_AREA))
    write_labels("rich/e2_stretch.txt", labels("val/v2_shift.txt"))
    # e3 (the v0 image): the dog twice, a truck where there is none; the real truck is `difficult`
    v0 = labels("val/v0.txt")
    write_labels("rich/e3_dup.txt", [v0[0], v0[1], v0[1], ["2", "0.2", "0.2", "0.1", "0.1"]])
    write_labels("rich/dif/e3_dup.txt", [v0[2]])
    # v2_shift: its dog is also listed as difficult (matched detections are unaffected)
    write_labels("rich/dif/v2_shift.txt", [r for r in labels("val/v2_shift.txt") if r[0] == "1"])
    for n in ("e1_wide", "e2_stretch", "v0", "v3_nolabel", "v1_flip"):
        open("rich/dif/%s.txt" % n, "w").close()
    images = ["rich/e0_tall.png", "rich/e1_wide.png", "val/v2_shift.png", "rich/e2_stretch.png",
              "rich/e3_dup.png", "rich/v3_nolabel.png", "val/v1_flip.png", "val/v0.png"]
    with open("rich/valid.txt", "w") as f:
        f.write("".join(p + "\n" for p in images))
    with open("rich/difficult.txt", "w") as f:
        f.write("".join("rich/dif/" + os.path.basename(p) + "\n" for p in images))
    with open("rich/rich.data", "w") as f:
        f.write("classes=3\nvalid=rich/valid.txt\nnames=obj.names\n")
    with open("rich/rich_dif.data", "w") as f:
        f.write("classes=3\nvalid=rich/valid.txt\nnames=obj.names\ndifficult=rich/difficult.txt\n")


if __name__ == "__main__":
    main()
