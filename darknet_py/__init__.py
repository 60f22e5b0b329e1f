"""darknet_py: upstream darknet's cfg, weights, inference and training in PyTorch."""
import os as _os

# PyTorch's CPU allocator asks for transparent huge pages for its large tensors when this is set
# (the kernel's "madvise" mode, the usual default, gives them only on request). Training allocates
# activations of tens of MB every step; with 4 KiB pages the page faults of those fresh buffers
# cost about as much as the arithmetic (benchmarks/dataloop.py: a 44 MB buffer filled in 19 ms
# without, 5 ms with). Read at the first large allocation; THP_MEM_ALLOC_ENABLE=0 turns it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# OpenMP threads that wait by sleeping, not spinning: the loader's threads share the cores with
# torch's, and spinning threads took the loader's time (benchmarks/dataloop.py: the data-bound
# loop 97 -> 115 images/s on 2 cores; compute-bound steps and inference unchanged within noise).
# Read when OpenMP starts, i.e. only if torch is not imported yet (darknet.py sets it first).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .cfg import CfgError
from .network import Network, build_network, load_network

__all__ = ["load_network", "build_network", "Network", "CfgError"]
