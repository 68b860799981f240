"""The coefficient table of one relevance map: per channel and mean, the measures of docs/method.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .measures import inclusivities, input_mask, mean_power, signal_distribution

__all__ = ["measure"]


def measure(relevance: np.ndarray, image: np.ndarray, label, modalities, tau_r: float = 0.5,
            tau_x: float = 0.1, signed: bool = False, image_mask=None) -> pd.DataFrame:
    """One row per channel and one 'mean' row: input and ground-truth inclusivity, mu, mean power.

    Parameters
    ----------
    relevance, image : numpy.ndarray
        (C, Z, Y, X).
    label : numpy.ndarray or None
        (Z, Y, X) ground truth.
    modalities : list of str
        The channels' names (the rows).
    tau_r, tau_x : float
        The inclusivities' thresholds.
    signed : bool
        Count only relevance for the class.
    image_mask : torch.Tensor, optional
        :func:`~napari_lrp.metrics.measures.input_mask` of ``image`` at ``tau_x`` when the caller keeps it.

    Returns
    -------
    pandas.DataFrame
        Columns channel, input_inclusivity, groundtruth_inclusivity, mu, mean_power.
    """
    mask = input_mask(image, tau_x) if image_mask is None else image_mask
    ii, gi = inclusivities(relevance, mask, label, tau_r, signed)
    mu = signal_distribution(relevance)
    mp = mean_power(relevance, per_channel=True)[0]
    rows = []
    for c, name in enumerate(modalities):
        rows.append({"channel": name, "input_inclusivity": ii.per_channel[c],
                     "groundtruth_inclusivity": np.nan if gi is None else gi.per_channel[c],
                     "mu": mu[c], "mean_power": mp[c]})
    rows.append({"channel": "mean", "input_inclusivity": ii.mean,
                 "groundtruth_inclusivity": np.nan if gi is None else gi.mean,
                 "mu": float(np.mean(mu)), "mean_power": float(mean_power(relevance)[0])})
    return pd.DataFrame(rows)
