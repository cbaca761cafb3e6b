"""Atomic file writes that behave as users expect of any tool.

A file is written to a temporary file in the same folder and renamed over the destination, so
a reader sees the old file or the new one, never half of one. On top of that:

- the new file keeps the mode of the file it replaces; a new file gets `0o666` less the
  umask, as `open(path, "w")` would (a temporary file of `tempfile.mkstemp` is 0600, which
  turned every saved state private);
- a symlink is written through: its target gets the new contents and the link stays;
- a destination that cannot be written (a folder, a path under a regular file, a folder
  without write permission) raises `StateError` naming the path and the reason, before
  anything is written. An error while writing the data (a full disk) is raised as it is, after
  the temporary file is removed.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lars.core.errors import StateError


def _refuse(path: Path, reason: str) -> StateError:
    error: StateError = StateError(f"{path} cannot be written ({reason}); nothing was written")
    return error


def _open_temporary(target: Path, mode: int) -> tuple[int, Path]:
    """An exclusive new file next to `target`; `mode` is filtered by the umask (as `open` is)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Calls `write` on a temporary file, then renames it over `path` (see the module doc).

    Returns `path` as a `Path` (the link's path, if `path` is a symlink).
    """
    given = Path(path)
    target = Path(os.path.realpath(given))  # a symlink's target, so that the link stays
    if target.is_dir():
        raise _refuse(given, "it is a folder: give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        existing = os.stat(target).st_mode if target.exists() else None
        fd, tmp = _open_temporary(target, 0o666 if existing is None else stat.S_IMODE(existing))
    except OSError as exc:
        raise _refuse(given, exc.strerror or str(exc)) from None
    try:
        if existing is not None:  # exactly the old mode, whatever the umask
            os.chmod(tmp, stat.S_IMODE(existing))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return given
