"""LRP hyper-parameter search (the hyper-parameter thesis among the seeds): a grid over the gamma
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

import pandas as pd
from torch import nn

from ..io.case import Case
from ..lrp.blocks import block_layers
from ..lrp.rules import Gamma
from ..pipeline import Explanation, explain

__all__ = ["SearchResult", "group_layers", "lrp_search"]


def group_layers(network: nn.Module, groups: Sequence[str] = ("encoder", "decoder")) -> dict[str, list[str]]:
    """{group: names of the convolutions inside its blocks} for groups 'encoder', 'decoder' (or 'all').

    Parameters
    ----------
    network : torch.nn.Module
        The network.
    groups : sequence of str
        Group names of :func:`~napari_lrp.lrp.blocks.block_names`.

    Returns
    -------
    dict[str, list[str]]
    """
    return {g: block_layers(network, g) for g in groups}


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
    """Score every combination of gammas over the layer groups (len(gammas) ** len(groups) points).

    Rules are swapped on one kept forward pass; each point is scored by MoRF and LeRF region perturbation
    (faithfulness = LeRF AUC - MoRF AUC) and the inclusivities.

    Parameters
    ----------
    model, case
        The model (a Model, a network or a path) and the case, as for ``explain``.
    gammas : sequence of float
        The gamma values tried in every group.
    groups : sequence of str
        'encoder', 'decoder' or 'all' (see ``lrp.blocks.block_layers``).
    epsilon : float
        The stabiliser of the gamma rules.
    target : str, mask or voxel
        As for ``explain``.
    n_blocks, steps, fill
        Region perturbation's options.
    progress : callable(done, total), optional
        Called per point.

    Returns
    -------
    SearchResult
        The table of every point, the best one, its rules and its Explanation.
    """
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
        curves = exp.faithfulness(**kw)
        morf, lerf = curves["morf"].auc, curves["lerf"].auc
        rows.append({**{f"gamma_{k}": v for k, v in g.items()}, "morf_auc": morf, "lerf_auc": lerf,
                     "faithfulness": lerf - morf, "input_inclusivity": mean.input_inclusivity,
                     "groundtruth_inclusivity": mean.groundtruth_inclusivity})
        if progress is not None:
            progress(i + 1, len(grid))
    table = pd.DataFrame(rows)
    best = table.loc[int(table.faithfulness.idxmax())].to_dict()
    best_rules = _rules(layers, {k: best[f"gamma_{k}"] for k in groups}, epsilon)
    return SearchResult(table, best, best_rules, base.with_rules(best_rules))
