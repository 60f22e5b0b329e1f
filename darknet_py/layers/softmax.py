"""Upstream: make_softmax_layer / forward_softmax_layer / backward_softmax_layer
(src/softmax_layer.c), parse_softmax (src/parser.c), softmax_cpu / softmax_x_ent_cpu
(src/blas.c), read_tree (src/tree.c).

Softmax over each of `groups` consecutive slices of the flat per-image input, with
`temperature`: exp(x/t - max/t) / sum. With tree=FILE (a hierarchy such as yolo9000's
9k.tree) it is a softmax over each sibling group of the tree instead. Upstream's summary
shows the input shape but a 0x0x0 output, so the next layer is built with w=h=c=0.

Training: with truth, the forward also computes the cross-entropy delta `truth - output`
and cost sum(-log(output) where truth != 0) (`loss_delta`). The backward hands the layer's
delta to the previous layer unchanged (an axpy, not the softmax's Jacobian, and without
1/temperature), whatever a later [cost] layer added to it: the training forward's output is
the softmax in value and the identity in gradient.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..cfg import CfgError
from . import register
from .base import BuildContext, Layer, LayerLoss

# fill_hierarchy's mark for the truth of a tree group the label says nothing about
SECRET_NUM = -1234


def resolve_data_path(s, value: str) -> Path | None:
    """A data file named in a cfg: as upstream (relative to the current directory), else
    relative to the cfg's folder or its parent (darknet's cfg/ and data/ are siblings)."""
    p = Path(value)
    candidates = [p] if p.is_absolute() else [p, Path(s.path).parent / p, Path(s.path).parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c
    return None


def read_tree(path: Path) -> tuple[list[str], list[int], list[int]]:
    """Upstream's read_tree: the node names, their parents, and the sizes of the sibling
    groups in order.

    Each line is `name parent`; a new group starts whenever the parent changes. Like
    upstream, the first group may be empty (when the first parent is not -1).
    """
    names: list[str] = []
    parents: list[int] = []
    sizes: list[int] = []
    last_parent, size = -1, 0
    lines = path.read_bytes().decode("latin-1").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text after the last newline, when there is any, is a line too
    for line in lines:
        # upstream: sscanf(line, "%s %d", id, &parent) with parent -1 unless an integer follows
        parts = line.split("\x00", 1)[0].split()
        m = re.match(r"[+-]?\d+", parts[1]) if len(parts) > 1 else None
        parent = int(m.group()) if m else -1
        names.append(parts[0] if parts else "")
        parents.append(parent)
        if parent != last_parent:
            sizes.append(size)
            size, last_parent = 0, parent
        size += 1
    sizes.append(size)
    return names, parents, sizes


class SoftmaxTree:
    """A tree=FILE option: the group sizes, loaded when the layer is built if the file is
    there; otherwise the error is raised when the layer first needs it (forward)."""

    def __init__(self, s, key: str = "tree"):
        self.value = s.str(key, None)
        self.section, self.key = s, key
        self.groups: list[int] | None = None  # sibling group sizes, in order
        self.names: list[str] = []
        self.parents: list[int] = []
        self.error: CfgError | None = None
        if self.value is None:
            return
        path = resolve_data_path(s, self.value)
        if path is None:
            self.error = s.error(key, f"cannot open tree file '{self.value}'")
            return
        try:
            self.names, self.parents, self.groups = read_tree(path)
        except (OSError, ValueError) as e:
            self.error = s.error(key, f"cannot read tree file '{self.value}': {e}")

    def error_for(self, message: str) -> CfgError:
        return self.section.error(self.key, message)

    def __bool__(self) -> bool:
        return self.value is not None

    def sizes(self) -> list[int]:
        if self.error is not None:
            raise self.error
        return self.groups

    @property
    def n(self) -> int:
        return sum(self.sizes())


def softmax_groups(x: torch.Tensor, sizes: list[int], temperature: float = 1.0,
                   rest_zero: bool = False) -> torch.Tensor:
    """Softmax over consecutive slices of the last dimension (upstream's softmax_tree); the
    values after the tree's entries are kept (in place, as [region]) or zero (a separate
    output buffer that upstream never writes there, as [softmax])."""
    total = sum(sizes)
    if total > x.shape[-1]:
        raise ValueError(f"the tree has {total} entries but the input only {x.shape[-1]}")
    parts = []
    for part in torch.split(x[..., :total], [s for s in sizes if s], dim=-1):
        parts.append(torch.softmax(part / temperature, dim=-1))
    rest = x[..., total:]
    return torch.cat(parts + [torch.zeros_like(rest) if rest_zero else rest], dim=-1)


@register("softmax", "soft")
class Softmax(Layer):
    type_name = "softmax"
    type_id = 5
    produces_loss = True

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
        tree = SoftmaxTree(s)
        self.softmax_tree = tree if tree else None  # upstream's l.softmax_tree
        self.spatial = s.float("spatial", 0.0)
        self.noloss = s.int("noloss", 0)
        # upstream sets w, h, c from the input but leaves out_w/out_h/out_c at 0

    def forward(self, x, outputs=None):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        if self.softmax_tree is not None:
            sizes = self.softmax_tree.sizes()
            if sum(sizes) > self.inputs:
                raise self.softmax_tree.error_for(f"the tree has {sum(sizes)} entries but the input only {self.inputs}")
            y = softmax_groups(flat, sizes, self.temperature, rest_zero=True)
        else:
            y = torch.softmax(flat.reshape(n, self.groups, -1) / self.temperature, dim=-1)
        y = y.reshape(n, self.outputs, 1, 1)
        if flat.requires_grad:  # backward_softmax_layer: axpy(delta) into the previous delta
            y = flat.reshape(y.shape) + (y - flat.reshape(y.shape)).detach()
        return y

    def loss(self, output, truth, net):
        """The delta is taken at the output, which passes it to the input unchanged; with
        noloss=1 the cost stays 0 and still counts in get_network_cost's mean, as upstream's."""
        if self.noloss:
            return LayerLoss(0.0)
        delta, cost = self.loss_delta(output, truth, net.flavor)
        return self.delta_loss(output, delta, cost, net.flavor)

    def loss_delta(self, output: torch.Tensor, truth: torch.Tensor, flavor: str = "cudnn"):
        """softmax_x_ent (forward_softmax_layer with truth): (delta, cost).

        delta = truth - output (n, inputs); cost = sum of -log(output) over the entries whose
        truth is not 0 (upstream's test is `t ? -log(p) : 0`, so label smoothing counts every
        entry). With a tree, upstream's GPU build (flavor cudnn) masks the entries of groups
        the truth leaves unknown (truth SECRET_NUM, -1234: fill_hierarchy) out of delta and
        cost; its CPU build does not."""
        p, t = self.truth_rows(output, truth)
        delta = t - p
        err = torch.where(t != 0, -torch.log(p), torch.zeros_like(p))
        if self.softmax_tree is not None and flavor != "cpu":
            known = t != SECRET_NUM
            delta, err = delta * known, err * known
        return delta, float(err.sum())
