"""The scorecard: every metric family of explanation evaluation, for any method, on one case or a cohort.

``evaluate`` takes one or more explanations of a case and returns one tidy table, a row per method and
metric: the family, the value, which direction is better and the settings it was measured under (the
imputation of a perturbation, the noise and number of samples, the class of the random-logit test). A metric
that cannot be measured on a run (no ground truth, a model with its own pipeline, no draws) gives NaN with
the reason in ``settings``; a metric asked for by name that does not exist is refused.

Families (as Quantus 0.6 groups them; references in :mod:`napari_lrp.metrics`): localisation against the
ground truth, faithfulness (MoRF/LeRF with the mean fill and with ROAD's noisy linear imputation, the
faithfulness correlation), randomisation (the random-logit test of Sixt et al. 2020; the map of a fully
re-initialised model, Adebayo et al. 2018), robustness (max- and average sensitivity from one set of noisy
runs), complexity, repeatability (across the run's draws or flips, or the folds of an ensemble) and the
ledger's conservation. Passes are shared: one set of noisy runs for both sensitivities, one cache for the
curves of one fill.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..io.case import Case
from ..metrics.complexity import complexity, sparseness
from ..metrics.localisation import (
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
    top_k_intersection,
)
from ..metrics.robustness import sensitivity
from ..metrics.similarity import repeatability, spearman
from ..models.card import Model
from ..pipeline import Explanation, explain_again
from .sanity import randomised, weighted_layers

__all__ = ["FAMILIES", "METRICS", "Metric", "evaluate", "method_label", "selected_metrics", "summarise"]


@dataclass(frozen=True)
class Metric:
    """A scorecard metric: its family, which direction is better, what it says (a tooltip) and its source."""

    family: str
    better: str
    description: str
    reference: str


FAMILIES = ("localisation", "faithfulness", "randomisation", "robustness", "complexity", "repeatability",
            "conservation")

# One entry per metric: "name: family, direction is better; reference", then its description indented (the
# dock's tooltip). Read into METRICS below.
_TABLE = """
relevance_mass_accuracy: localisation, higher is better; Arras et al. 2022
    share of the positive relevance on the ground truth (1: all of it)
relevance_rank_accuracy: localisation, higher is better; Arras et al. 2022
    share of the top voxels (as many as the ground truth has) on the ground truth
pointing_game: localisation, higher is better; Zhang et al. 2018
    1 when the map's maximum lies on the ground truth (within the tolerance)
top_k_intersection: localisation, higher is better; Theiner et al. 2021
    share of the k top voxels on the ground truth
roc_auc: localisation, higher is better; Fawcett 2006
    how well |R| separates the ground truth from the rest (0.5: chance, 1: perfect)
morf_auc: faithfulness, lower is better; Samek et al. 2017
    area under the score as the most relevant blocks are removed first: a faithful map drops it fast
lerf_auc: faithfulness, higher is better; Samek et al. 2017
    area under the score as the least relevant blocks are removed first: a faithful map keeps it
road_morf_auc: faithfulness, lower is better; Rong et al. 2022
    MoRF with ROAD's noisy linear imputation (no shape of the removed region leaks)
road_lerf_auc: faithfulness, higher is better; Rong et al. 2022
    LeRF with ROAD's noisy linear imputation
faithfulness_correlation: faithfulness, higher is better; Bhatt et al. 2020
    correlation of the relevance of random block subsets with the score's drop when they are removed (1:
    exact)
random_logit: randomisation, lower is better; Sixt et al. 2020
    signed Spearman correlation with the map of another class (1: the map ignores the class)
model_randomisation: randomisation, lower is better; Adebayo et al. 2018
    Spearman correlation of |R| with the map of a fully re-initialised model (1: the map ignores the weights)
max_sensitivity: robustness, lower is better; Yeh et al. 2019
    largest relative change of the map under small input noise
avg_sensitivity: robustness, lower is better; Yeh et al. 2019
    mean relative change of the map under small input noise
sparseness: complexity, higher is better; Chalasani et al. 2020
    Gini index of |R| (0: flat, 1: one voxel)
entropy: complexity, lower is better; Bhatt et al. 2020
    Bhatt's complexity: entropy of the normalised |R| (nats; lower: fewer voxels carry it)
repeatability_spearman: repeatability, higher is better; Arun et al. 2021
    mean Spearman correlation of |R| between the run's draws, flips or folds
repeatability_ssim: repeatability, higher is better; Arun et al. 2021
    mean SSIM of the central slice between draws, flips or folds
repeatability_top_overlap: repeatability, higher is better; Arun et al. 2021
    mean overlap of the top 1 % voxels between draws, flips or folds
unaccounted: conservation, nearer zero is better; Bach et al. 2015
    |relevance neither passed on nor absorbed| / |start| (LRP's ledger; 0: conserved)
"""


def _read_table(text: str) -> dict[str, Metric]:
    entries: dict[str, Metric] = {}
    for line in text.strip().splitlines():
        if not line.startswith(" "):
            name, _, rest = line.partition(": ")
            family, _, rest = rest.partition(", ")
            better, _, reference = rest.partition(" is better; ")
            entries[name] = Metric(family, better, "", reference)
        else:
            last = next(reversed(entries))
            entries[last] = dataclasses.replace(entries[last], description=(entries[last].description + " "
                                                                            + line.strip()).strip())
    return entries


#: the scorecard's metrics in table order
METRICS = _read_table(_TABLE)


def method_label(exp: Explanation) -> str:
    """A run's method as the compare specs write it.

    Parameters
    ----------
    exp : Explanation
        A run of any method; its ``method``, ``preset`` and ``method_options`` are read.

    Returns
    -------
    str
        'lrp:<preset>' for LRP, else the method's name with its options as key=value.
    """
    if exp.method == "lrp":
        return f"lrp:{exp.preset}"
    options = ",".join(f"{k}={v}" for k, v in sorted(exp.method_options.items()))
    return f"{exp.method}:{options}" if options else exp.method


def selected_metrics(metrics) -> list[str]:
    """The metric names a selection means.

    Parameters
    ----------
    metrics : str or sequence of str
        'all', family names (``FAMILIES``) or metric names (``METRICS``), mixed; a family stands for all its
        metrics in table order.

    Returns
    -------
    list of str
        Metric names in the order given, each once.

    Raises
    ------
    ValueError
        For a name that is neither, listing the choices.
    """
    if isinstance(metrics, str):
        metrics = list(METRICS) if metrics == "all" else [metrics]
    chosen: list[str] = []
    for name in metrics:
        if name in METRICS:
            chosen.append(name)
        elif name in FAMILIES:
            chosen += [m for m, spec in METRICS.items() if spec.family == name]
        else:
            raise ValueError(f"metric {name!r} is not on the scorecard; choose 'all', a family "
                             f"({', '.join(FAMILIES)}) or a metric ({', '.join(METRICS)})")
    return list(dict.fromkeys(chosen))


@dataclass(frozen=True)
class _Options:
    noise: float
    n_noise: int
    n_runs: int
    subset: float
    n_blocks: int
    steps: int
    tolerance_mm: float
    top_k: int
    other_class: int | None
    folds: tuple
    seed: int


def _localisation(exp: Explanation, o: _Options) -> dict:
    g = exp.ground_truth  # of the run's class (a region model's region)
    if g is None:
        return {name: (np.nan, "no ground truth in the case") for name in METRICS
                if METRICS[name].family == "localisation"}
    R = exp.relevance
    k = min(o.top_k, g.size)
    return {
        "relevance_mass_accuracy": (relevance_mass_accuracy(R, g), "positive relevance"),
        "relevance_rank_accuracy": (relevance_rank_accuracy(R, g), "positive relevance"),
        "pointing_game": (pointing_game(R, g, exp.case.grid.spacing, o.tolerance_mm),
                          f"positive relevance, tolerance {o.tolerance_mm:g} mm"),
        "top_k_intersection": (top_k_intersection(R, g, k), f"positive relevance, k={k}"),
        "roc_auc": (roc_auc(R, g), "|R|"),
    }


def _faithfulness(exp: Explanation, o: _Options, chosen: list[str]) -> dict:
    if exp.model.pipeline is not None:  # perturbations run on the model's input grid
        return {name: (np.nan, "runs on the model grid: not for a model with its own pipeline") for name in chosen
                if METRICS[name].family == "faithfulness"}
    out = {}
    curve_kw = {"n_blocks": o.n_blocks, "steps": o.steps, "seed": o.seed}
    for prefix, fill in (("", "mean"), ("road_", "noisy_linear")):
        orders = [order for order in ("morf", "lerf") if f"{prefix}{order}_auc" in chosen]
        if orders:
            curves = exp.faithfulness(orders, fill=fill, cache={}, **curve_kw)
            for order, curve in curves.items():
                out[f"{prefix}{order}_auc"] = (curve.auc, f"imputation={fill}, blocks of {curve.block}, "
                                                          f"{len(curve.fractions)} points")
    if "faithfulness_correlation" in chosen:
        value = exp.faithfulness_correlation(n_runs=o.n_runs, subset=o.subset, n_blocks=o.n_blocks, rng=o.seed)
        out["faithfulness_correlation"] = (value, f"imputation=mean, {o.n_runs} subsets of {o.subset:g} of "
                                                  f"about {o.n_blocks} blocks")
    return out


def _other_class(exp: Explanation, o: _Options) -> int:
    if o.other_class is not None:
        if o.other_class == exp.target_class:
            raise ValueError(f"other_class={o.other_class} is the run's own class: choose another")
        return o.other_class
    return 0 if exp.target_class != 0 else 1


def _randomisation(exp: Explanation, o: _Options, chosen: list[str], progress) -> dict:
    out = {}
    region = exp.target_region()
    target = region if region is not None else "output"
    if "random_logit" in chosen:
        cls = _other_class(exp, o)
        other = explain_again(exp, target=target, target_class=cls)
        names = exp.model.card.classes
        label = names[cls] if cls < len(names) else str(cls)
        out["random_logit"] = (spearman(exp.relevance, other.relevance, signed=True),
                               f"class {cls} ({label}) on the run's region, signed maps")
        progress()
    if "model_randomisation" in chosen:
        net = exp.model.network
        everything = weighted_layers(net)
        untrained = Model(network=randomised(net, everything, o.seed).eval(), card=exp.model.card,
                          device=exp.model.device, pipeline=exp.model.pipeline)
        other = explain_again(exp, model=untrained, target=target)
        out["model_randomisation"] = (spearman(exp.relevance, other.relevance, signed=False),
                                      f"all {len(everything)} layers with weights re-initialised (seed {o.seed})")
        progress()
    return out


def _robustness(exp: Explanation, o: _Options, progress) -> dict:
    if not np.abs(exp.relevance).max() > 0:
        why = "the map is zero everywhere (an empty target region?): no relative change is defined"
        return {"max_sensitivity": (np.nan, why), "avg_sensitivity": (np.nan, why)}
    region = exp.target_region()
    target = region if region is not None else "output"
    case = exp.case

    def rerun(noisy: np.ndarray) -> np.ndarray:
        other = explain_again(exp, case=dataclasses.replace(case, image=noisy.astype(np.float32)), target=target)
        progress()
        return other.relevance

    s = sensitivity(rerun, case.image, exp.relevance, o.noise, o.n_noise, o.seed)
    where = f"Gaussian noise of sd {o.noise:g} x each channel's sd, {o.n_noise} samples (seed {o.seed})"
    return {"max_sensitivity": (s.max_sensitivity, where), "avg_sensitivity": (s.avg_sensitivity, where)}


def _repeatability(exp: Explanation, o: _Options, progress) -> dict:
    if exp.samples is not None and len(exp.samples) >= 2:
        maps, source = list(exp.samples), f"{len(exp.samples)} draws ({_draws(exp.sampling)})"
    elif o.folds:
        maps = []
        for fold in o.folds:
            maps.append(explain_again(exp, model=fold, target=exp.target_region()).relevance)
            progress()
        source = f"{len(maps)} models (folds)"
    else:
        reason = "no draws: run with mc_samples or tta='flips', or give folds"
        return {name: (np.nan, reason) for name in METRICS if METRICS[name].family == "repeatability"}
    r = repeatability(maps)
    return {"repeatability_spearman": (r["spearman"], source), "repeatability_ssim": (r["ssim"], source),
            "repeatability_top_overlap": (r["top_overlap"], source)}


def _draws(sampling: Mapping | None) -> str:
    if not sampling:
        return "draws"
    keys = ("mc_samples", "dropout", "tta", "seed")
    return ", ".join(f"{k}={sampling[k]}" for k in keys if sampling.get(k) not in (None, 1) or k == "seed")


def _score(exp: Explanation, chosen: list[str], o: _Options, progress) -> dict:
    """{metric: (value, settings)} of one run."""
    families = {METRICS[name].family for name in chosen}
    out: dict = {}
    if "localisation" in families:
        out.update(_localisation(exp, o))
    if "faithfulness" in families:
        out.update(_faithfulness(exp, o, chosen))
    if "randomisation" in families:
        out.update(_randomisation(exp, o, chosen, progress))
    if "robustness" in families:
        out.update(_robustness(exp, o, progress))
    if "complexity" in families:
        out["sparseness"] = (sparseness(exp.relevance), "|R| over channels and voxels")
        out["entropy"] = (complexity(exp.relevance), "|R| over channels and voxels")
    if "repeatability" in families:
        out.update(_repeatability(exp, o, progress))
    if "unaccounted" in chosen:
        out["unaccounted"] = ((exp.ledger.unaccounted, "the run's ledger") if exp.method == "lrp"
                              else (np.nan, "LRP only: other methods keep no ledger"))
    return {name: out[name] for name in chosen}


def _runs_of(explanations) -> list[tuple[str, Explanation]]:
    if isinstance(explanations, Explanation):
        explanations = [explanations]
    pairs = list(explanations.items()) if isinstance(explanations, Mapping) else list(enumerate(explanations))
    for key, exp in pairs:
        if not isinstance(exp, Explanation):
            raise TypeError(f"evaluate takes Explanations (napari_lrp.explain's results); item {key!r} is a "
                            f"{type(exp).__name__}")
    pairs = [(str(k) if isinstance(explanations, Mapping) else method_label(e), e) for k, e in pairs]
    if not pairs:
        raise ValueError("evaluate: no explanation given")
    return pairs


def _passes(chosen: list[str], o: _Options, n_methods: int) -> int:
    """The runs the scorecard makes beyond the given ones (for progress)."""
    per = sum(name in chosen for name in ("random_logit", "model_randomisation"))
    per += o.n_noise if {"max_sensitivity", "avg_sensitivity"} & set(chosen) else 0
    per += len(o.folds) if any(METRICS[n].family == "repeatability" for n in chosen) else 0
    return per * n_methods


def evaluate(explanations, case: Case | None = None, model: Model | None = None, metrics="all",
             noise: float = 0.02, n_noise: int = 5, n_runs: int = 50, subset: float = 0.1, n_blocks: int = 500,
             steps: int = 12, tolerance_mm: float = 0.0, top_k: int = 1000, other_class: int | None = None,
             folds: Sequence[Model] = (), seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The scorecard of one or more explanations of one case.

    Parameters
    ----------
    explanations : Explanation, sequence of Explanation or dict[str, Explanation]
        The runs (any method of ``explain``), labelled by :func:`method_label` or the dict's keys.
    case : Case, optional
        The case they explain (checked against the runs'; default theirs).
    model : Model, optional
        The model they explain (checked against the runs'; default theirs).
    metrics : str or sequence of str
        'all', family names (``FAMILIES``) or metric names (``METRICS``).
    noise : float
        Robustness: the noise's sd as a share of each channel's sd.
    n_noise : int
        Robustness: noisy runs per method (shared by both sensitivities).
    n_runs : int
        Faithfulness correlation: random subsets (one forward pass each).
    subset : float
        Faithfulness correlation: the share of blocks in a subset.
    n_blocks : int
        Faithfulness: about how many blocks the input is cut into.
    steps : int
        Faithfulness: about how many points per MoRF/LeRF curve (one forward pass each).
    tolerance_mm : float
        Localisation: the pointing game's tolerance.
    top_k : int
        Localisation: k of the top-k intersection (capped at the volume).
    other_class : int, optional
        Randomisation: the class of the random-logit test (default background, or class 1 for a background run).
    folds : sequence of Model
        Repeatability: the models of an ensemble (e.g. an nnU-Net folder loaded with ``fold=0``, ``fold=1``, ...),
        used when a run has no draws.
    seed : int
        Of every random choice (subsets, noise, re-initialised weights).
    progress : callable(done, total), optional
        Called after each extra run.

    Returns
    -------
    pandas.DataFrame
        One row per method and metric: case, method, family, metric, value, better ('higher', 'lower' or
        'nearer zero'), settings.
    """
    chosen = selected_metrics(metrics)
    pairs = _runs_of(explanations)
    for label, exp in pairs:
        if case is not None and exp.case is not case and exp.case.name != case.name:
            raise ValueError(f"{label} explains case {exp.case.name}, not the case given ({case.name})")
        if model is not None and exp.model is not model and exp.model.sha256 != model.sha256:
            raise ValueError(f"{label} explains model {exp.model.path}, not the model given ({model.path})")
    o = _Options(noise, n_noise, n_runs, subset, n_blocks, steps, tolerance_mm, top_k, other_class, tuple(folds),
                 seed)
    total, done = _passes(chosen, o, len(pairs)), [0]

    def step():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    rows = []
    for label, exp in pairs:
        for name, (value, settings) in _score(exp, chosen, o, step).items():
            spec = METRICS[name]
            rows.append({"case": exp.case.name, "method": label, "family": spec.family, "metric": name,
                         "value": float(value), "better": spec.better, "settings": settings})
    return pd.DataFrame(rows, columns=["case", "method", "family", "metric", "value", "better", "settings"])


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """A cohort's scorecard: mean and spread per method and metric over the cases.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`evaluate`'s rows of several cases (concatenated).

    Returns
    -------
    pandas.DataFrame
        method, family, metric, better, mean, sd (sample sd over cases), n (cases with a value), settings.
    """
    keys = ["method", "family", "metric", "better"]
    grouped = table.groupby(keys, sort=False)
    out = grouped["value"].agg(mean="mean", sd="std", n="count").reset_index()
    out["settings"] = grouped["settings"].agg(lambda s: "; ".join(dict.fromkeys(s))).values
    return out
