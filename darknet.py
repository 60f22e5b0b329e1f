#!/usr/bin/env python3
"""darknet.py: run, upstream darknet's command line; imported, upstream's Python module surface.

    ./darknet.py detector test cfg/coco.data cfg/yolov4.cfg yolov4.weights data/dog.jpg
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from darknet_py.cli import main

    sys.exit(main())
