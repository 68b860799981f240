"""The one conversion between NIfTI voxel order and napari axis order.

A NIfTI array is indexed (i, j, k) in the file's own voxel order, which the affine maps to world
RAS+ millimetres. napari-lrp reorients every volume to the closest canonical orientation (RAS+)
and then reverses the axes, so arrays are (Z, Y, X) = (S, A, R): axial slices on napari's slider.
napari receives only ``scale`` (voxel sizes, mm) and ``translate`` (mm); the original affine and
header travel in :class:`Grid` so anything written back lies exactly on the input file's grid.
For an oblique affine the napari world frame is the voxel-aligned frame (rotation dropped), which
is what radiology viewers show as "scanner aligned"; voxel indices always round-trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import nibabel as nib
import numpy as np
from nibabel import orientations as ornts

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class Grid:
    """A NIfTI voxel grid: original ``affine`` (4x4), original 3D ``shape`` and ``header``."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    header: nib.Nifti1Header | None = field(default=None, compare=False, repr=False)

    @cached_property
    def ornt(self) -> np.ndarray:
        """nibabel orientation of the file's axes relative to RAS+."""
        return ornts.io_orientation(self.affine)

    @property
    def canonical_affine(self) -> np.ndarray:
        """Affine of the reoriented (RAS+ voxel order) array."""
        return self.affine @ ornts.inv_ornt_aff(self.ornt, self.shape)

    @property
    def napari_shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) shape of the volume in napari axis order."""
        ras_shape = [0, 0, 0]
        for axis, (out, _flip) in enumerate(self.ornt):
            ras_shape[int(out)] = self.shape[axis]
        return tuple(ras_shape[::-1])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel sizes in mm in napari axis order (Z, Y, X)."""
        zooms = np.sqrt((self.canonical_affine[:3, :3] ** 2).sum(axis=0))
        return zooms[::-1].astype(np.float64)

    @property
    def translate(self) -> np.ndarray:
        """World position (mm) of voxel (0, 0, 0) of the napari array, in (Z, Y, X) = (S, A, R) order."""
        return self.canonical_affine[:3, 3][::-1].astype(np.float64)

    def to_napari(self, data: np.ndarray) -> np.ndarray:
        """A file-order array in napari order.

        Parameters
        ----------
        data : numpy.ndarray
            (i, j, k, *rest) in the file's voxel order.

        Returns
        -------
        numpy.ndarray
            (*rest, Z, Y, X), RAS+ voxel order.
        """
        if data.shape[:3] != tuple(self.shape):
            raise ValueError(f"array shape {data.shape[:3]} does not match the grid {self.shape}")
        ras = ornts.apply_orientation(data, self.ornt)
        n = ras.ndim
        rest = tuple(range(3, n))
        return np.ascontiguousarray(np.transpose(ras, rest + (2, 1, 0)))

    def from_napari(self, data: np.ndarray) -> np.ndarray:
        """A napari-order array in the file's voxel order.

        Parameters
        ----------
        data : numpy.ndarray
            (*rest, Z, Y, X).

        Returns
        -------
        numpy.ndarray
            (i, j, k, *rest).
        """
        if tuple(data.shape[-3:]) != self.napari_shape:
            raise ValueError(
                f"array shape {tuple(data.shape[-3:])} does not match the case grid {self.napari_shape}"
            )
        n = data.ndim
        rest = tuple(range(n - 3))
        ras = np.transpose(data, (n - 1, n - 2, n - 3) + rest)
        back = ornts.ornt_transform(_RAS, self.ornt)
        return np.ascontiguousarray(ornts.apply_orientation(ras, back))

    def napari_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """True RAS+ world position of a napari voxel index.

        Parameters
        ----------
        index_zyx : numpy.ndarray
            (Z, Y, X) voxel index (or (..., 3) of them).

        Returns
        -------
        numpy.ndarray
            mm, in R, A, S order.
        """
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return ijk @ self.canonical_affine[:3, :3].T + self.canonical_affine[:3, 3]

    def viewer_to_index(self, position) -> np.ndarray:
        """The voxel index (Z, Y, X, float) of a point of the napari viewer's world (the layers' scale and
        translate from :meth:`layer_kwargs`).

        Parameters
        ----------
        position : sequence of float
            (Z, Y, X) in the viewer's world (mm).

        Returns
        -------
        numpy.ndarray
            (Z, Y, X) fractional index; round it for the voxel.
        """
        return (np.asarray(position, dtype=float) - np.asarray(self.translate, dtype=float)) / np.asarray(
            self.spacing, dtype=float)

    def layer_kwargs(self) -> dict:
        """Keyword arguments for a napari layer on this grid.

        Returns
        -------
        dict
            ``scale``, ``translate``, ``units`` and ``metadata``.
        """
        return {
            "scale": tuple(float(s) for s in self.spacing),
            "translate": tuple(float(t) for t in self.translate),
            "units": ("mm", "mm", "mm"),
            "metadata": {"napari_lrp_grid": self, "affine": np.array(self.affine)},
        }


def grid_from_layer(scale, translate, shape_zyx) -> Grid:
    """A RAS+ grid (diagonal affine) for a napari layer that did not come from a NIfTI file.

    Parameters
    ----------
    scale, translate : sequence of float
        The layer's (Z, Y, X) scale and translate in mm.
    shape_zyx : tuple of int
        Its spatial shape.

    Returns
    -------
    Grid
    """
    scale = np.asarray(scale, dtype=float)[-3:]
    translate = np.asarray(translate, dtype=float)[-3:]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(scale[::-1])
    affine[:3, 3] = translate[::-1]
    return Grid(affine=affine, shape=tuple(int(s) for s in shape_zyx[::-1]))
