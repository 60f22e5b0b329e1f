#!/usr/bin/env python3
"""darknet.py: run, upstream darknet's command line; imported, upstream's Python module.

    ./darknet.py detector test cfg/coco.data cfg/yolov4.cfg yolov4.weights data/dog.jpg

    import darknet   # what upstream's darknet.py (the libdarknet binding) provides:
    network, class_names, colors = darknet.load_network(cfg, data, weights)
    detections = darknet.detect_image(network, class_names, image, thresh=.25)

The module surface is darknet_py.compat's (see there); importing prints nothing.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in (os.path.abspath(p) for p in sys.path):
    sys.path.insert(0, _HERE)

if __name__ == "__main__":
    from darknet_py.hostmem import restart_with_malloc_env  # before torch is loaded

    restart_with_malloc_env()
    try:
        import torch  # noqa: F401
    except ImportError:
        # run from a shell without the project's environment: use the one scripts/setup.sh made
        venv = os.path.join(_HERE, ".venv")
        python = os.path.join(venv, "bin", "python")
        if os.path.exists(python) and os.path.abspath(sys.prefix) != venv:
            os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
        sys.exit("darknet.py needs PyTorch: run `bash scripts/setup.sh` (it creates .venv), or install torch")
    from darknet_py.cli import main

    sys.exit(main())
else:
    from darknet_py.compat import *  # noqa: F401,F403
    from darknet_py.compat import __all__  # noqa: F401
