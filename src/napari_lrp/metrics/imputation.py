"""Noisy linear imputation (Rong et al., "A consistent and efficient evaluation strategy for attribution
methods", ICML 2022: ROAD), in 3D.

Removed voxels take the weighted mean of their 26 neighbours (removed neighbours are unknowns too, so the
values solve one sparse linear system per channel), plus Gaussian noise. The weights fall by half per
step of the city-block distance (face 1, edge 1/2, corner 1/4): in a single slice that is ROAD's 2D
kernel (direct neighbours 1/6, diagonal ones 1/12: only the ratio matters), so a one-slice volume imputes
as Quantus's ``noisy_linear_imputation``. Imputation instead of a constant keeps the perturbed input
in-distribution: the removed region's shape leaks no class information.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import cg, spsolve

__all__ = ["DIRECT_SOLVE_LIMIT", "noisy_linear_imputation"]

#: up to this many removed voxels the system is solved directly (SuperLU), above by conjugate gradients
DIRECT_SOLVE_LIMIT = 2_000

_OFFSETS = [d for d in itertools.product((-1, 0, 1), repeat=3) if any(d)]
_WEIGHTS = [2.0 ** (1 - sum(abs(v) for v in d)) for d in _OFFSETS]


def _shifted(d: int, n: int) -> tuple[slice, slice]:
    """The slices of an axis of length n where a voxel and its neighbour at offset d both lie."""
    return (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))


def _system(mask: np.ndarray, values: np.ndarray):
    """The sparse system A v = b of the removed voxels (A: weights between unknowns, -sum on the diagonal),
    built on the grid: for each of the 26 offsets, the voxel and neighbour views of the volume."""
    n = int(mask.sum())
    var = np.full(mask.shape, -1, dtype=np.int64)
    var[mask] = np.arange(n)
    C = values.shape[0]
    grid = values.reshape((C,) + mask.shape)
    rows, cols, data = [], [], []
    b = np.zeros((n, C))
    diagonal = np.zeros(n)
    for offset, w in zip(_OFFSETS, _WEIGHTS):
        here, there = zip(*(_shifted(d, size) for d, size in zip(offset, mask.shape)))
        v_here, v_there = var[here], var[there]
        removed = v_here >= 0
        i_all = v_here[removed]
        diagonal[i_all] -= w
        both = removed & (v_there >= 0)
        rows.append(v_here[both])
        cols.append(v_there[both])
        data.append(np.full(rows[-1].size, w))
        known = removed & (v_there < 0)
        b[v_here[known]] -= w * grid[(slice(None),) + there][:, known].T  # one entry per voxel and offset
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    data.append(diagonal)
    A = sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return A, b


def noisy_linear_imputation(image, removed, noise=0.01, rng=None) -> np.ndarray:
    """Replace the removed voxels of every channel by the linear imputation of their neighbours plus noise.

    Parameters
    ----------
    image : numpy.ndarray
        (C, Z, Y, X) intensities.
    removed : numpy.ndarray
        (Z, Y, X) bool, the voxels to impute (all channels).
    noise : float or sequence of float
        The standard deviation of the added Gaussian noise, in the image's units, one for all channels or one
        per channel (ROAD: 0.01 on [0, 1] images; scale it to the intensities).
    rng : numpy.random.RandomState or int, optional
        The noise's generator (a seed, or a RandomState whose ``randn`` is drawn (C, n), n removed voxels in C
        order, as Quantus draws it from numpy's global state).

    Returns
    -------
    numpy.ndarray
        float64 (C, Z, Y, X), a copy with the removed voxels imputed. When every voxel is removed there is
        nothing to impute from: each channel's mean.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {arr.shape}")
    mask = np.asarray(removed, dtype=bool)
    if mask.shape != arr.shape[1:]:
        raise ValueError(f"removed's shape {mask.shape} differs from the image's voxels {arr.shape[1:]}")
    rng = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(0 if rng is None else rng)
    C = arr.shape[0]
    flat = arr.reshape(C, -1).copy()
    idx = np.flatnonzero(mask.ravel())
    if idx.size == 0:
        return flat.reshape(arr.shape)
    if idx.size == mask.size:
        solution = np.repeat(flat.mean(axis=1, keepdims=True), idx.size, axis=1)
    else:
        A, b = _system(mask, flat)
        if idx.size <= DIRECT_SOLVE_LIMIT:
            solution = np.asarray(spsolve(A.tocsc(), b)).reshape(idx.size, C).T
        else:  # -A is symmetric and diagonally dominant: conjugate gradients, started from the channel means
            # (a residual of 1e-6 of the right-hand side is far below the added noise of 1 % of the sd)
            solution = np.empty((C, idx.size))
            M = -A
            for c in range(C):
                x0 = np.full(idx.size, flat[c].mean())
                solution[c], _info = cg(M, -b[:, c], x0=x0, rtol=1e-6, maxiter=2000)
    sd = np.broadcast_to(np.asarray(noise, dtype=np.float64).reshape(-1, 1), (C, 1))
    flat[:, idx] = solution + sd * rng.randn(*solution.shape)
    return flat.reshape(arr.shape)
