"""Atomic writes: a file or a whole folder appears complete or not at all.

A run can be killed at any moment (a preempted job, Ctrl-C); whatever it leaves behind must be either the
old complete file/folder or the new complete one, never half of one. Every writer therefore builds its
output under a temporary name in the same directory and ``os.replace``-s it into place. The package and
the training scripts (``algorithms/common/checkpoint.py``) share these two helpers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "replace_dir"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing any old one (rename, then delete the old)."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent)) / final.name
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)
