"""Robustness: does the map stay when the input moves a little (Yeh et al., "On the (in)fidelity and sensitivity
of explanations", NeurIPS 2019)?

One set of noisy inputs serves both measures: Gaussian noise of sd ``noise`` times each channel's sd is
added to the input ``n_samples`` times, the method runs on each, and the change of the map is measured
relative to the map: s_i = ||R_i - R||_F / ||R||_F. Max-sensitivity is the largest s_i, average sensitivity
their mean. With one channel, ``noise`` times its sd as Quantus's ``perturb_std`` of ``gaussian_noise`` and
Quantus's normalisation and NaN-on-changed-prediction off, these are Quantus's ``MaxSensitivity`` and
``AvgSensitivity``. Yeh et al. sample uniformly in a ball; Gaussian noise is the scanner's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Sensitivity", "noisy_inputs", "sensitivity"]


@dataclass(frozen=True)
class Sensitivity:
    """max_sensitivity and avg_sensitivity of one map, with what they were measured under: noise (the share of
    each channel's sd), n_samples, and every sample's relative change ``changes``."""

    max_sensitivity: float
    avg_sensitivity: float
    noise: float
    n_samples: int
    changes: tuple[float, ...]


def noisy_inputs(x, noise: float = 0.02, n_samples: int = 10, rng=0, foreground=None):
    """The noisy copies of an input, one at a time.

    Parameters
    ----------
    x : numpy.ndarray
        (C, Z, Y, X) or (1, C, Z, Y, X) intensities.
    noise : float
        The noise's sd as a share of each channel's sd (over ``foreground``, default every voxel).
    n_samples : int
        How many copies.
    rng : int or numpy.random.RandomState
        The noise's generator: ``rng.normal(0, sd, x.shape)`` per copy.
    foreground : numpy.ndarray, optional
        (Z, Y, X) bool where the channels' sds are taken.

    Yields
    ------
    numpy.ndarray
        x plus noise, float64, x's shape.
    """
    arr = np.asarray(x, dtype=np.float64)
    C = arr.shape[-4]
    flat = np.moveaxis(arr.reshape((-1,) + arr.shape[-4:])[0], 0, -1)  # (Z, Y, X, C)
    region = flat[np.asarray(foreground, bool)] if foreground is not None else flat.reshape(-1, C)
    sd = noise * region.std(axis=0)
    scale = sd.reshape((C, 1, 1, 1))
    rng = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(rng)
    for _ in range(n_samples):
        yield arr + rng.normal(0.0, np.broadcast_to(scale, arr.shape[-4:]), size=arr.shape[-4:]).reshape(arr.shape)


def sensitivity(explain_fn: Callable[[np.ndarray], np.ndarray], x, relevance, noise: float = 0.02,
                n_samples: int = 10, rng=0, foreground=None) -> Sensitivity:
    """Max- and average sensitivity of a map from one set of noisy runs.

    Parameters
    ----------
    explain_fn : callable
        A noisy input (x's shape) -> its map (``relevance``'s shape), the method under test with the same
        target.
    x : numpy.ndarray
        (C, Z, Y, X) or (1, C, Z, Y, X), the input the map explains.
    relevance : numpy.ndarray
        The map of x.
    noise, n_samples, rng, foreground
        Of :func:`noisy_inputs`.

    Returns
    -------
    Sensitivity
        0 for a map the noise does not move; 1 when the change is as large as the map.
    """
    R = np.asarray(relevance, dtype=np.float64)
    norm = np.linalg.norm(R.ravel())
    if norm == 0:
        raise ValueError("the map is zero everywhere: its sensitivity is undefined")
    changes = []
    for noisy in noisy_inputs(x, noise, n_samples, rng, foreground):
        other = np.asarray(explain_fn(noisy), dtype=np.float64)
        changes.append(float(np.linalg.norm((other - R).ravel()) / norm))
    return Sensitivity(max(changes), float(np.mean(changes)), float(noise), int(n_samples), tuple(changes))
