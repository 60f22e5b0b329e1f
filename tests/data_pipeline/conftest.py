import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import write_scene  # noqa: E402


@pytest.fixture
def scene(tmp_path):
    """A 200 x 150 synthetic image with three labelled rectangles (in tmp_path)."""
    return write_scene(tmp_path)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, so bad.list / bad_label.list / aug_*.jpg land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
