"""Upstream: read_data_cfg (src/option_list.c) as train_detector reads it, and get_paths
(src/data.c).

Paths are kept exactly as written: relative ones resolve against the current directory
(as upstream), and the label path and its track-id hash are derived from that string.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cfg import CfgError, Section, read_data_cfg


class DataFileError(OSError):
    """A list / data file that cannot be read, named in the message."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(message)
        self.path, self.message = os.fspath(path), message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.path, self.message)


@dataclass
class ObjData:
    """The keys of an obj.data file that training and evaluation use."""

    path: str
    classes: int
    train: str
    valid: str
    names: str
    backup: str
    eval: str | None
    section: Section


def read_obj_data(path: str | os.PathLike) -> ObjData:
    """Upstream: read_data_cfg + the option_find_* calls of train_detector / test_detector.

    Defaults are upstream's: train "data/train.txt", valid = train, names
    "data/names.list", backup "/backup/", classes 20 (upstream's detector default, with
    its "Using default" warning). Errors name the file, line and key.
    """
    s = read_data_cfg(path)
    if not s.has("classes"):
        print(f"{s.path}: classes: Using default '20'", file=sys.stderr)
    classes = s.int("classes", 20)
    if classes < 1:
        raise s.error("classes", f"must be >= 1, got {classes}")
    train = s.str("train", "data/train.txt")
    return ObjData(
        path=os.fspath(path),
        classes=classes,
        train=train,
        valid=s.str("valid", train),
        names=s.str("names", "data/names.list"),
        backup=s.str("backup", "/backup/"),
        eval=s.str("eval", None),
        section=s,
    )


def read_list(path: str | os.PathLike) -> list[str]:
    """Upstream: get_paths: one image path per line.

    Line endings (LF or CRLF) are removed as fgetl does; the rest of the line is kept
    verbatim. Blank lines are skipped (upstream redraws when it picks one).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataFileError(path, f"Couldn't open file: {e.strerror or e}") from None
    lines = (line[:-1] if line.endswith("\r") else line for line in os.fsdecode(raw).split("\n"))
    return [line for line in lines if line.strip()]


__all__ = ["ObjData", "read_obj_data", "read_list", "DataFileError", "CfgError"]
