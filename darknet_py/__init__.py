"""darknet_py: upstream darknet's cfg, weights, inference and training in PyTorch."""
from .cfg import CfgError
from .network import Network, build_network, load_network

__all__ = ["load_network", "build_network", "Network", "CfgError"]
