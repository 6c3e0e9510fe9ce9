"""Atomic writes and a study lock: partial results are never mistaken for complete ones."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hapexpr.errors import StudyError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    Whatever is written to the temporary path becomes visible under ``path`` all at once, or not
    at all if the block raises or the process dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); outputs get the usual mode the umask allows.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


TMP_DIR_PREFIX = ".tmp-"
OLD_DIR_PREFIX = ".old-"


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success its files are fsynced and
    it replaces ``target`` whole. A crash leaves ``target`` as it was or absent, never half-written
    (a directory cannot be renamed onto a non-empty one, so an old one is moved aside first).
    Leftovers are named ``.tmp-*`` / ``.old-*`` so readers can skip them."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_DIR_PREFIX}{target.name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for dirpath, _dirs, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.parent / f"{OLD_DIR_PREFIX}{target.name}.{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


@contextlib.contextmanager
def study_lock(directory: str | Path, command: str) -> Iterator[None]:
    """Hold an exclusive lock on a study directory for the duration of one command.

    A second command on the same study refuses at once with a clear message rather than
    interleaving its writes with the first. The lock is an ``flock`` so it is released by the
    kernel when the holder dies, even by SIGKILL.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_file = directory / ".lock"
    fh = open(lock_file, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another hapexpr command"
            raise StudyError(
                f"the study is in use by {holder}",
                path=directory,
                hint="wait for that command to finish, then run this one again",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"`hapexpr {command}` (pid {os.getpid()})\n")
        fh.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
        fh.close()
