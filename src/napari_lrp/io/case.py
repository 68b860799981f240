"""Cases: multi-modal NIfTI volumes with an optional label, in napari axis order."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .channels import CHANNEL_ALIASES, canonical_channel, match_channels
from .labels import BRAIN_MASK, ground_truth_mask, is_brain_mask_name
from .nifti import CaseError, is_nifti_path, nifti_stem, read_nifti, save_on_grid
from .orientation import Grid

#: Known modality sets, in their conventional channel order, and their label names.
MODALITY_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ISLES": (("ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"), ("OT",)),
    "BraTS": (("t1", "t1ce", "t2", "flair"), ("seg",)),
}
LABEL_NAMES = ("OT", "seg", "label", "mask", "gt", "lesion")
AFFINE_TOLERANCE_MM = 1e-3


@dataclass
class Case:
    """One subject.

    image: float32 (C, Z, Y, X) in napari axis order (Z = S, Y = A, X = R after RAS+ reorientation);
    modalities: C names; label: uint8 (Z, Y, X) or None, the file's values; label_values: the values that
    make the ground-truth region of a multi-label file (None: a binary label, any non-zero voxel);
    affine: the original 4x4 affine of the files; spacing: voxel sizes in mm in (Z, Y, X) order; grid: the
    Grid that maps back to the files.
    """

    image: np.ndarray
    modalities: list[str]
    label: np.ndarray | None
    grid: Grid
    name: str = "case"
    files: list[str] = field(default_factory=list)
    label_values: tuple[int, ...] | None = None
    #: the case folder it was loaded from (None: files or a 4D file); results are never written inside it
    folder: str | None = None

    @property
    def key(self) -> str:
        """Identity of the case (its name and first file), e.g. for the layers that show it."""
        return f"{self.name}|{self.files[0] if self.files else ''}"

    @property
    def ground_truth(self) -> np.ndarray | None:
        """The ground-truth region, bool (Z, Y, X), by the one rule of :mod:`napari_lrp.io.labels`; None
        without a label."""
        if self.label is None:
            return None
        source = self.files[-1] if self.files else f"case {self.name}: the label"
        return ground_truth_mask(self.label, self.label_values, source)

    @property
    def affine(self) -> np.ndarray:
        """The first file's voxel-to-world affine (4 x 4; the file's voxel order, world in RAS+ mm)."""
        return self.grid.affine

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (Z, Y, X) in mm in napari order."""
        return self.grid.spacing

    @property
    def translate(self) -> np.ndarray:
        """World position (mm) of voxel (0, 0, 0) of the napari array, in (Z, Y, X) = (S, A, R) order."""
        return self.grid.translate

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (Z, Y, X)."""
        return tuple(self.image.shape[1:])

    def channel(self, name: str) -> np.ndarray:
        """The volume of one modality.

        Parameters
        ----------
        name : str
            The modality (case-insensitive).

        Returns
        -------
        numpy.ndarray
            (Z, Y, X) float32.
        """
        for i, m in enumerate(self.modalities):
            if m.lower() == name.lower():
                return self.image[i]
        raise KeyError(f"case {self.name} has no modality {name!r}; it has {self.modalities}")


def readable_name(name: str) -> str:
    """A file or folder name as text that can be written anywhere (CSV, JSON, a table).

    Bytes that are not UTF-8 (a Latin-1 'é' from an old archive) are read as Latin-1 instead of failing later.

    Parameters
    ----------
    name : str
        The name as the file system gave it.

    Returns
    -------
    str
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("latin-1")


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", text.lower()) if t]


def _match_name(text: str, names: Sequence[str]) -> str | None:
    """The name of ``names`` that ``text`` (a file or folder name) contains, case-insensitively.

    Whole tokens (split at non-alphanumerics) match first, so 't1' does not match 't1ce'; names of
    three or more letters also match inside a longer token ('MR_ADCmap' -> ADC).
    """
    toks = _tokens(text)
    for name in sorted(names, key=len, reverse=True):
        if name.lower() in toks:
            return name
    for name in sorted(names, key=len, reverse=True):
        if len(name) >= 3 and any(name.lower() in t for t in toks):
            return name
    return None


def recognise(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """Modality or label name of a file, from its name and then its folders below ``root``.

    Names are compared as written, so links into an annex elsewhere keep their names.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    root : str or os.PathLike, optional
        The case folder (its own name is not read).

    Returns
    -------
    str or None
        A modality (ADC, t1ce, ...), a label name (OT, seg), :data:`BRAIN_MASK`, or None.
    """
    path = Path(path)
    parts = [nifti_stem(path)]
    if root is not None:
        rel = Path(os.path.relpath(path, root))
        parts += [p for p in rel.parts[:-1] if p != ".."][::-1]
    aliases = [a for spellings in CHANNEL_ALIASES.values() for a in spellings]
    known = [m for mods, _ in MODALITY_SETS.values() for m in mods] + aliases + list(LABEL_NAMES)
    for part in parts:
        if is_brain_mask_name(_tokens(part)):
            return BRAIN_MASK
        hit = _match_name(part, known)
        if hit is not None:  # every BraTS release's spelling under one name (t1n -> t1, t2f -> flair)
            return canonical_channel(hit) if hit in aliases and hit not in LABEL_NAMES else hit
    return None


def _check_finite(data: np.ndarray, path, nonfinite: str) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.floating):
        return data
    bad = ~np.isfinite(data)
    n = int(bad.sum())
    if n == 0:
        return data
    if nonfinite == "error":
        raise CaseError(
            f"{path}: {n} voxels are NaN or Inf; fix the file, or replace them by 0: load_case(..., nonfinite='zero') "
            "or --nonfinite zero on the command line"
        )
    data = data.copy()
    data[bad] = 0
    return data


def _same_grid(a: Grid, b: Grid) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=AFFINE_TOLERANCE_MM, rtol=0)


def _grid_mismatch(path, grid: Grid, ref_path, ref: Grid) -> str:
    if grid.shape != ref.shape:
        return f"{path}: shape {grid.shape} differs from {Path(ref_path).name} {ref.shape}"
    diff = float(np.abs(grid.affine - ref.affine).max())
    return f"{path}: affine differs from {Path(ref_path).name} by {diff:.4g} mm (tolerance {AFFINE_TOLERANCE_MM} mm)"


def _read_label(path, ref_grid: Grid, ref_path, nonfinite: str) -> np.ndarray:
    data, grid = read_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CaseError(f"{path}: a label must be 3D, got shape {data.shape}")
    if not _same_grid(grid, ref_grid):
        raise CaseError("label on another grid: " + _grid_mismatch(path, grid, ref_path, ref_grid))
    data = _check_finite(np.asarray(data), path, nonfinite)
    if np.issubdtype(data.dtype, np.floating):
        frac = data != np.round(data)
        if frac.any():
            raise CaseError(
                f"{path}: the label has {int(frac.sum())} non-integer voxels (e.g. {float(data[frac][0]):g}); "
                "a label must hold integer classes"
            )
    if data.min() < 0 or data.max() > 255:
        raise CaseError(f"{path}: label values must lie in 0..255, found {data.min()}..{data.max()}")
    return ref_grid.to_napari(data.astype(np.uint8))


def _walk(folder: Path) -> tuple[list[Path], list[str]]:
    """(NIfTI files, every visible file name) below ``folder``: symlinked files and folders are followed
    (each real folder once), hidden entries ('.git', macOS '._ADC.nii.gz') are skipped, and a NIfTI link
    whose content is absent (git-annex, DataLad) is refused by name."""
    files, everything, seen = [], [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith("."):
                continue
            p = Path(root) / n
            if not p.exists():
                if is_nifti_path(p):
                    raise CaseError(f"{p}: a link to content that is not here ({os.readlink(p)}); with "
                                    "DataLad or git-annex fetch it first (datalad get / git annex get)")
                continue
            everything.append(p.relative_to(folder).as_posix())
            if is_nifti_path(p):
                files.append(p)
    return sorted(files), sorted(everything)


def _scan_folder(folder: Path) -> tuple[list[tuple[str, Path]], Path | None]:
    files, everything = _walk(folder)
    if not files:
        shown = ", ".join(everything[:10]) or "nothing"
        raise CaseError(f"{folder}: no .nii or .nii.gz files in this folder (found: {shown})")
    found: dict[str, Path] = {}
    label: Path | None = None
    unknown = []
    for f in files:
        name = recognise(f, folder)
        if name is None:
            unknown.append(f)
            continue
        if name == BRAIN_MASK:
            warnings.warn(f"{f}: a brain mask, not a lesion label or a modality; not loaded", stacklevel=3)
            continue
        if name in LABEL_NAMES:
            if label is not None:
                raise CaseError(f"{folder}: two label files, {label.name} and {f.name}")
            label = f
            continue
        if name in found:
            raise CaseError(f"{folder}: two files for modality {name}: {found[name].name} and {f.name}")
        found[name] = f
    if not found and len(unknown) == 1:  # one image (and perhaps its label): a one-channel case
        return [(nifti_stem(unknown[0]), unknown[0])], label
    if not found:
        names = ", ".join(f.relative_to(folder).as_posix() for f in files[:12])
        raise CaseError(
            f"{folder}: no recognised modality names among {names}; expected ISLES-2017 names "
            "(ADC, MTT, rCBF, rCBV, Tmax, TTP, OT) or BraTS names (t1, t1ce, t2, flair, seg) in file or folder names"
        )
    order = []
    for mods, _labels in MODALITY_SETS.values():
        order += [m for m in mods if m in found]
    return [(m, found[m]) for m in order], label


def _case_entries(path_or_paths, modalities, label_path: Path | None) -> tuple[list[tuple[str, Path]], Path | None,
                                                                            str]:
    """(channel name, file) per channel, the label file found beside them and the case's name."""
    entries: list[tuple[str, Path]]
    if isinstance(path_or_paths, (str, os.PathLike)):
        p = Path(path_or_paths)
        if not p.exists():
            raise CaseError(f"{p}: file or folder not found")
        if p.is_dir():
            entries, found = _scan_folder(p)
            label_path = label_path or found
            name = readable_name(p.name)
            if modalities is not None:  # a folder's files are picked by name, in the order asked for
                try:
                    picked = match_channels([m for m, _ in entries], list(modalities), str(p))
                except ValueError as exc:
                    raise CaseError(str(exc)) from None
                entries = [entries[i] for i in picked]
        else:
            if not is_nifti_path(p):
                raise CaseError(f"{p}: not a NIfTI file name (expected .nii or .nii.gz)")
            entries = [(recognise(p) or nifti_stem(p), p)]
            name = readable_name(nifti_stem(p))
    else:
        paths = [Path(q) for q in path_or_paths]
        if not paths:
            raise CaseError("no files given")
        entries = []
        for q in paths:
            hit = recognise(q)
            if hit in LABEL_NAMES and label_path is None and len(paths) > 1:
                label_path = q
                continue
            entries.append((hit or nifti_stem(q), q))
        seen: dict[str, Path] = {}
        for mod, q in entries:
            if mod.lower() in seen and modalities is None:
                raise CaseError(f"{q}: a second file for modality {mod} (the first: {seen[mod.lower()]}); "
                                "give each modality once, or name the channels with modalities=[...]")
            seen[mod.lower()] = q
        name = readable_name(paths[0].parent.name or nifti_stem(paths[0]))
    return entries, label_path, name


def _read_channels(entries: list[tuple[str, Path]], nonfinite: str) -> tuple[list[np.ndarray], list[str], Grid, Path]:
    """The volumes and their names (a 4D file gives one per channel), on one grid: (volumes, names, grid, path of
    the first file)."""
    volumes: list[np.ndarray] = []
    names: list[str] = []
    ref_grid: Grid | None = None
    ref_path = None
    for mod, path in entries:
        data, grid = read_nifti(path)
        data = _check_finite(np.asarray(data, dtype=np.float32), path, nonfinite)
        if ref_grid is None:
            ref_grid, ref_path = grid, path
        elif not _same_grid(grid, ref_grid):
            raise CaseError(_grid_mismatch(path, grid, ref_path, ref_grid))
        if data.ndim == 4:
            if len(entries) > 1 and data.shape[3] != 1:
                raise CaseError(f"{path}: 4D file of shape {data.shape} in a list of one-modality files")
            for c in range(data.shape[3]):
                volumes.append(data[..., c])
                names.append(mod if data.shape[3] == 1 else f"{mod}_{c}")
        else:
            volumes.append(data)
            names.append(mod)
    assert ref_grid is not None
    return volumes, names, ref_grid, ref_path


def load_case(
    path_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
    label: str | os.PathLike | None = None,
    modalities: Sequence[str] | None = None,
    nonfinite: str = "error",
    label_values: Sequence[int] | int | None = None,
) -> Case:
    """Load a case: a folder, a list of one-modality files, or one 4D NIfTI (modalities on axis 4).

    Folders are searched recursively; ISLES-2017 (ADC, MTT, rCBF, rCBV, Tmax, TTP; label OT) and BraTS
    names of every release (t1/t1n/T1w, t1ce/t1c/T1Gd, t2/t2w, flair/t2f; label seg) are recognised
    case-insensitively in file and folder names (BraTS channels are named t1, t1ce, t2, flair); a folder
    with one unrecognised image is a one-channel case named after the file.

    Parameters
    ----------
    path_or_paths : str, os.PathLike or sequence of them
        A case folder, one NIfTI file (3D or 4D), or a list of one-modality files.
    label : str or os.PathLike, optional
        The ground-truth file, when it is not found beside the images.
    modalities : sequence of str, optional
        For a folder, the channels to take, picked by name (any spelling) in that order and named as given;
        for a list of files or a 4D file, the name of each file or channel in order, as written.
    nonfinite : str
        'error' (default: NaN/Inf voxels are refused) or 'zero' (they become 0).
    label_values : int or sequence of int, optional
        The value(s) of the ground-truth region in a multi-label file (see :mod:`napari_lrp.io.labels`; a
        binary label needs none).

    Returns
    -------
    Case
        Channels (C, Z, Y, X) float32 in napari axis order (RAS+), the label (Z, Y, X) uint8 or None, the grid.
    """
    if nonfinite not in ("error", "zero"):
        raise ValueError("nonfinite must be 'error' or 'zero'")
    label_path = Path(label) if label is not None else None
    entries, found_label, name = _case_entries(path_or_paths, modalities, label_path)
    label_path = label_path or found_label
    volumes, names, ref_grid, ref_path = _read_channels(entries, nonfinite)
    if modalities is not None:
        if len(modalities) != len(volumes):
            raise CaseError(
                f"{ref_path}: {len(modalities)} modality names given ({', '.join(modalities)}) "
                f"for {len(volumes)} channels"
            )
        names = [str(m) for m in modalities]
        doubled = sorted({m for m in names if [n.lower() for n in names].count(m.lower()) > 1})
        if doubled:
            raise CaseError(f"{ref_path}: modality names {doubled} given twice; each channel needs its own name")
    stack = np.stack(volumes, axis=-1)  # (i, j, k, C)
    image = ref_grid.to_napari(stack).astype(np.float32, copy=False)
    lab = _read_label(label_path, ref_grid, ref_path, nonfinite) if label_path is not None else None
    files = [str(p) for _, p in entries] + ([str(label_path)] if label_path else [])
    given = None if label_values is None else (
        [label_values] if isinstance(label_values, (int, float, np.integer, np.floating)) else list(label_values))
    if given is not None and not all(not isinstance(v, bool) and float(v).is_integer() and 0 <= v <= 255
                                     for v in given):
        raise CaseError(f"{ref_path}: label_values={given!r}: label values are whole numbers 0..255 (the values of "
                        "the ground-truth region in the label file)")
    values = None if given is None else tuple(int(v) for v in given)
    folder = str(path_or_paths) if isinstance(path_or_paths, (str, os.PathLike)) and Path(path_or_paths).is_dir() \
        else None
    case = Case(image=image, modalities=names, label=lab, grid=ref_grid, name=name, files=files,
                label_values=values, folder=folder)
    if values is not None:
        if lab is None:
            raise CaseError(f"{case.name}: label_values={list(values)} given but the case has no label file")
        case.ground_truth  # noqa: B018 - refuses values the label does not hold, naming the file
    return case


def save_nifti(array: np.ndarray, case: Case | Grid, path: str | os.PathLike) -> Path:
    """Write an array on the case grid to a NIfTI file on the original file's grid.

    nibabel reads the file back voxel-for-voxel on the original file's grid, with the original affine and
    header; the write is atomic (temporary file, then rename).

    Parameters
    ----------
    array : numpy.ndarray
        (Z, Y, X) or (C, Z, Y, X) on the case grid, napari order.
    case : Case or Grid
        The case (or its grid) the array lies on.
    path : str or os.PathLike
        The file (.nii or .nii.gz).

    Returns
    -------
    Path
        The file written.
    """
    grid = case.grid if isinstance(case, Case) else case
    return save_on_grid(array, grid, path)
