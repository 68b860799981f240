"""Atomic file replacement: write beside the target, then rename over it (nothing half-written is left)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _suffix(name: str) -> str:
    return ".nii.gz" if name.lower().endswith(".nii.gz") else Path(name).suffix


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that read it still work); when the
    block succeeds it is renamed over ``path``, when it fails it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{_suffix(path.name)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)
