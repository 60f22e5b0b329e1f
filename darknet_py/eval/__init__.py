"""Evaluation commands of upstream's src/detector.c and src/demo.c.

    from darknet_py.eval import validate_detector_map
    m = validate_detector_map(net, "obj.data", thresh=0.25, iou_thresh=0.5, points=0)

Modules: map (mAP report, also used by training's -map), valid (results files for VOC,
COCO, ImageNet, BDD, KITTI scorers), coco (COCO results and pycocotools scoring), recall,
anchors (calc_anchors' k-means), demo (video), common (shared loading and checks).
"""
from .anchors import calc_anchors
from .common import EvalError, load_eval_network
from .map import map_from_files, validate_detector_map
from .recall import validate_detector_recall
from .valid import validate_detector

__all__ = ["validate_detector_map", "map_from_files", "validate_detector", "validate_detector_recall",
           "calc_anchors", "EvalError", "load_eval_network"]
