"""The outputs side of the pipeline (cfg -> network -> layers -> train -> eval -> outputs): what
comes out of a network and of a run, and the files they are written to.

Modules: detections (get_network_boxes: the detection layers' outputs as boxes, and the NMS
variants: upstream's network.c, box.c), weights (.weights read/write, header rules, partial
files: parser.c), chart (chart.png: loss and mAP over iterations), export (the network as
ONNX), fileio (atomic writes: a file is replaced whole or not at all, never partially).
"""
