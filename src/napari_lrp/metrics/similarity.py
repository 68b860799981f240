"""Agreement of relevance maps: one pair (:func:`map_similarity`) and many runs of one explanation
(:func:`repeatability`: the folds of an ensemble, test-time flips, Monte Carlo draws).

Similarities, on |R| summed over channels: Spearman rank correlation over all voxels, SSIM of the central
axial slice (maps scaled to [0, 1]; Wang et al. 2004) and the overlap of the top 1 % voxels; and the Spearman
correlation of the signed maps. Repeatability in the sense of Arun et al., Radiology: AI 2021.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

__all__ = ["map_similarity", "repeatability", "spearman"]


def map_similarity(a: np.ndarray, b: np.ndarray, top: float = 0.01, mask: np.ndarray | None = None) -> dict[str, float]:
    """Similarity of two relevance maps.

    Parameters
    ----------
    a, b : numpy.ndarray
        (C, Z, Y, X) maps.
    top : float
        The share of voxels of the |.| sums whose overlap is measured.
    mask : numpy.ndarray, optional
        (Z, Y, X) where the rank correlations are computed (default everywhere).

    Returns
    -------
    dict[str, float]
        spearman_signed (the signed maps, all channels' voxels), spearman (|a|, |b| summed over channels),
        ssim (the central axial slice of the |.| sums, scaled to [0, 1]) and top_overlap.
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    A = np.abs(a).sum(0) if a.ndim == 4 else np.abs(a)
    B = np.abs(b).sum(0) if b.ndim == 4 else np.abs(b)
    m = np.ones(A.shape, bool) if mask is None else np.asarray(mask, bool)
    rho = float(spearmanr(A[m], B[m]).statistic)
    signed = float(spearmanr(a[..., m].ravel() if a.ndim == 4 else a[m], b[..., m].ravel() if b.ndim == 4
                             else b[m]).statistic)
    z = A.shape[0] // 2
    sa, sb = A[z] / (A[z].max() or 1.0), B[z] / (B[z].max() or 1.0)
    win = min(7, *(d if d % 2 else d - 1 for d in sa.shape))  # SSIM's 7x7 window, smaller on tiny slices
    ssim = float(structural_similarity(sa, sb, data_range=1.0, win_size=win)) if win >= 3 else float("nan")
    k = max(1, int(round(top * A.size)))
    ta = np.argpartition(A.ravel(), -k)[-k:]
    tb = np.argpartition(B.ravel(), -k)[-k:]
    overlap = len(np.intersect1d(ta, tb)) / k
    return {"spearman": 0.0 if np.isnan(rho) else rho, "spearman_signed": 0.0 if np.isnan(signed) else signed,
            "ssim": ssim, "top_overlap": float(overlap)}


def spearman(a: np.ndarray, b: np.ndarray, signed: bool = True) -> float:
    """The Spearman rank correlation of two maps, alone (:func:`map_similarity` computes four measures).

    Parameters
    ----------
    a, b : numpy.ndarray
        (C, Z, Y, X) maps of one shape.
    signed : bool
        True: the signed maps, every channel's voxels (``spearman_signed``); False: |R| summed over channels
        (``spearman``).

    Returns
    -------
    float
        In [-1, 1]; 0 where a map is constant.
    """
    from scipy.stats import spearmanr

    if signed:
        rho = spearmanr(np.ravel(a), np.ravel(b)).statistic
    else:
        rho = spearmanr(np.abs(a).sum(0).ravel(), np.abs(b).sum(0).ravel()).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def repeatability(maps, top: float = 0.01) -> dict[str, float]:
    """Mean pairwise agreement of several maps of one explanation.

    Parameters
    ----------
    maps : sequence of numpy.ndarray
        Two or more (C, Z, Y, X) maps of the same case (e.g. ``Explanation.samples``, one per draw or flip,
        or the maps of the folds of an ensemble).
    top : float
        The share of voxels whose overlap is measured.

    Returns
    -------
    dict[str, float]
        The means over all pairs of :func:`map_similarity`'s spearman, spearman_signed, ssim and top_overlap,
        and ``pairs`` (how many).
    """
    maps = [np.asarray(m) for m in maps]
    if len(maps) < 2:
        raise ValueError(f"repeatability needs at least two maps, got {len(maps)}")
    rows = [map_similarity(a, b, top) for a, b in combinations(maps, 2)]
    out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    out["pairs"] = float(len(rows))
    return out
