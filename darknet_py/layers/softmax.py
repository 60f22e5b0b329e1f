"""Upstream: make_softmax_layer / forward_softmax_layer (src/softmax_layer.c),
parse_softmax (src/parser.c), softmax_cpu (src/blas.c), read_tree (src/tree.c).

Softmax over each of `groups` consecutive slices of the flat per-image input, with
`temperature`: exp(x/t - max/t) / sum. With tree=FILE (a hierarchy such as yolo9000's
9k.tree) it is a softmax over each sibling group of the tree instead. Upstream's summary
shows the input shape but a 0x0x0 output, so the next layer is built with w=h=c=0.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..cfg import CfgError
from . import register
from .base import BuildContext, Layer


def resolve_data_path(s, key: str, value: str) -> Path | None:
    """A data file named in a cfg: as upstream (relative to the current directory), else
    relative to the cfg's folder or its parent (darknet's cfg/ and data/ are siblings)."""
    p = Path(value)
    candidates = [p] if p.is_absolute() else [p, Path(s.path).parent / p, Path(s.path).parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_tree_groups(path: Path) -> list[int]:
    """Sizes of the sibling groups of a tree file, in order (upstream's read_tree group_size).

    Each line is `name parent`; a new group starts whenever the parent changes. Like
    upstream, the first group may be empty (when the first parent is not -1).
    """
    sizes: list[int] = []
    last_parent, size = -1, 0
    for line in path.read_text().splitlines():
        parts = line.split()
        parent = int(parts[1]) if len(parts) > 1 else -1
        if parent != last_parent:
            sizes.append(size)
            size, last_parent = 0, parent
        size += 1
    sizes.append(size)
    return sizes


class SoftmaxTree:
    """A tree=FILE option: the group sizes, loaded when the layer is built if the file is
    there; otherwise the error is raised when the layer first needs it (forward)."""

    def __init__(self, s, key: str = "tree"):
        self.value = s.str(key, None)
        self.groups: list[int] | None = None
        self.error: CfgError | None = None
        if self.value is None:
            return
        path = resolve_data_path(s, key, self.value)
        if path is None:
            self.error = s.error(key, f"cannot open tree file '{self.value}'")
            return
        try:
            self.groups = read_tree_groups(path)
        except (OSError, ValueError) as e:
            self.error = s.error(key, f"cannot read tree file '{self.value}': {e}")

    def __bool__(self) -> bool:
        return self.value is not None

    def sizes(self) -> list[int]:
        if self.error is not None:
            raise self.error
        return self.groups

    @property
    def n(self) -> int:
        return sum(self.sizes())


def softmax_groups(x: torch.Tensor, sizes: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Softmax over consecutive slices of the last dimension (upstream's softmax_tree)."""
    total = sum(sizes)
    parts = []
    for part in torch.split(x[..., :total], [s for s in sizes if s], dim=-1):
        parts.append(torch.softmax(part / temperature, dim=-1))
    return torch.cat(parts + [x[..., total:]], dim=-1)


@register("softmax", "soft")
class Softmax(Layer):
    type_name = "softmax"
    type_id = 5

    def __init__(self, ctx: BuildContext):
        super().__init__(ctx)
        s = ctx.section
        self.groups = s.int("groups", 1)
        if self.groups < 1 or ctx.inputs % self.groups:
            raise s.error("groups", f"groups={self.groups} must be >= 1 and divide the inputs ({ctx.inputs})")
        self.inputs = self.outputs = ctx.inputs
        self.temperature = s.float("temperature", 1.0)
        if self.temperature == 0:
            raise s.error("temperature", "must not be 0")
        self.tree = SoftmaxTree(s)
        self.spatial = s.float("spatial", 0.0)
        self.noloss = s.int("noloss", 0)
        # upstream sets w, h, c from the input but leaves out_w/out_h/out_c at 0

    def forward(self, x, outputs=None):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        if self.tree:
            y = softmax_groups(flat, self.tree.sizes(), self.temperature)
        else:
            y = torch.softmax(flat.reshape(n, self.groups, -1) / self.temperature, dim=-1)
        return y.reshape(n, self.outputs, 1, 1)
