"""Files written whole or not at all, and a full disk said in words.

Every file sslviz rewrites while others may read it (checkpoints, ``devices.json``, the decoded-image cache, the
chart roll-ups) goes through :func:`write_atomically`: a temporary file beside it, then a rename. A crash or a full
disk leaves the previous file intact and no temporary file behind (a full disk's leftovers would keep the very
space the user is trying to free), and a full disk is reported as :class:`DiskFull`, naming the folder and the
space left, instead of the writer's own error (torch's reads ``[enforce fail at inline_container.cc] unexpected
pos``).
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import BinaryIO, Callable


class DiskFull(OSError):
    """No space left where a file had to be written; the message says where and how much is free."""

    def __str__(self) -> str:  # the sentence alone, without OSError's "[Errno 28]" prefix
        return str(self.strerror)


def temporary_name(path: Path) -> Path:
    """The temporary file :func:`write_atomically` uses for ``path``: unique per process and thread, so concurrent
    writers never share one.

    >>> temporary_name(Path("/store/checkpoints/run7.pt")).name.startswith("run7.pt.")
    True
    """
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def leftovers(path: Path) -> list[Path]:
    """Temporary files of ``path`` that a killed writer left (this module's, and the older ``<name>.tmp``)."""
    return [p for p in path.parent.glob(f"{path.name}.*tmp") if p.name.endswith(".tmp")]


def describe_full(folder: Path) -> str:
    """'The disk is full: ...' for ``folder``, with the space left on its file system."""
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return f"The disk is full: cannot write in {folder} ({free}). Free some space there, then try again."


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename that over ``path``.

    On any failure the temporary file is removed and the old ``path`` is untouched; a full disk (ENOSPC, or a
    quota: EDQUOT) raises :class:`DiskFull`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(exc.errno, describe_full(path.parent)) from exc
        raise
