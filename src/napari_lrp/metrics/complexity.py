"""Complexity: how concentrated is a map? A map a reader can take in is sparse.

Both measures read |R| over every element of the map (channels and voxels), as the features of the input.

References: sparseness as the Gini index, Chalasani et al., "Concise explanations of neural networks using
adversarial training", ICML 2020; complexity as the entropy of the normalised |R|, Bhatt, Weller and Moura,
"Evaluating and aggregating feature-based model explanations", IJCAI 2020.
"""

from __future__ import annotations

import numpy as np

__all__ = ["complexity", "sparseness"]


def _magnitudes(relevance) -> np.ndarray:
    """|R| flattened, in the map's own float precision (float32 maps sort twice as fast as float64)."""
    a = np.asarray(relevance)
    return np.abs(a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)).ravel()


def sparseness(relevance) -> float:
    """The Gini index of |R|: sum_i (2i - n - 1) a_(i) / (n sum a), a_(i) sorted ascending, i from 1.

    Parameters
    ----------
    relevance : numpy.ndarray
        Any shape, e.g. (C, Z, Y, X).

    Returns
    -------
    float
        0 for a flat map, (n - 1) / n for a single non-zero element; NaN for an all-zero map. Quantus's
        ``Sparseness`` adds 1e-7 to every |R| first (which makes it finite on a zero map and lowers it
        slightly on sparse ones); without that shift the two are equal.
    """
    a = np.sort(_magnitudes(relevance)).astype(np.float64)  # the sums in float64
    n = a.size
    total = a.sum()
    if n == 0 or total == 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * a).sum() / (n * total))


def complexity(relevance) -> float:
    """The entropy (nats) of p = |R| / sum |R| over the map's elements, 0 log 0 = 0.

    Parameters
    ----------
    relevance : numpy.ndarray
        A map of any shape; every element counts as one feature.

    Returns
    -------
    float
        0 for a single element, log n for a flat map of n elements; NaN for an all-zero map. Quantus's
        ``Complexity`` uses log(p + 1e-12): the same to n * 1e-12.
    """
    a = _magnitudes(relevance).astype(np.float64)
    total = a.sum()
    if total == 0:
        return float("nan")
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum())
