"""darknet_py: upstream darknet's cfg, weights, inference and training in PyTorch.

The names below are imported on first use (PEP 562), so that `import darknet_py.hostmem` stays
cheap: the command line sets up the process before torch is loaded."""
import importlib as _importlib

_NAMES = {"CfgError": ".cfg", "Network": ".network", "build_network": ".network", "load_network": ".network"}
__all__ = ["load_network", "build_network", "Network", "CfgError"]


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(_importlib.import_module(_NAMES[name], __name__), name)
    try:
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(__all__))
