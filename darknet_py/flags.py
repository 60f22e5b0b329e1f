"""Upstream: find_arg / find_int_arg / find_float_arg / find_char_arg (src/utils.c).

Upstream reads its flags one call at a time: each call looks for the exact word anywhere in the
line, takes it (and the word after it, for a value) out, and the positional arguments are what
is left. A flag nobody asks for stays unread. `Flags` does the same over a copy of the line, so
that `-i 0 detector test ...`, a flag between positional arguments, or `-thresh .5` given to a
command that reads no `-thresh` behave as upstream's binary; no abbreviation or prefix is ever
matched. What differs on purpose: a flag word that no part of the command read is dropped from
the positional arguments (upstream would take it as a file name) and said once on stderr.

Values are read as C's atoi / atof read them (a leading number, 0 where there is none), with a
warning where the word is not a number at all.
"""
from __future__ import annotations

import re
import sys

# Every flag upstream's find_* calls read (AlexeyAB/darknet src/*.c), with the kind of its value:
# "flag" (find_arg), "int", "float", "str" (find_char_arg). What darknet_py does with each is in
# the README's flag table (tests/test_flags.py keeps the two in step).
UPSTREAM_FLAGS: dict[str, str] = {
    # darknet.c main
    "-i": "int", "-cuda_debug_sync": "flag",
    # detector.c run_detector (and the shortcut `detect`: -thresh, -ext_output)
    "-dont_show": "flag", "-benchmark": "flag", "-benchmark_layers": "flag", "-show": "flag",
    "-letter_box": "flag", "-map": "flag", "-points": "int", "-show_imgs": "flag", "-mjpeg_port": "int",
    "-avgframes": "int", "-dontdraw_bbox": "flag", "-json_port": "int", "-http_post_host": "str",
    "-time_limit_sec": "int", "-out_filename": "str", "-json_file_output": "str", "-out": "str",
    "-prefix": "str", "-thresh": "float", "-iou_thresh": "float", "-hier": "float", "-c": "int", "-s": "int",
    "-num_of_clusters": "int", "-width": "int", "-height": "int", "-ext_output": "flag",
    "-save_labels": "flag", "-chart": "str", "-mAP_epochs": "int", "-gpus": "str", "-clear": "flag",
    # classifier.c run_classifier
    "-dontuse_opencv": "flag", "-topk": "flag", "-t": "int",
    # rnn.c run_char_rnn
    "-file": "str", "-seed": "str", "-len": "int", "-temp": "float", "-srand": "int", "-tokens": "str",
    "-tokenized": "flag",
    # the old demo programs: nightmare.c, go.c (not provided by darknet_py; read so they are known)
    "-iters": "int", "-lambda": "float", "-momentum": "float", "-rate": "float", "-rotate": "float",
    "-zoom": "float", "-norm": "int", "-octaves": "int", "-range": "int", "-rounds": "int",
    "-smooth": "int", "-reconstruct": "flag", "-multi": "flag",
}

# darknet_py's own flags (README: "darknet_py's own"); "-seed" is an int for the trainers.
OWN_FLAGS: dict[str, str] = {
    "-train_flavor": "str", "-workers": "int", "-nogpu": "flag", "-no_tf32": "flag", "-tf32": "flag",
    "-batch": "int", "-dynamic": "flag", "-postprocess": "flag",
}

_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


class UsageError(Exception):
    """A command line that names no command, too few arguments, or a bad value: the usage line."""


class FlagError(Exception):
    """A flag given without the value it takes (upstream would read past the end of argv)."""


def c_atoi(word: str) -> int:
    """C's atoi: the leading integer of the word, 0 if there is none."""
    m = _INT.match(word)
    return int(m.group()) if m else 0


def c_atof(word: str) -> float:
    """C's atof: the leading number of the word, 0.0 if there is none."""
    m = _FLOAT.match(word)
    return float(m.group()) if m else 0.0


def is_flag_word(word: str) -> bool:
    """A word that reads as a flag: a dash then something that is not a number (-1 and -.5 are
    values or positional arguments)."""
    return len(word) > 1 and word[0] == "-" and not _NUMBER.match(word)


class Flags:
    """The command line as upstream's find_* calls consume it.

    >>> f = Flags(["-i", "0", "detector", "test", "a.data", "-thresh", ".3", "b.cfg"])
    >>> f.int("-i", 0), f.float("-thresh", .25), f.positional()
    (0, 0.3, ['detector', 'test', 'a.data', 'b.cfg'])
    """

    def __init__(self, argv, err=None):
        self.words: list[str] = [_strip(w) for w in argv]
        self.read: set[str] = set()
        self.err = err or sys.stderr
        self._warned: set[str] = set()

    # -- upstream's four readers ----------------------------------------------------
    def flag(self, name: str) -> bool:
        self.read.add(name)
        if name in self.words:
            self.words.remove(name)
            return True
        return False

    def int(self, name: str, default: int | None) -> int | None:
        word = self._value(name)
        if word is None:
            return default
        self._check_number(name, word, _INT)
        return c_atoi(word)

    def float(self, name: str, default: float | None) -> float | None:
        word = self._value(name)
        if word is None:
            return default
        self._check_number(name, word, _FLOAT)
        return c_atof(word)

    def str(self, name: str, default: str | None) -> str | None:
        word = self._value(name)
        return default if word is None else word

    # -- what is left ---------------------------------------------------------------
    def positional(self, command: str | None = None) -> list[str]:
        """The words no reader took, in order. Flag words among them (a flag this command does
        not read, a second copy of one it read, or one upstream has nowhere) are dropped, with
        their value where upstream's flag takes one, and named once on stderr."""
        out, why = self._split(command)
        for text in why:
            self.warn(text)
        self.words = out
        return list(out)

    def peek(self) -> list[str]:
        """positional() without taking anything out or warning: to learn the sub-command."""
        return self._split(None)[0]

    def _split(self, command):
        out, why, words, i = [], [], self.words, 0
        where = f" by `{command}`" if command else ""
        while i < len(words):
            w = words[i]
            if not is_flag_word(w):
                out.append(w)
                i += 1
                continue
            kind = UPSTREAM_FLAGS.get(w) or OWN_FLAGS.get(w)
            takes = kind not in (None, "flag") and i + 1 < len(words)
            shown = f"{w} {words[i + 1]}" if takes else w
            if w in self.read:
                why.append(f"{w} is given twice: the first is read (as upstream), `{shown}` ignored")
            elif kind is None:
                why.append(f"{w} is not a flag of darknet (nor of darknet_py): ignored")
            else:
                why.append(f"`{shown}` is not read{where}: ignored, as upstream ignores it")
            i += 2 if takes else 1
        return out, why

    def warn(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            print(f"Warning: {text}", file=self.err)

    # -- helpers --------------------------------------------------------------------
    def _value(self, name: str) -> str | None:
        self.read.add(name)
        words = self.words
        if name not in words:
            return None
        i = words.index(name)
        if i + 1 >= len(words):
            raise FlagError(f"{name} needs a value (e.g. {name} {_example(name)})")
        value = words[i + 1]
        del words[i:i + 2]
        return value

    def _check_number(self, name: str, word: str, pattern: re.Pattern) -> None:
        m = pattern.match(word)
        if not m or m.end() != len(word):
            self.warn(f"{name} {word}: not a number; read as C's {'atoi' if pattern is _INT else 'atof'} reads it "
                      f"({c_atoi(word) if pattern is _INT else c_atof(word)})")


def _strip(word: str) -> str:
    """Upstream's strip_args: tabs, CR and LF removed from every word (a line from Windows)."""
    return word.replace("\t", "").replace("\r", "").replace("\n", "")


def _example(name: str) -> str:
    kind = UPSTREAM_FLAGS.get(name) or OWN_FLAGS.get(name)
    return {"int": "1", "float": "0.5", "str": "VALUE"}.get(kind, "VALUE")
