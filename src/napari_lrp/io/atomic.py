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
    """A temporary path beside ``path``, renamed over it when the block succeeds.

    The temporary file has the same suffix, so writers that read it still work; when the block fails it is
    removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.

    Yields
    ------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short name (a long file name plus a tag could pass the file system's 255 bytes)
    tmp = path.with_name(f".napari-lrp.{uuid.uuid4().hex[:8]}.tmp{_suffix(path.name)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    text : str
        Its content (UTF-8).

    Returns
    -------
    Path
    """
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
    """Refuse, before any computation, a results folder that cannot be written.

    A file in its place, or a parent where no folder can be created (read-only, missing permissions). Probes
    by creating (and removing) a temporary folder beside it, where :func:`replacing_folder` will write.

    Parameters
    ----------
    path : str or os.PathLike
        The results folder.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: is a file; choose a folder for the results")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".napari-lrp.{uuid.uuid4().hex[:8]}.probe"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise PermissionError(f"{path}: cannot write results here ({exc.strerror or exc}); choose a writable "
                              "folder") from None
    return path


#: the hidden file in a results folder that lists what the last save wrote there (top-level names)
MANIFEST = ".napari-lrp-outputs.json"


def _written_before(path: Path, outputs_file: str | None) -> list[str]:
    """The top-level names the last save wrote into ``path``: the 'outputs' list of its ``outputs_file``
    (and that file), else the hidden manifest; [] when there is neither."""
    import json

    try:
        if outputs_file is not None:
            names = json.loads((path / outputs_file).read_text()).get("outputs", []) + [outputs_file]
        else:
            names = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")] \
        if isinstance(names, list) else []


def _holds_mount(p: Path) -> Path | None:
    """The first mount point at or below ``p`` (None when there is none); links are not followed."""
    if os.path.ismount(p):
        return p
    if p.is_dir() and not p.is_symlink():
        for root, dirs, _files in os.walk(p):
            for d in dirs:
                if os.path.ismount(os.path.join(root, d)):
                    return Path(root) / d
    return None


def _swap_in(path: Path, tmp: Path, tag: str, outputs_file: str | None) -> None:
    """Move the entries of ``tmp`` into ``path``; the entries the last save wrote (its manifest) and the
    ones replaced by name are moved aside first and removed after. Nothing else in ``path`` is touched;
    a mount point among them refuses the save before anything moves. On a failed move every entry is
    put back where it was."""
    import json
    import shutil

    new = sorted(e.name for e in tmp.iterdir())
    before = _written_before(path, outputs_file)
    aside_names = sorted({n for n in before + new if (path / n).exists() or (path / n).is_symlink()})
    for n in aside_names:
        mount = _holds_mount(path / n)
        if mount is not None:
            raise OSError(f"{mount}: a mount point where the results would replace {path / n}; napari-lrp never "
                          "moves or deletes a mounted file system: choose another results folder")
    old = path / f".napari-lrp.{tag}.old"
    old.mkdir()
    moved: list[tuple[Path, Path]] = []
    try:
        for n in aside_names:
            os.rename(path / n, old / n)
            moved.append((old / n, path / n))
        for n in new:
            os.rename(tmp / n, path / n)
            moved.append((path / n, tmp / n))
    except BaseException:
        for src, dst in reversed(moved):
            os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
        raise
    if outputs_file is None:
        write_text(path / MANIFEST, json.dumps(new))
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def replacing_folder(path: str | os.PathLike, outputs_file: str | None = None) -> Iterator[Path]:
    """An empty temporary folder whose content replaces the last save's outputs in ``path``.

    When the block succeeds, what it wrote replaces the outputs of the last save into ``path`` and any entry
    of the same name (the last save's outputs: the 'outputs' list of its ``outputs_file``, or else the
    folder's hidden manifest, which is then kept); the other entries of ``path`` (a user's own files, mount
    points) are never moved, linked or deleted, and a symbolic link at ``path`` stays a link. When the block
    or the swap fails, the temporary folder is removed and ``path`` is left exactly as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The results folder.
    outputs_file : str, optional
        The file in it that lists a save's outputs (settings.json).

    Yields
    ------
    Path
    """
    import json
    import shutil

    path = check_output_folder(path)
    tag = uuid.uuid4().hex[:8]
    exists = path.is_dir()
    # inside an existing folder the temporary folder is on the folder's own file system (renames stay
    # renames even when the folder is a mount point); a new folder is made beside and renamed into place
    tmp = path / f".napari-lrp.{tag}.tmp" if exists else path.with_name(f".napari-lrp.{tag}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if exists:
            _swap_in(path, tmp, tag, outputs_file)
            tmp.rmdir()
        else:
            written = sorted(e.name for e in tmp.iterdir())
            os.rename(tmp, path)
            if outputs_file is None:
                write_text(path / MANIFEST, json.dumps(written))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_outside_inputs(out: str | os.PathLike, inputs, what: str = "the case") -> Path:
    """Refuse a results folder equal to or inside an input folder (a case or a cohort): the results would
    be read back as input files by the next run.

    Parameters
    ----------
    out : path
        The results folder.
    inputs : iterable of paths
        The input folders (a file given as input only refuses itself).
    what : str
        What the inputs are, for the message.

    Returns
    -------
    Path
        ``out``.
    """
    target = Path(os.path.realpath(out))
    for p in inputs:
        folder = Path(os.path.realpath(p))
        if folder.is_file():  # a file is an input on its own: only the file itself cannot be the results
            if target == folder:
                raise ValueError(f"{out}: the results folder is the input file {p}; choose a folder")
            continue
        if target == folder or folder in target.parents:
            raise ValueError(f"{out}: the results folder is inside {what} ({folder}); results written there would "
                             "be read as input by the next run: choose a folder outside it (e.g. "
                             f"{folder.parent / (folder.name + '_lrp')})")
    return Path(out)
