"""The cfg side of the pipeline (cfg -> network -> layers -> train -> eval -> outputs): what a
.cfg or .data file says, before any layer is built.

Modules: parser (cfg/data text -> [Section] of Options that remember their line; typed
getters; unused keys reported; errors naming file:line:key: upstream's parser.c,
option_list.c), options (the typed [net] options, NetOptions). The names most callers
need are importable from here (`from darknet_py.cfg import CfgError, read_cfg`).
"""
from .options import NetOptions
from .parser import CfgError, Option, Section, parse_cfg_text, read_cfg, read_data_cfg, warn_unused

__all__ = ["CfgError", "Option", "Section", "parse_cfg_text", "read_cfg", "read_data_cfg", "warn_unused",
           "NetOptions"]
