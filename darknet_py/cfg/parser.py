"""Upstream: read_cfg (src/parser.c) and option_list.c.

A cfg file becomes a list of `Section`s; every option remembers its line and whether a
getter used it, so that unused keys are reported with their line as upstream's
"Unused field", and every bad value is reported as FILE:LINE: [section] key: message.
No value leaves this module as an untyped string unless a string was asked for.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
_REQUIRED = object()


class CfgError(ValueError):
    """A problem in a cfg / data file, located by file, line and key."""

    def __init__(self, path: str, line: int | None, key: str | None, message: str):
        self.path, self.line, self.key, self.message = str(path), line, key, message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" key '{key}':" if key else ""
        super().__init__(f"{where}:{what} {message}")


@dataclass
class Option:
    key: str
    value: str
    line: int
    used: bool = False


@dataclass
class Section:
    """One `[name]` block. Getters mark options used and convert them strictly."""

    name: str
    line: int
    path: str = "<cfg>"
    options: list[Option] = field(default_factory=list)

    # -- lookup -------------------------------------------------------------------
    def find(self, key: str) -> Option | None:
        # upstream's option_find returns the first occurrence of a key
        for opt in self.options:
            if opt.key == key:
                opt.used = True
                return opt
        return None

    def has(self, key: str) -> bool:
        return any(o.key == key for o in self.options)

    def error(self, key: str | None, message: str, line: int | None = None) -> CfgError:
        if line is None:
            opt = next((o for o in self.options if o.key == key), None) if key else None
            line = opt.line if opt else self.line
        return CfgError(self.path, line, key, f"[{self.name}] {message}")

    def _get(self, key: str, default, convert: Callable[[str], T], kind: str):
        opt = self.find(key)
        if opt is None:
            if default is _REQUIRED:
                raise self.error(key, f"missing required key '{key}'")
            return default
        try:
            return convert(opt.value)
        except (ValueError, OverflowError):
            raise CfgError(self.path, opt.line, key, f"[{self.name}] '{opt.value}' is not {kind}") from None

    # -- typed getters ------------------------------------------------------------
    def int(self, key: str, default=_REQUIRED) -> int:
        return self._get(key, default, parse_int, "an integer")

    def float(self, key: str, default=_REQUIRED) -> float:
        return self._get(key, default, parse_float, "a number")

    def str(self, key: str, default=_REQUIRED) -> str:
        return self._get(key, default, lambda v: v, "text")

    def ints(self, key: str, default=_REQUIRED) -> list[int]:
        return self._get(key, default, lambda v: parse_list(v, parse_int), "a comma-separated list of integers")

    def floats(self, key: str, default=_REQUIRED) -> list[float]:
        return self._get(key, default, lambda v: parse_list(v, parse_float), "a comma-separated list of numbers")

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.str(key, default)
        if value not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}")
        return value

    def unused(self) -> list[Option]:
        return [o for o in self.options if not o.used]


def _strip_comment(value: str) -> str:
    # upstream reads values with atoi/atof, which stop at a trailing '#comment'
    return value.split("#", 1)[0]


def parse_int(value: str) -> int:
    v = _strip_comment(value)
    try:
        return int(v)
    except ValueError:
        f = float(v)  # upstream's atoi("1.0") is 1; accept integral floats only
        if not math.isfinite(f) or f != int(f):
            raise
        return int(f)


def parse_float(value: str) -> float:
    f = float(_strip_comment(value))
    if not math.isfinite(f):
        raise ValueError(value)
    return f


def parse_list(value: str, convert: Callable[[str], T]) -> list[T]:
    items = [v for v in _strip_comment(value).split(",")]
    if items and items[-1] == "":
        items = items[:-1]  # "1,2,3," is accepted by upstream
    if not items:
        raise ValueError(value)
    return [convert(v) for v in items]


_WS = re.compile(r"\s+")


def parse_cfg_text(text: str, path: str = "<cfg>") -> list[Section]:
    """Split cfg text into sections; raises CfgError for lines upstream cannot read."""
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _WS.sub("", raw)  # upstream's strip() removes every whitespace character
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(path, lineno, None, f"malformed section header '{raw.strip()}'")
            sections.append(Section(line[1:-1], lineno, path))
            continue
        if "=" not in line:
            raise CfgError(path, lineno, None, f"cannot parse '{raw.strip()}': expected key=value")
        key, value = line.split("=", 1)
        if not key:
            raise CfgError(path, lineno, None, f"cannot parse '{raw.strip()}': empty key")
        if value == "":
            raise CfgError(path, lineno, key, "empty value")
        if not sections:
            raise CfgError(path, lineno, key, "option outside any [section]")
        sections[-1].options.append(Option(key, value, lineno))
    return sections


def read_cfg(path: str | Path) -> list[Section]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CfgError(str(path), None, None, f"cannot read file: {e.strerror or e}") from None
    return parse_cfg_text(text, str(path))


def read_data_cfg(path: str | Path) -> Section:
    """obj.data / coco.data: key=value lines without sections (upstream: read_data_cfg)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CfgError(str(path), None, None, f"cannot read file: {e.strerror or e}") from None
    secs = parse_cfg_text("[data]\n" + text, str(path))
    # lines were shifted by the synthetic header
    for s in secs:
        s.line -= 1
        for o in s.options:
            o.line -= 1
    if len(secs) != 1:
        raise CfgError(str(path), secs[1].line, None, "a data file has no [sections]")
    return secs[0]


def warn_unused(sections: Sequence[Section], stream=None) -> list[str]:
    """Print upstream's "Unused field" warning for every option no getter asked for."""
    stream = stream or sys.stderr
    lines = []
    for s in sections:
        for o in s.unused():
            msg = f"{s.path}:{o.line}: Unused field: '{o.key} = {o.value}' in [{s.name}]"
            lines.append(msg)
            print(msg, file=stream)
    return lines
