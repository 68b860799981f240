"""Localisation: does the relevance lie on the ground truth?

Every measure reads one score per voxel from the relevance (C, Z, Y, X): by default its positive part summed
over the channels (``part="positive"``; Arras et al. 2022 count positive relevance only, as evidence *for*
the target), or ``"absolute"`` (|R| summed over channels) or ``"signed"``. The ground truth is a (Z, Y, X)
mask; an empty mask gives NaN, as in Quantus 0.6.

References: relevance mass and rank accuracy, Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022;
pointing game, Zhang et al., IJCV 2018; top-k intersection, Theiner et al. 2021; the AUC of the voxel scores
against the mask, Fawcett 2006 (as Quantus's ``AUC``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

__all__ = ["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "roc_auc",
           "top_k_intersection", "top_voxels", "voxel_scores"]

PARTS = ("positive", "absolute", "signed")


def voxel_scores(relevance, part: str = "positive") -> np.ndarray:
    """One score per voxel from a relevance map.

    Parameters
    ----------
    relevance : numpy.ndarray
        (C, Z, Y, X) relevance, or (Z, Y, X) already one score per voxel.
    part : str
        'positive' (the positive relevance summed over channels), 'absolute' (|R| summed) or 'signed' (R summed).

    Returns
    -------
    numpy.ndarray
        float64 (Z, Y, X).
    """
    R = np.asarray(relevance, dtype=np.float64)
    if part not in PARTS:
        raise ValueError(f"part={part!r}: use one of {', '.join(PARTS)}")
    if part == "positive":
        R = np.maximum(R, 0.0)
    elif part == "absolute":
        R = np.abs(R)
    return R.sum(axis=0) if R.ndim == 4 else R


def _pair(relevance, mask, part):
    s = voxel_scores(relevance, part)
    g = np.asarray(mask, dtype=bool)
    if g.shape != s.shape:
        raise ValueError(f"the mask's shape {g.shape} differs from the relevance's voxels {s.shape}")
    return s.ravel(), g.ravel()


def top_voxels(scores: np.ndarray, k: int) -> np.ndarray:
    """The flat indices of the k highest scores, ties at the k-th score broken by voxel order (C order).

    O(n) (a partition, not a sort), and the same set as the first k of a stable descending sort.

    Parameters
    ----------
    scores : numpy.ndarray
        Flat voxel scores.
    k : int
        How many (1 to the number of scores).

    Returns
    -------
    numpy.ndarray
        k indices, in no particular order.
    """
    if k >= scores.size:
        return np.arange(scores.size)
    kth = np.partition(scores, scores.size - k)[scores.size - k]
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[: k - above.size]
    return np.concatenate([above, tied])


def relevance_mass_accuracy(relevance, mask, part: str = "positive") -> float:
    """The share of the relevance that lies inside the mask: sum(s * g) / sum(s).

    Parameters
    ----------
    relevance : numpy.ndarray
        (C, Z, Y, X) or (Z, Y, X).
    mask : numpy.ndarray
        (Z, Y, X) bool, the ground truth.
    part : str
        Of :func:`voxel_scores`.

    Returns
    -------
    float
        In [0, 1] for non-negative scores (1: all relevance on the mask); NaN for an empty mask or a map without
        relevance. Quantus's ``RelevanceMassAccuracy`` on the same scores (abs and normalise off).
    """
    s, g = _pair(relevance, mask, part)
    total = s.sum()
    if not g.any() or total == 0:
        return float("nan")
    return float(s[g].sum() / total)


def relevance_rank_accuracy(relevance, mask, part: str = "positive") -> float:
    """The share of the K highest-scoring voxels that lie inside the mask, K the mask's size.

    Parameters
    ----------
    relevance, mask, part
        As for :func:`relevance_mass_accuracy`.

    Returns
    -------
    float
        In [0, 1]; NaN for an empty mask. Ties at the K-th score are broken by voxel order (C order), where
        Quantus's ``RelevanceRankAccuracy`` leaves them to numpy's unstable sort: equal on distinct scores.
    """
    s, g = _pair(relevance, mask, part)
    k = int(g.sum())
    if k == 0:
        return float("nan")
    return float(g[top_voxels(s, k)].sum() / k)


def pointing_game(relevance, mask, spacing=(1.0, 1.0, 1.0), tolerance_mm: float = 0.0,
                  part: str = "positive") -> float:
    """1 when a voxel of the highest score lies on the mask or within ``tolerance_mm`` of it, else 0.

    Parameters
    ----------
    relevance, mask
        As for :func:`relevance_mass_accuracy`.
    spacing : tuple of float
        Voxel size (mm) along Z, Y, X, for the tolerance.
    tolerance_mm : float
        How far from the mask (Euclidean, mm) a maximum still counts as a hit (Zhang et al. use 15 pixels).
    part : str
        Of :func:`voxel_scores`.

    Returns
    -------
    float
        1.0 or 0.0; NaN for an empty mask. With no tolerance, Quantus's ``PointingGame`` (unweighted).
    """
    s = voxel_scores(relevance, part)
    g = np.asarray(mask, dtype=bool)
    if not g.any():
        return float("nan")
    peak = s == s.max()
    if tolerance_mm > 0:
        distance = ndimage.distance_transform_edt(~g, sampling=tuple(float(v) for v in spacing))
        g = distance <= tolerance_mm
    return float(np.any(peak & g))


def top_k_intersection(relevance, mask, k: int = 1000, part: str = "positive") -> float:
    """The share of the k highest-scoring voxels that lie inside the mask.

    Parameters
    ----------
    relevance, mask
        As for :func:`relevance_mass_accuracy`.
    k : int
        How many voxels (at most the volume's).
    part : str
        Which part of the relevance is scored (:func:`voxel_scores`).

    Returns
    -------
    float
        In [0, 1]; NaN for an empty mask. Quantus's ``TopKIntersection`` (without concept influence).
    """
    s, g = _pair(relevance, mask, part)
    if not 0 < k <= s.size:
        raise ValueError(f"k={k}: choose 1 to the number of voxels ({s.size})")
    if not g.any():
        return float("nan")
    return float(g[top_voxels(s, k)].mean())


def roc_auc(relevance, mask, part: str = "absolute") -> float:
    """The area under the ROC curve of the voxel scores as a detector of the mask.

    The Mann-Whitney form: the probability that a voxel of the mask outscores one outside it, ties counting
    one half, which is the trapezoid area of the ROC curve.

    Parameters
    ----------
    relevance, mask
        As for :func:`relevance_mass_accuracy`.
    part : str
        Of :func:`voxel_scores`; by default |R|.

    Returns
    -------
    float
        0.5 for a map unrelated to the mask, 1 for a perfect one; NaN when the mask is empty or everything.
        Quantus's ``AUC`` (scikit-learn's roc_curve and auc) on the same scores.
    """
    s, g = _pair(relevance, mask, part)
    n_in = int(g.sum())
    n_out = g.size - n_in
    if n_in == 0 or n_out == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[g].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
