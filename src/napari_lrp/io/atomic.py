"""Atomic writes: files and whole result folders are written beside the target, then renamed over it
(nothing half-written is left, and a failed write leaves the old version complete)."""

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


def _carry(src: Path, dst: Path) -> None:
    """Put ``src`` (a file, link or folder of the old results folder) at ``dst`` without touching it:
    hard links where the file system allows, else copies."""
    import shutil

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)
    else:
        link_or_copy(src, dst)


def check_output_folder(path: str | os.PathLike) -> Path:
    """Refuse, before any computation, a results folder that cannot be written: a file in its place, or
    a parent where no folder can be created (read-only, missing permissions). Probes by creating (and
    removing) a temporary folder beside it, where :func:`replacing_folder` will write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: is a file; choose a folder for the results")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{path.name}.{uuid.uuid4().hex[:8]}.probe"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise PermissionError(f"{path}: cannot write results here ({exc.strerror or exc}); choose a writable "
                              "folder") from None
    return path


@contextmanager
def replacing_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds, entries of an existing
    ``path`` that the block did not write are carried over (hard links or copies) and the temporary folder
    is renamed to ``path`` (the old folder is renamed aside first and removed after). When the block or
    the swap fails, the temporary folder is removed and ``path`` is left exactly as it was."""
    import shutil

    path = check_output_folder(path)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    old = path.with_name(f".{path.name}.{tag}.old")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            for entry in path.iterdir():
                if not (tmp / entry.name).exists() and not (tmp / entry.name).is_symlink():
                    _carry(entry, tmp / entry.name)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
