"""Atomic file writes: nothing a user has is ever left half-written.

A file is written to a temporary file beside it and renamed over it only once it is complete,
so a full disk or a failed write leaves the previous file byte-identical and no partial file
under any name. The new file gets the permissions upstream's fopen would give it: those of the
file it replaces, or 0666 less the umask for a new one (0644 under the usual umask), not the
temporary file's 0600.
"""
from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back (a moment where others see 022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """The mode fopen(path, "w") leaves: the existing file's, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_writer(path: str | os.PathLike, fsync: bool = False):
    """A binary file object for `path`: written to a temporary file beside it and renamed over
    it only when the block ends without an exception (else removed). fsync: the data reaches the
    disk before the rename (weights: a crash or power cut then leaves the old or the new file)."""
    path = Path(path)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()  # a full disk shows here at the latest (or at fsync), inside the try
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def folder_unwritable(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in `folder` (a missing one is created first, as the trainers
    do), or None when they can: tried for real with a temporary file, so a read-only mount, a
    path that is a file, missing permissions or a full disk all show before any work is done."""
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        return "it is a file, not a folder"
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        return f"cannot create it ({e.strerror or e})"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".darknet_py-probe.", dir=folder)
    except OSError as e:
        return f"cannot write in it ({e.strerror or e})"
    try:
        os.write(fd, b"\0")
    except OSError as e:
        return f"cannot write in it ({e.strerror or e})"
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return None
