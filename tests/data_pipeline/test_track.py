"""track=1 sequence loading (darknet_py/data/detection.py sequential_paths; upstream's
get_sequential_paths and load_data_detection's augmentation_calculated)."""
import numpy as np

from darknet_py.data.crand import CRandom
from darknet_py.data.detection import AugmentOptions, sequential_paths


def test_timelines_are_consecutive_frames_speed_apart():
    paths = [f"f{i}.png" for i in range(10)]
    opt = AugmentOptions(classes=1, track=1, augment_speed=1, track_mini_batch=2, track_chunks=1,
                         hue=0.1, flip=1)
    got, draws = sequential_paths(paths, 6, opt, CRandom(5))
    idx = [int(p[1:-4]) for p in got]
    for t in (0, 1):  # image i is timeline i % 2, step i // 2
        frames = idx[t::2]
        assert [(b - a) % 10 for a, b in zip(frames, frames[1:])] == [1, 1]
    assert all(d is draws[0] for d in draws)  # one augmentation for the whole sequence


def test_chunks_start_new_timelines_and_draw_their_own_augmentation():
    paths = [f"f{i}.png" for i in range(1000)]
    opt = AugmentOptions(classes=1, track=1, augment_speed=3, track_mini_batch=2, track_chunks=2, hue=0.1)
    got, draws = sequential_paths(paths, 8, opt, CRandom(1))
    assert len(got) == 8 and draws[0] is draws[3] and draws[4] is draws[7] and draws[0] is not draws[4]
    idx = np.array([int(p[1:-4]) for p in got])
    for c in (0, 1):
        chunk = idx[4 * c:4 * c + 4]
        steps = {(chunk[t + 2] - chunk[t]) % 1000 for t in (0, 1)}
        assert len(steps) == 1 and 1 <= steps.pop() <= 3  # one speed per chunk, in 1..augment_speed
