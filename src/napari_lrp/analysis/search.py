"""LRP hyper-parameter search (#17 item 4, the hyper-parameter thesis among the seeds): a grid over the gamma
of the gamma rule per layer group (encoder and decoder blocks), each point scored by region perturbation
(MoRF and LeRF AUC) and the inclusivity coefficients, shown as contour plots like the thesis' Fig. 4.1/4.2.

The search starts from one ``epsilon-gamma-box`` run (gamma on every convolution, z-box on the first layer)
and changes only the gammas of the layers in the groups, from the kept forward pass (no forward pass per
point: ``Explanation.with_rules``); each point costs one relevance pass plus the perturbation's forward
passes. ``faithfulness`` = LeRF AUC - MoRF AUC (higher: the relevance orders the evidence better) picks the
best point; ``SearchResult.best_rules`` applies it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from ..pipeline import Explanation, explain
from ..io.case import Case
from ..lrp.blocks import block_names
from ..lrp.rules import Gamma
from ..lrp.types import LINEAR_TYPES

__all__ = ["SearchResult", "group_layers", "lrp_search", "plot_search", "search_cohort"]


def group_layers(network: nn.Module, groups: Sequence[str] = ("encoder", "decoder")) -> dict[str, list[str]]:
    """{group: names of the convolutions inside its blocks} for groups 'encoder', 'decoder' (or 'all')."""
    modules = dict(network.named_modules())
    out = {}
    for g in groups:
        names = []
        for b in block_names(network, g):
            names += [f"{b}.{n}" if n else b for n, m in modules[b].named_modules() if isinstance(m, LINEAR_TYPES)]
        out[g] = names
    return out


@dataclass
class SearchResult:
    """table: one row per grid point (gamma_<group>..., morf_auc, lerf_auc, faithfulness, input and
    ground-truth inclusivity); best: that row of the best point; best_rules: its rules for ``explain(rules=)``
    or ``Explanation.with_rules``; best_explanation: the run at the best point."""

    table: pd.DataFrame
    best: dict
    best_rules: dict
    best_explanation: Explanation


def _rules(layers: dict[str, list[str]], gammas: dict[str, float], epsilon: float) -> dict:
    return {name: Gamma(gammas[g], epsilon) for g, names in layers.items() for name in names}


def lrp_search(model, case: Case, gammas: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0),
               groups: Sequence[str] = ("encoder", "decoder"), epsilon: float = 1e-6, target="region",
               n_blocks: int = 300, steps: int = 6, fill: str = "mean",
               progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Score every combination of ``gammas`` over the layer ``groups`` (len(gammas) ** len(groups) points)."""
    base = explain(model, case, preset="epsilon-gamma-box", target=target)
    # only layers that have the gamma rule (the first layer keeps its z-box)
    gamma_layers = {n for n, r in base.layer_rules.items() if isinstance(r, Gamma)}
    layers = {g: [n for n in names if n in gamma_layers] for g, names in group_layers(base.network, groups).items()}
    rows = []
    bad = [g for g in gammas if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= float(g) < 1e6]
    if bad or not len(gammas):
        raise ValueError(f"gammas {list(gammas)!r}: each gamma must be a finite number >= 0 (gamma weighs the "
                         "positive contributions), and at least one is needed")
    grid = list(itertools.product(gammas, repeat=len(groups)))
    # one score cache for every point: a set of flipped blocks that several points share is scored once
    kw = {"n_blocks": n_blocks, "steps": steps, "fill": fill, "cache": {}}
    for i, point in enumerate(grid):
        g = dict(zip(groups, point))
        exp = base.with_rules(_rules(layers, g, epsilon))
        mean = exp.coefficients().iloc[-1]
        morf = exp.perturbation("morf", **kw).auc
        lerf = exp.perturbation("lerf", **kw).auc
        rows.append({**{f"gamma_{k}": v for k, v in g.items()}, "morf_auc": morf, "lerf_auc": lerf,
                     "faithfulness": lerf - morf, "input_inclusivity": mean.input_inclusivity,
                     "groundtruth_inclusivity": mean.groundtruth_inclusivity})
        if progress is not None:
            progress(i + 1, len(grid))
    table = pd.DataFrame(rows)
    best = table.loc[int(table.faithfulness.idxmax())].to_dict()
    best_rules = _rules(layers, {k: best[f"gamma_{k}"] for k in groups}, epsilon)
    return SearchResult(table, best, best_rules, base.with_rules(best_rules))


def plot_search(table: pd.DataFrame, fig=None, columns=("morf_auc", "lerf_auc", "groundtruth_inclusivity")):
    """Contour plots over the first two gamma columns (the thesis' Fig. 4.1/4.2), one panel per column, the
    best point (highest faithfulness) marked."""
    import matplotlib.pyplot as plt

    gcols = [c for c in table.columns if c.startswith("gamma_")][:2]
    if len(gcols) != 2:
        raise ValueError("plot_search needs a search over two groups")
    fig = fig or plt.figure(figsize=(4.2 * len(columns), 3.8))
    fig.clear()
    xs, ys = np.unique(table[gcols[0]]), np.unique(table[gcols[1]])
    best = table.loc[int(table.faithfulness.idxmax())]
    for k, col in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        Z = table.pivot(index=gcols[1], columns=gcols[0], values=col).loc[ys, xs].to_numpy()
        cs = ax.contourf(xs, ys, Z, levels=12, cmap="viridis")
        fig.colorbar(cs, ax=ax)
        ax.plot(best[gcols[0]], best[gcols[1]], "r*", markersize=12)
        ax.set_xlabel(f"gamma, {gcols[0][6:]} blocks")
        ax.set_ylabel(f"gamma, {gcols[1][6:]} blocks")
        ax.set_title(col.replace("_", " "))
    fig.tight_layout()
    return fig


def search_cohort(cohort, model, out, gammas: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0),
                  groups: Sequence[str] = ("encoder", "decoder"), target="region", n_blocks: int = 300,
                  steps: int = 6, workers: int | None = 0, scheduler: str | None = None,
                  device: str = "cpu") -> pd.DataFrame:
    """:func:`lrp_search` on every case of ``cohort`` (serially with ``workers=0``, else on dask.distributed
    like sweeps); writes ``cases/<case>.search.csv`` per case, ``table.csv`` (all points of all cases) and
    ``mean.csv`` (the points averaged over the cases, best first), and returns the mean table."""
    import os
    from pathlib import Path

    from ..batch.cohort import _case_name, case_folders
    from ..io.atomic import replacing

    out = Path(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    cases = case_folders(cohort)
    kw = dict(model_path=str(model), out_dir=str(out), gammas=tuple(gammas), groups=tuple(groups), target=target,
              n_blocks=n_blocks, steps=steps, device=device)
    if workers == 0 and scheduler is None:
        for c in cases:
            _search_case(str(c), **kw)
    else:
        from dask.distributed import Client, LocalCluster

        cluster = None if scheduler else LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                                       processes=True, dashboard_address=None)
        client = Client(scheduler or cluster)
        try:
            client.gather([client.submit(_search_case, str(c), pure=False, **kw) for c in cases])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    tables = [pd.read_csv(out / "cases" / f"{_case_name(c)}.search.csv") for c in cases]
    table = pd.concat(tables, ignore_index=True)
    gcols = [f"gamma_{g}" for g in groups]
    mean = table.drop(columns=["case"]).groupby(gcols, as_index=False).mean()
    mean = mean.sort_values("faithfulness", ascending=False, ignore_index=True)
    for name, t in (("table.csv", table), ("mean.csv", mean)):
        with replacing(out / name) as tmp:
            t.to_csv(tmp, index=False)
    return mean


def _search_case(case_dir: str, model_path: str, out_dir: str, gammas, groups, target, n_blocks, steps, device):
    from pathlib import Path

    from ..batch.cohort import _case_name, _model
    from ..io import load_case
    from ..io.atomic import replacing

    name = _case_name(case_dir)
    res = lrp_search(_model(model_path, device), load_case(case_dir), gammas=gammas, groups=groups, target=target,
                     n_blocks=n_blocks, steps=steps)
    table = res.table.copy()
    table.insert(0, "case", name)
    with replacing(Path(out_dir) / "cases" / f"{name}.search.csv") as tmp:
        table.to_csv(tmp, index=False)
    return name
