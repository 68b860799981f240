"""Reading single NIfTI files with specific errors, and atomic writing on a case grid."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .atomic import replacing
from .orientation import Grid

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: deflate cannot compress more than about 1032:1, so a .nii.gz holds at most this many bytes per byte
MAX_GZIP_RATIO = 1100
#: bytes per voxel the loader may hold at once while reading one volume (the file's values scaled to
#: float64 by nibabel, then float32 for the case)
BYTES_PER_VOXEL_READING = 12


class CaseError(ValueError):
    """Bad input: the message names the file and the problem."""


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether a name ends in .nii or .nii.gz (any case).

    Parameters
    ----------
    path : str or os.PathLike
        A file name or path.

    Returns
    -------
    bool
    """
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: str | os.PathLike) -> str:
    """A NIfTI file's name without .nii or .nii.gz.

    Parameters
    ----------
    path : str or os.PathLike
        A NIfTI file (see :func:`is_nifti_path`).

    Returns
    -------
    str
        Its name without the folder and the suffix.
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, Grid]:
    """Read a NIfTI file after its header is checked (:func:`check_header`).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    tuple
        (data in file voxel order as a float32 or integer array, its Grid).

    Raises
    ------
    CaseError
        Naming the file for a missing file, a file that is not NIfTI, or a truncated or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: file not found")
    if path.is_dir():
        raise CaseError(f"{path}: is a folder, expected a .nii or .nii.gz file")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, gzip errors, struct errors
        raise CaseError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CaseError(f"{path}: not a NIfTI file (nibabel read it as {type(img).__name__})")
    check_header(path, img)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise CaseError(f"{path}: the file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if data.ndim < 3:
        raise CaseError(f"{path}: {data.ndim}D data of shape {data.shape}; a volume must be 3D (or 4D with modalities)")
    if data.ndim > 4 and any(s != 1 for s in data.shape[4:]):
        raise CaseError(f"{path}: {data.ndim}D data of shape {data.shape}; expected 3D or 4D")
    if data.ndim > 4:
        data = data.reshape(data.shape[:4])
    grid = Grid(affine=np.asarray(img.affine, dtype=np.float64), shape=tuple(int(s) for s in data.shape[:3]),
                header=img.header.copy())
    return data, grid


def _gigabytes(nbytes: float) -> str:
    return f"{nbytes / 1e9:.3g} GB"


def available_memory() -> int:
    """Bytes of memory this process can still allocate without swapping (psutil's 'available').

    Returns
    -------
    int
    """
    import psutil

    return int(psutil.virtual_memory().available)


def check_header(path: Path, img) -> None:
    """Refuse, before any voxel is read, what a header says cannot work.

    A data type that is not a number (RGB, complex), a singular affine, more voxel bytes than the file can
    hold (uncompressed: its size; .nii.gz: :data:`MAX_GZIP_RATIO` times its size), or more memory than is free.

    Parameters
    ----------
    path : Path
        The file (named in the refusal).
    img : nibabel.Nifti1Image
        Its image, header read, no voxel yet.

    Raises
    ------
    CaseError
    """
    hdr = img.header
    dtype = np.dtype(hdr.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise CaseError(f"{path}: voxels of type {dtype} ({'RGB' if dtype.fields else dtype.kind}); napari-lrp "
                        "reads scalar volumes only: save each colour or component as its own channel")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CaseError(f"{path}: the affine (sform/qform) is singular or not finite, e.g. an all-zero sform; "
                        "the voxels have no position. Fix the header (nibabel: img.set_sform(affine, code=1))")
    shape = tuple(int(s) for s in hdr.get_data_shape())
    n = int(np.prod(shape, dtype=np.float64))
    nbytes = n * dtype.itemsize
    size = path.stat().st_size
    offset = int(hdr.get_data_offset()) if hasattr(hdr, "get_data_offset") else 352
    if str(path).lower().endswith(".gz"):
        if nbytes + offset > size * MAX_GZIP_RATIO:
            raise CaseError(f"{path}: the header claims {'x'.join(map(str, shape))} voxels ({_gigabytes(nbytes)}) "
                            f"but the compressed file has {size} bytes, which cannot hold them: truncated or a "
                            "corrupt header")
    elif size < offset + nbytes:
        raise CaseError(f"{path}: the header claims {'x'.join(map(str, shape))} voxels ({offset + nbytes} bytes) "
                        f"but the file has {size} bytes: the file is truncated")
    need = n * BYTES_PER_VOXEL_READING
    free = available_memory()
    if need > free:
        raise CaseError(f"{path}: reading {'x'.join(map(str, shape))} voxels needs about {_gigabytes(need)} of "
                        f"memory and {_gigabytes(free)} is free; crop or resample the volume, or use a larger machine")


def atomic_write(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Write an image to a temporary file beside ``path``, then rename it over ``path``.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        The image.
    path : str or os.PathLike
        The destination.

    Returns
    -------
    Path
    """
    with replacing(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def save_on_grid(array: np.ndarray, grid: Grid, path: str | os.PathLike) -> Path:
    """Write an array in napari order as NIfTI on a grid, atomically.

    The file has the grid's original affine and header (data type updated) and voxel order, so nibabel
    reads it back voxel-for-voxel on the original file's grid; channels go on the 4th axis.

    Parameters
    ----------
    array : numpy.ndarray
        (Z, Y, X) or (C, Z, Y, X), napari order.
    grid : Grid
        The grid of the case it belongs to.
    path : str or os.PathLike
        The file.

    Returns
    -------
    Path
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"{path}: expected a (Z, Y, X) or (C, Z, Y, X) array, got shape {array.shape}")
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    data = grid.from_napari(array)
    header = grid.header.copy() if grid.header is not None else nib.Nifti1Header()
    if not isinstance(header, nib.Nifti1Header):
        header = nib.Nifti1Header.from_header(header)
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    zooms = tuple(header.get_zooms()[:3]) + (1.0,) * (data.ndim - 3)
    header.set_zooms(zooms)
    img = nib.Nifti1Image(data, grid.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    qform_code = int(header["qform_code"]) or 1
    sform_code = int(header["sform_code"]) or 1
    img.set_qform(grid.affine, code=qform_code)
    img.set_sform(grid.affine, code=sform_code)
    return atomic_write(img, path)
