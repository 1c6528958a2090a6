"""Files that are never seen half-written, and a lock: the project's one copy of each.

Every file a run, a sweep or the results write goes through ``atomic_path`` (or one of its
three shorthands): the content goes to a hidden temporary beside the target, is flushed to disk,
and replaces the target in one rename, so a reader (or a restart after SIGKILL) sees the old file
or the new one, never a part. A temporary left by a killed writer is recognised by its name
(``stale_temporaries``) and removed by the next writer that owns the target.

``FileLock`` is an ``fcntl.flock`` lock on a file: released by the kernel when its process dies,
so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "stale_temporaries", "FileLock", "LockHeld"]


def _temporary(path: Path) -> Path:
    # never ending in the target's suffix: readers glob "runs/*.json", and pathlib's glob matches
    # hidden files, so a temporary named ".x.json.123.tmp.json" was read in the instant before its rename
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporaries that writers of ``path`` left behind (killed mid-write)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp*"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (parents are created),
    on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # the rename itself survives a power cut once the folder is on disk too
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, if_changed: bool = False) -> None:
    """``if_changed``: a file that already holds ``data`` is left alone (its mtime too), so that
    rebuilding tables and figures leaves a clean checkout clean."""
    path = Path(path)
    if if_changed:
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, if_changed: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), if_changed=if_changed)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1,
                      sort_keys: bool = False) -> None:
    """JSON proper: a NaN or infinity is an error (records.finite_or_none turns them into null)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, allow_nan=False)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class LockHeld(Exception):
    """A non-blocking FileLock found the lock taken; ``holder`` says by whom, when it is known."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


class FileLock:
    """An exclusive ``flock`` on ``path`` (created with its parents), as a context manager.

    ``blocking=False`` raises LockHeld at once when another process holds it. ``remove=True``
    deletes the file on release (a per-run lock must not leave files behind); acquiring then
    checks that the locked file is still the one at ``path``, since a holder may have removed it
    between our open and our lock. The holder's pid and host are written into the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, blocking: bool = True, remove: bool = False):
        self.path, self.blocking, self.remove = Path(path), blocking, remove
        self._file: Any = None

    def __enter__(self) -> FileLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise LockHeld(self.path, holder) from None
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same or not self.remove:
                break
            f.close()  # we locked a file its holder has just removed: take the new one
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        f, self._file = self._file, None
        if f is None:
            return
        if self.remove:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees the file gone
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
