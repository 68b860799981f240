"""Filter sweeps over the authors' default grids: one tidy table (DESIGN section 4)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..lrp.engine import every_block
from ..lrp.filters import Amplify, Clamp, Filter, Pass, format_filter
from .measures import inclusivities, input_mask, mean_power, signal_distribution

__all__ = ["default_grid", "sweep", "measure"]

PASS_GRID = [(0, .05), (0, .1), (0, .2), (0, .4), (0, .6), (.05, 1), (.1, 1), (.2, 1), (.4, 1), (.6, 1)]
CLAMP_GRID = [(0, .05), (0, .1), (0, .2), (0, .4), (0, .6)]
AMPLIFY_GRID = [(0.5, 2), (0.7, 2)]


def default_grid(kinds=("pass", "clamp", "amplify"), scope: str = "sample", signs: str = "joint") -> list[Filter]:
    """The authors' grids: pass (10), clamp (5), amplify (2) settings."""
    out: list[Filter] = []
    if "pass" in kinds:
        out += [Pass(a, b, scope=scope, signs=signs) for a, b in PASS_GRID]
    if "clamp" in kinds:
        out += [Clamp(a, b, scope=scope, signs=signs) for a, b in CLAMP_GRID]
    if "amplify" in kinds:
        out += [Amplify(a, A, scope=scope, signs=signs) for a, A in AMPLIFY_GRID]
    return out


def measure(relevance: np.ndarray, image: np.ndarray, label, modalities, tau_r: float = 0.5,
            tau_x: float = 0.1, signed: bool = False, image_mask=None) -> pd.DataFrame:
    """One row per channel and one 'mean' row: input and ground-truth inclusivity, mu, mean power.

    image_mask: :func:`input_mask` of ``image`` at ``tau_x`` when the caller keeps it (it does not change
    while filters move)."""
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


def sweep(explanation, placement: str = "input", grid: list[Filter] | None = None, tau_r: float = 0.5,
          tau_x: float = 0.1, include_unfiltered: bool = True,
          progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Run every filter of ``grid`` (default: :func:`default_grid`) on an Explanation.

    placement: 'input' (the filter on the final heatmap only; no propagation) or 'blocks' (the filter
    after every block of the network, re-propagating from the kept forward pass). Returns a tidy table
    with columns setting, placement, channel, input_inclusivity, groundtruth_inclusivity, mu, mean_power.
    """
    grid = default_grid() if grid is None else grid
    settings: list[tuple[str, Filter | None]] = [("none", None)] if include_unfiltered else []
    settings += [(format_filter(placement, f).split("@")[0], f) for f in grid]
    image = explanation.input_image
    label = explanation.case.label
    tables = []
    for i, (name, f) in enumerate(settings):
        if f is None:
            R = explanation.relevance
        elif placement == "input":
            R = f(explanation.relevance[None])[0]
        elif placement == "blocks":
            R = explanation.refilter(every_block(explanation._prepared.network, f)).relevance
        else:
            raise ValueError(f"placement must be 'input' or 'blocks', not {placement!r}")
        t = measure(R, image, label, explanation.modalities, tau_r, tau_x)
        t.insert(0, "placement", placement if f is not None else "none")
        t.insert(0, "setting", name)
        tables.append(t)
        if progress is not None:
            progress(i + 1, len(settings))
    return pd.concat(tables, ignore_index=True)

