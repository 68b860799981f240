"""Filter sweeps over the authors' default grids on one Explanation: one tidy table."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ..lrp.blocks import every_block
from ..lrp.filters import Filter, default_grid, format_filter
from ..metrics.table import measure
from ..pipeline import Explanation

__all__ = ["sweep"]


def sweep(explanation: Explanation, placement: str = "input", grid: list[Filter] | None = None, tau_r: float = 0.5,
          tau_x: float = 0.1, include_unfiltered: bool = True,
          progress: Callable[[int, int], None] | None = None, faithfulness: bool = False,
          perturbation_options: dict | None = None, lesions: bool = False) -> pd.DataFrame:
    """Run every filter of a grid on an Explanation: one tidy table.

    The 'none' row is the run's relevance as it is. A sampled run (MC dropout, flips) gives the coefficients of
    the mean map and, after each, '<coefficient>_sd', its spread over the draws.

    Parameters
    ----------
    explanation : Explanation
        The run.
    placement : str
        'input' (the filter on the final heatmap, replacing the run's own input filter as the Inclusivity
        dock's slider does; no propagation) or 'blocks' (the filter after every block and no other filter,
        re-propagated from the kept forward pass).
    grid : list of Filter, optional
        Default :func:`~napari_lrp.lrp.filters.default_grid`, the authors' grids.
    tau_r, tau_x : float
        The coefficients' thresholds.
    include_unfiltered : bool
        Add the 'none' row.
    progress : callable(done, total), optional
        Called per setting.
    faithfulness : bool
        Add morf_auc and lerf_auc of each setting's map (one value per setting, on every channel row).
    perturbation_options : dict, optional
        As :meth:`~napari_lrp.pipeline.result.Explanation.perturbation`.
    lesions : bool
        Also sweep every lesion of the prediction and of the ground truth explained alone (lesion-wise rows, as
        the BraTS and ISLES challenges report lesion-wise metrics): the rows of the run's own target have
        target 'run', a lesion's rows its spec (``component:K``, ``gt-component:K``) with its source, voxels,
        volume_ml and lesion_status (detected / missed, true / false positive).

    Returns
    -------
    pandas.DataFrame
        Columns setting, placement, channel, input_inclusivity, groundtruth_inclusivity, mu, mean_power
        (and the spread, faithfulness and lesion columns when asked).
    """
    if lesions:
        kw = {"placement": placement, "grid": grid, "tau_r": tau_r, "tau_x": tau_x,
              "include_unfiltered": include_unfiltered, "faithfulness": faithfulness,
              "perturbation_options": perturbation_options}
        runs = [(None, "run", explanation)] + list(explanation.lesion_runs())
        tables = []
        for i, (row, spec, exp) in enumerate(runs):
            t = sweep(exp, **kw)
            t.insert(0, "target", spec)
            # 'lesion_status': a cohort table's own 'status' column says whether the case ran
            for j, (col, name) in enumerate((("source", "source"), ("voxels", "voxels"), ("volume_ml", "volume_ml"),
                                             ("status", "lesion_status"))):
                blank = "" if col in ("source", "status") else float("nan")
                t.insert(1 + j, name, blank if row is None else row[col])
            tables.append(t)
            if progress is not None:
                progress(i + 1, len(runs))
        return pd.concat(tables, ignore_index=True)
    if placement not in ("input", "blocks"):
        raise ValueError(f"placement must be 'input' or 'blocks', not {placement!r}")
    grid = default_grid() if grid is None else grid
    settings: list[tuple[str, Filter | None]] = [("none", None)] if include_unfiltered else []
    settings += [(format_filter(placement, f).split("@")[0], f) for f in grid]
    image = explanation.input_image
    label = explanation.ground_truth
    tables = []
    sampled = explanation.samples is not None
    cache: dict = {}
    popts = {"n_blocks": 300, "steps": 6, **(perturbation_options or {}), "cache": cache}
    for i, (name, f) in enumerate(settings):
        if sampled:
            if f is None or placement == "input":
                t = explanation.coefficient_spread(f, tau_r, tau_x)
            else:
                t = explanation.refilter(every_block(explanation.network, f)).coefficient_spread(None, tau_r, tau_x)
        else:
            if f is None:
                R = explanation.relevance
            elif placement == "input":
                R = explanation.heatmap(f)
            else:
                R = explanation.refilter(every_block(explanation.network, f)).relevance
            t = measure(R, image, label, explanation.modalities, tau_r, tau_x)
        if faithfulness:
            if placement == "blocks" and f is not None:
                source = explanation.refilter(every_block(explanation.network, f))
                Rf = source.relevance
            else:
                source, Rf = explanation, (explanation.relevance if f is None else explanation.heatmap(f))
            curves = source.faithfulness(relevance=Rf, **popts)
            t["morf_auc"], t["lerf_auc"] = curves["morf"].auc, curves["lerf"].auc
        t.insert(0, "placement", placement if f is not None else "none")
        t.insert(0, "setting", name)
        tables.append(t)
        if progress is not None:
            progress(i + 1, len(settings))
    return pd.concat(tables, ignore_index=True)
