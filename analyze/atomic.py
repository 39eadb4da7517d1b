"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".chorus-tmp"
"""Distinctive, so that cleaning up after a kill cannot touch anyone else's files."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`; when the block ends without error it is fsynced and renamed onto `path`.

    For writers that want a file name (pyarrow). The temporary name starts with a dot, so a
    kill leaves at most a hidden `.*.chorus-tmp` file, which source expansion skips and
    remove_leftovers deletes. It does not repeat `path`'s name: a name near the file system's 255
    bytes would pass it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _create_temporary(path: Path) -> Path:
    """A new empty file next to `path`, with the permissions the umask gives any new file (mkstemp's
    0600 would survive the rename: tables that colleagues on a shared server cannot open)."""
    while True:
        tmp = path.parent / f".{secrets.token_hex(8)}{TMP_SUFFIX}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """Open `path` for writing UTF-8 text ("\\n" line ends) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        yield f


def write_text(path: Path, text: str) -> None:
    """Write the whole of `text` to `path` atomically."""
    with atomic_text(path) as f:
        f.write(text)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable: without this a power cut can forget it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(folder: Path, fenced: str | None = None) -> None:
    """Delete the temporaries that a kill -9 in the middle of a write left under `folder`, but not
    in a subfolder holding an entry named `fenced` (another run's journal: it may be writing there)."""
    for directory, subfolders, files in os.walk(folder):
        if fenced is not None:
            subfolders[:] = [name for name in subfolders if not os.path.lexists(os.path.join(directory, name, fenced))]
        for name in files:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                Path(directory, name).unlink(missing_ok=True)
