"""Upstream: the detector training data path (src/data.c, src/image_opencv.cpp,
src/utils.c, the data side of src/detector.c).

    from darknet_py.data import read_obj_data, read_list, DetectionLoader
    d = read_obj_data("obj.data")
    loader = DetectionLoader(read_list(d.train), width=416, height=416, classes=d.classes)
    x, truth = loader.load(8)                      # one batch, in this process
    for x, truth in loader.batches(8, sizes_fn):   # prepared ahead in worker processes
        ...
    loader.close()

Modules: files (obj.data, list files), labels (label paths and files), crand (upstream's
random helpers), truth (truth rows), augment (image operations), detection (one sample /
batch), loader (DetectionLoader, worker processes, multi-scale).
"""
from .detection import AugmentOptions, DataError, load_batch, load_sample
from .files import DataFileError, ObjData, read_list, read_obj_data
from .labels import IMAGE_EXTENSIONS, Issue, custom_hash, image_to_label_path, read_labels
from .loader import (DetectionLoader, MultiScale, Reporter, default_workers, last_detection_layer,
                     loader_from_net, sizes_from_net)

__all__ = [
    "read_obj_data", "ObjData", "read_list", "DataFileError", "DataError",
    "DetectionLoader", "loader_from_net", "MultiScale", "sizes_from_net", "last_detection_layer",
    "default_workers", "Reporter", "AugmentOptions", "load_batch", "load_sample",
    "image_to_label_path", "custom_hash", "read_labels", "Issue", "IMAGE_EXTENSIONS",
]
