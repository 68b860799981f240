"""nnU-Net v2's resampling (``resample_data_or_seg_to_shape``) as separable linear maps, with their LRP rule.

nnU-Net resamples images with skimage's ``resize(order=3, mode="edge", anti_aliasing=False)`` (a cubic
B-spline, ``scipy.ndimage.zoom(grid_mode=True, mode="nearest")``, output clipped to the input's range) and,
when the spacing is anisotropic (max/min > 3), in-plane per slice and along the low-resolution axis with
``map_coordinates(order=order_z, mode="nearest")``. Every one of these is a tensor product of one matrix per
axis, so this module builds the three (n_out, n_in) matrices once (by resampling the identity with the same
scipy call) and applies them with ``tensordot``: the same numbers as nnU-Net (tested against nnunetv2 when
installed), and the transpose is at hand for relevance.

Relevance through a resampling z = A x (then clipped) is the epsilon rule of a linear map,
R_in = x * A^T (R_out / stab(A x)) for the voxels inside the input's range. A clipped voxel's value is the
range's end, which is an input voxel (the channel's or slice's maximum or minimum): its relevance goes to that
voxel (split evenly between equal extremes), as the value does; with LRP-0 this is gradient x input of the
clipped resampling exactly. Axis order is whatever the caller's arrays use (nnU-Net's own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..lrp.rules import divide_stabilised

__all__ = ["ANISO_THRESHOLD", "Resampling", "axis_matrix", "new_shape", "resampling"]

ANISO_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD


def new_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: round(old spacing / new spacing * old size) per axis.

    Parameters
    ----------
    shape : tuple of int
        The old shape.
    spacing, target_spacing : sequence of float
        The old and the new voxel size (mm).

    Returns
    -------
    tuple of int
    """
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target_spacing))


def axis_matrix(n_in: int, n_out: int, order: int, nearest_coordinates: bool = False) -> np.ndarray:
    """The (n_out, n_in) float64 matrix of one axis' resampling.

    Spline (``nearest_coordinates=False``): ``ndimage.zoom(grid_mode=True, mode="nearest")`` as skimage's
    resize calls it; ``nearest_coordinates=True``: nnU-Net's out-of-plane step, ``map_coordinates`` at
    scale * (i + 0.5) - 0.5 with ``mode="nearest"``.

    Parameters
    ----------
    n_in, n_out : int
        The axis' length before and after.
    order : int
        The spline order.
    nearest_coordinates : bool
        nnU-Net's out-of-plane placement.

    Returns
    -------
    numpy.ndarray
    """
    eye = np.eye(n_in, dtype=np.float64)
    if n_in == n_out and not nearest_coordinates:
        return eye
    if nearest_coordinates:
        scale = float(n_in) / n_out
        rows = scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
        coords = np.stack(np.meshgrid(rows, np.arange(n_in, dtype=np.float64), indexing="ij"))
        return ndimage.map_coordinates(eye, coords, order=order, mode="nearest")
    return ndimage.zoom(eye, (n_out / n_in, 1.0), order=order, mode="nearest", grid_mode=True)


def _determine_separate_z(force_separate_z, spacing, target_spacing) -> tuple[bool, int | None]:
    """nnU-Net's ``determine_do_sep_z_and_axis``."""
    def lowres(sp):
        sp = np.asarray(sp, dtype=float)
        return np.where(max(sp) / sp == 1)[0]

    def aniso(sp):
        return (np.max(sp) / np.min(sp)) > ANISO_THRESHOLD

    if force_separate_z is not None:
        separate, axis = bool(force_separate_z), (lowres(spacing) if force_separate_z else None)
    elif aniso(spacing):
        separate, axis = True, lowres(spacing)
    elif aniso(target_spacing):
        separate, axis = True, lowres(target_spacing)
    else:
        separate, axis = False, None
    if axis is not None:
        if len(axis) != 1:
            return False, None
        axis = int(axis[0])
    return separate, axis


@dataclass
class Resampling:
    """One resampling (C, *shape_in) -> (C, *shape_out): per-axis matrices, the separate axis, the clip."""

    shape_in: tuple[int, int, int]
    shape_out: tuple[int, int, int]
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray]  # (n_out, n_in) per axis
    separate_axis: int | None  # the axis resampled with order_z after the in-plane resize, or None
    clip: bool  # skimage's clip to the input range (per channel, or per slice when separate)

    @property
    def identity(self) -> bool:
        """Whether the resampling keeps the shape (nothing to do)."""
        return tuple(self.shape_in) == tuple(self.shape_out)

    def _apply(self, t: torch.Tensor, mats) -> torch.Tensor:
        """Apply per-axis matrices (None: the axis unchanged) to the last three axes of t (float64)."""
        for axis, m in enumerate(mats):
            if m is None:
                continue
            mt = torch.as_tensor(m, dtype=t.dtype, device=t.device)
            t = torch.movedim(torch.tensordot(mt, torch.movedim(t, t.ndim - 3 + axis, 0), dims=1), 0,
                              t.ndim - 3 + axis)
        return t

    def _stages(self) -> list[tuple]:
        """The linear stages in order: every axis at once, or nnU-Net's in-plane resize then the separate axis."""
        if self.separate_axis is None:
            return [self.matrices]
        a = self.separate_axis
        return [tuple(None if i == a else m for i, m in enumerate(self.matrices)),
                tuple(m if i == a else None for i, m in enumerate(self.matrices))]

    def _clip_dims(self) -> list[int]:
        """The dims of a (C, *shape) array the clip's range is taken over (per channel, or per slice)."""
        return [d for d in (1, 2, 3) if self.separate_axis is None or d != self.separate_axis + 1]

    def _forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(each stage's input, each stage's output before the clip), float64; the first stage's output is
        clipped as skimage clips it (to the channel's range, or the slice's when the axis is separate) before
        the next stage; the last input is nnU-Net's array."""
        x = x.double()
        inputs, outputs = [x], []
        for i, mats in enumerate(self._stages()):
            z = self._apply(inputs[-1], mats)
            outputs.append(z)
            if i == 0 and self.clip:
                dims = self._clip_dims()
                z = torch.minimum(torch.maximum(z, x.amin(dim=dims, keepdim=True)), x.amax(dim=dims, keepdim=True))
            inputs.append(z)
        return inputs, outputs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net's resampled array: (C, *shape_in) -> (C, *shape_out) float64 (cast as the caller needs)."""
        if self.identity:
            return x.double()
        return self._forward(x)[0][-1]

    def relevance(self, x: torch.Tensor, relevance_out: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """The epsilon rule through the resampling.

        Each linear stage z = A x hands R_in = x * A^T (R / stab(z)); where the first stage's output is clipped to
        the input's range, the clipped voxel's relevance goes to the input voxel holding that end of the range
        (split evenly between equal ones). Where z = 0 the relevance is absorbed (nothing to share it by).

        Parameters
        ----------
        x : torch.Tensor
            (C, *shape_in), the resampling's input.
        relevance_out : torch.Tensor
            (C, *shape_out).
        epsilon : float
            The stabiliser.

        Returns
        -------
        torch.Tensor
            (C, *shape_in) float64.
        """
        if self.identity:
            return relevance_out.double()

        inputs, outputs = self._forward(x)
        r = relevance_out.double()
        stages = list(enumerate(self._stages()))
        for (i, mats), xin, z in zip(reversed(stages), reversed(inputs[:-1]), reversed(outputs)):
            to_ends = None
            if i == 0 and self.clip:
                r, to_ends = self._clipped_relevance(xin, z, r)
            s = divide_stabilised(r, z, epsilon)
            r = xin * self._apply(s, [None if m is None else m.T for m in mats])
            if to_ends is not None:
                r = r + to_ends
        return r

    def _clipped_relevance(self, x: torch.Tensor, z: torch.Tensor, r: torch.Tensor):
        """(the relevance of the voxels inside the range, the clipped voxels' relevance on the input voxels that
        hold the ends of the range): the clip's part of the rule."""
        dims = self._clip_dims()
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        above, below = z > hi, z < lo
        to_ends = torch.zeros_like(x)
        for clipped, end in ((above, hi), (below, lo)):
            holders = (x == end).to(x.dtype)
            share = (r * clipped).sum(dim=dims, keepdim=True) / holders.sum(dim=dims, keepdim=True)
            to_ends = to_ends + holders * share
        return r * ~(above | below), to_ends


def resampling(shape_in, spacing, target_spacing, shape_out=None, order: int = 3, order_z: int = 0,
               force_separate_z=None, clip: bool = True) -> Resampling:
    """The resampling nnU-Net applies from one spacing to another, with its plans.json keyword arguments.

    Parameters
    ----------
    shape_in : tuple of int
        The shape at ``spacing`` (the array's axis order).
    spacing, target_spacing : sequence of float
        mm, the array's axis order.
    shape_out : tuple of int, optional
        Default :func:`new_shape`.
    order, order_z : int
        The spline orders in plane and out of plane.
    force_separate_z : bool or None
        nnU-Net's choice of a separate out-of-plane step (None: decided from the spacing's anisotropy).
    clip : bool
        Clip to the input's range as nnU-Net does for data.

    Returns
    -------
    Resampling
    """
    shape_in = tuple(int(s) for s in shape_in)
    shape_out = tuple(int(s) for s in (shape_out if shape_out is not None else
                                       new_shape(shape_in, spacing, target_spacing)))
    separate, axis = _determine_separate_z(force_separate_z, spacing, target_spacing)
    mats = []
    for i, (n_in, n_out) in enumerate(zip(shape_in, shape_out)):
        if separate and i == axis:
            mats.append(axis_matrix(n_in, n_out, order_z, nearest_coordinates=True))
        else:
            mats.append(axis_matrix(n_in, n_out, order))
    return Resampling(shape_in=shape_in, shape_out=shape_out, matrices=tuple(mats),
                      separate_axis=axis if separate else None, clip=clip)
