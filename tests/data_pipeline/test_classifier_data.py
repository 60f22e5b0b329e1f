"""Classifier data (darknet_py/data/classifier.py): truth from the path, hierarchy, augmentation
geometry, mixup / cutmix / mosaic label arithmetic, bad data skipped."""
import numpy as np
import pytest

from darknet_py.data.classifier import (SECRET_NUM, ClassifierAugment, ClassifierSource, Hierarchy, fill_truth,
                                        load_classifier_batch, load_classifier_sample, random_augment_image,
                                        read_label_names)
from darknet_py.data.crand import CRandom
from darknet_py.data.detection import DataError
from darknet_py.data.files import DataFileError
from darknet_py.image import save_image

LABELS = ("bird", "cat", "dog")
# animal, vehicle (roots); dog, cat (animal's); car, truck (vehicle's)
TREE = Hierarchy(parents=(-1, -1, 0, 0, 1, 1), group_sizes=(2, 2, 2),
                 names=("animal", "vehicle", "dog", "cat", "car", "truck"),
                 leaf=(False, False, True, True, True, True))


def test_fill_truth_one_hot_and_smoothing():
    t, n = fill_truth("data/train/dog_01.png", LABELS)
    assert n == 1 and t.tolist() == [0, 0, 1]
    t, n = fill_truth("data/train/dog_01.png", LABELS, eps=0.1)
    # fill_truth_smooth: 1 - eps for the label, eps / (k - 1) for the others
    np.testing.assert_array_equal(t, np.float32([0.05, 0.05, 0.9]))
    assert fill_truth("data/hotdog_cat.png", LABELS)[1] == 2
    assert fill_truth("data/x.png", LABELS)[1] == 0


def test_fill_truth_hierarchy():
    t, n = fill_truth("img/dog.jpg", TREE.names, hierarchy=TREE)
    # dog and its parent animal set; dog's group and the roots known; vehicle's children unknown
    assert n == 1
    np.testing.assert_array_equal(t, np.float32([1, 0, 1, 0, SECRET_NUM, SECRET_NUM]))


def test_read_label_names(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("bird\r\ncat\ndog\n\n")
    assert read_label_names(str(f)) == ["bird", "cat", "dog"]
    f.write_text("bird\n\ndog\n")
    with pytest.raises(DataFileError, match=r"labels.txt:2"):
        read_label_names(str(f))


def _images(tmp_path, specs):
    """Flat-colour 40x40 images; specs: [(name, value)] -> their paths."""
    paths = []
    for name, value in specs:
        p = tmp_path / name
        save_image(np.full((3, 40, 40), value, np.float32), str(p))
        paths.append(str(p))
    return paths


def opt(**kw):
    base = dict(labels=LABELS, min_crop=32, max_crop=32, angle=0, aspect=1, hue=0, saturation=1, exposure=1, flip=0,
                dontuse_opencv=True)
    base.update(kw)
    return ClassifierAugment(**base).check()


def test_bad_labels_are_reported_and_skipped(tmp_path):
    paths = _images(tmp_path, [("a_dog.png", 0.5), ("nothing.png", 0.5), ("cat_dog.png", 0.5)])
    x, y, issues = load_classifier_batch(ClassifierSource(paths, opt()), 6, 32, 32, seed=1)
    assert (y.argmax(1) == 2).all() and (y.sum(1) == 1).all()
    reported = {i.path.rsplit("/", 1)[-1] for i in issues}
    assert reported <= {"nothing.png", "cat_dog.png"} and all(i.bad_label_list for i in issues)
    with pytest.raises(DataError):
        load_classifier_batch(ClassifierSource(paths[1:2], opt()), 2, 32, 32, seed=1)


def test_random_augment_is_the_identity_without_augmentation():
    im = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    out = random_augment_image(im, CRandom(0), angle=0, aspect=1, low=32, high=32, size=32)
    np.testing.assert_array_equal(out, im)
    # a 64x48 image at shorter side 32: scale 2/3, a 32x32 window inside the scaled 43x32 image
    big = np.random.default_rng(1).random((3, 48, 64)).astype(np.float32)
    out = random_augment_image(big, CRandom(2), angle=10, aspect=0.8, low=32, high=40, size=32)
    assert out.shape == (3, 32, 32) and np.isfinite(out).all()


@pytest.mark.parametrize("mixup", [1, 2, 3])
def test_mixed_labels_follow_the_pixels(tmp_path, mixup):
    """mixup averages; cutmix and mosaic weigh each label by the share of the image it covers:
    with flat images (bird 0.2, dog 0.8) the mean pixel value tells that share."""
    paths = _images(tmp_path, [("bird.png", 0.2), ("dog.png", 0.8)])
    src = ClassifierSource(paths, opt(mixup=mixup))
    rng, mixed = CRandom(3), 0
    for _ in range(40):
        _, x, y = load_classifier_sample(src, 32, 32, rng, [])
        assert y.sum() == pytest.approx(1, abs=1e-6)
        dog_share = (float(x.mean()) - 0.2) / 0.6  # the pixel values are 0.2 or 0.8 (PNG: 51/255, 204/255)
        assert y[2] == pytest.approx(dog_share, abs=0.01)
        mixed += 0 < y[2] < 1
    assert mixed > 5  # about half the images are mixed, half of those with the other class


def test_cutmix_or_mosaic_keeps_labels_normalised(tmp_path):
    paths = _images(tmp_path, [("bird.png", 0.2), ("dog.png", 0.8)])
    src = ClassifierSource(paths, opt(mixup=4, label_smooth_eps=0.1))
    x, y, _ = load_classifier_batch(src, 16, 32, 32, seed=4)
    np.testing.assert_allclose(y.sum(1), 1, atol=1e-5)
    assert y.min() >= 0.05 - 1e-6
