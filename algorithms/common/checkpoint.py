"""Atomic writes of a training run's artefacts: text files, whole folders, and the trained peft adapter.

A run can be killed at any moment (a preempted job, Ctrl-C); whatever it leaves behind must be either the
old complete file/folder or the new complete one, never half of one. Every writer here therefore builds
its output under a temporary name in the same directory and ``os.replace``-s it into place.

Torch-free: the adapter is written through the model's own ``save_pretrained``. The two generic writers
live in :mod:`cmat_gym.core.files` (the package uses them too) and are re-exported here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cmat_gym.core.files import atomic_write_text, replace_dir

__all__ = ["atomic_write_text", "replace_dir", "save_adapter"]


def save_adapter(model: Any, path: Path) -> None:
    """The trained adapter in peft format (loadable with ``LMPolicy.load_adapter``), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    replace_dir(tmp, path)
