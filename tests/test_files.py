"""The atomic writer: what a reader globbing a folder can see while a file is being written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autolr.files import atomic_path, atomic_write_json, atomic_write_text, stale_temporaries


def test_a_temporary_is_never_read_as_a_record(tmp_path: Path) -> None:
    # readers collect records with runs/*.json, and pathlib's glob matches hidden files
    target = tmp_path / "runs" / "abc.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{")
        assert tmp.exists() and tmp.parent == target.parent
        assert list(target.parent.glob("*.json")) == []
        assert stale_temporaries(target) == [tmp]
    assert list(target.parent.glob("*.json")) == [target]
    assert stale_temporaries(target) == []


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert target.read_text() == '{\n "x": 1\n}'
    assert os.listdir(tmp_path) == ["a.json"]


def test_if_changed_leaves_an_unchanged_file_alone(tmp_path: Path) -> None:
    target = tmp_path / "TABLE.md"
    atomic_write_text(target, "x\n")
    os.utime(target, (1, 1))
    atomic_write_text(target, "x\n", if_changed=True)
    assert target.stat().st_mtime == 1
    atomic_write_text(target, "y\n", if_changed=True)
    assert target.read_text() == "y\n" and target.stat().st_mtime > 1
