"""The coefficient table of one relevance map: per channel and mean, the measures of docs/method.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .measures import inclusivities, input_mask, mean_power, signal_distribution

__all__ = ["measure"]


def measure(relevance: np.ndarray, image: np.ndarray, label, modalities, tau_r: float = 0.5,
            tau_x: float = 0.1, signed: bool = False, image_mask=None) -> pd.DataFrame:
    """One row per channel and one 'mean' row: input and ground-truth inclusivity, mu, mean power.

    relevance and image (C, Z, Y, X), label (Z, Y, X) or None; image_mask: :func:`input_mask` of
    ``image`` at ``tau_x`` when the caller keeps it (it does not change while filters move)."""
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
