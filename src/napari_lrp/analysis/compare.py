"""Methods side by side: one case, several methods, one table.

A method is given as a spec string: ``lrp:paper`` (LRP with a preset), ``gradient``, ``gxi``
(gradient x input), ``ig`` or ``ig:32`` (integrated gradients, n_steps), ``sg`` or ``sg:20`` (SmoothGrad,
nt_samples), ``gbp`` (guided backpropagation), ``gradcam:encoders.3`` (Grad-CAM at a layer), ``occlusion`` or
``occlusion:6x4x8x8`` (the sliding window, C x Z x Y x X), or ``name:key=value,key=value`` for any option.
The table: method, seconds, input and ground-truth inclusivity (mean over channels), MoRF and LeRF AUC of
region perturbation (lower MoRF and higher LeRF: more faithful), with a 'random' row (blocks flipped in a
seeded random order), and optionally the signed Spearman similarity to an untrained copy's map (sanity).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from ..io.atomic import replacing, replacing_folder
from ..io.case import Case
from ..models.card import Model
from ..pipeline import Explanation, explain
from ..pipeline.attribution import METHODS
from .sanity import map_similarity, randomised, weighted_layers

__all__ = ["ALIASES", "compare", "parse_method", "save_comparison", "split_methods"]

ALIASES = {"ig": "integrated_gradients", "sg": "smoothgrad", "gxi": "gradient_x_input", "gbp": "guided_backprop"}
_SHORT = {"lrp": "preset", "gradcam": "layer", "integrated_gradients": "n_steps", "smoothgrad": "nt_samples",
          "occlusion": "sliding_window_shapes"}


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "x" in text and all(p.isdigit() for p in text.split("x")):
        return tuple(int(p) for p in text.split("x"))
    return text


def parse_method(spec: str) -> tuple[str, dict]:
    """(method name, options) of one method spec.

    Parameters
    ----------
    spec : str
        For example 'lrp:paper', 'ig:32', 'gradcam:encoders.3', 'occlusion:6x4x8x8' or
        'ig:n_steps=16,baselines=blurred'.

    Returns
    -------
    tuple
        (name of ``explain``'s ``method=``, its options as keywords).
    """
    name, _, rest = spec.strip().partition(":")
    name = ALIASES.get(name, name)
    if name != "lrp" and name not in METHODS:
        raise ValueError(f"unknown method {name!r} in {spec!r}; choose lrp, {', '.join(METHODS)} "
                         f"(short: {', '.join(f'{k}={v}' for k, v in ALIASES.items())})")
    options: dict = {}
    if rest and "=" in rest:
        for part in rest.split(","):
            key, _, value = part.partition("=")
            options[key.strip()] = _value(value.strip())
    elif rest:
        if name not in _SHORT:
            raise ValueError(f"{spec!r}: {name} takes options as key=value")
        value = _value(rest)
        options[_SHORT[name]] = value if name != "occlusion" or isinstance(value, tuple) else (value,)
    return name, options


def split_methods(text: str) -> list[str]:
    """Method specs separated by commas; a comma inside key=value options belongs to its method.

    Parameters
    ----------
    text : str
        For example 'lrp:paper,gradient,ig:n_steps=16,baselines=blurred'.

    Returns
    -------
    list of str
        One spec per method.
    """
    out: list[str] = []
    for part in text.split(","):
        if out and "=" in part and ":" not in part:
            out[-1] += "," + part
        elif part.strip():
            out.append(part.strip())
    if not out:
        raise ValueError(f"methods {text!r}: no method named; give comma-separated specs such as lrp:paper,gradient")
    return out


def _label(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", spec.strip())


def compare(model, case: Case, methods: Sequence[str], target="region", perturbation: bool = True,
            n_blocks: int = 500, steps: int = 12, fill: str = "mean", sanity: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, dict[str, Explanation]]:
    """Run every method spec on a case and tabulate them side by side.

    Parameters
    ----------
    model : Model, torch.nn.Module or path
        As for ``explain``.
    case : Case
        The case.
    methods : sequence of str
        Method specs (:func:`parse_method`).
    target : str, mask or voxel
        As for ``explain``.
    perturbation : bool
        Add MoRF and LeRF AUCs (and one row of a random order).
    n_blocks, steps, fill
        Region perturbation's options (``region_perturbation``).
    sanity : bool
        Add each map's signed Spearman similarity to an untrained copy's map.
    progress : callable(done, total), optional
        Called per method.

    Returns
    -------
    tuple
        (table: one row per method with seconds, inclusivities, AUCs; {spec: Explanation}).
    """
    results: dict[str, Explanation] = {}
    rows = []
    random_auc = None
    for i, spec in enumerate(methods):
        name, options = parse_method(spec)
        t0 = time.perf_counter()
        exp = explain(model, case, method=name, target=target, **options)
        seconds = time.perf_counter() - t0
        results[spec] = exp
        mean = exp.coefficients().iloc[-1]
        row = {"method": spec, "seconds": seconds, "input_inclusivity": mean.input_inclusivity,
               "groundtruth_inclusivity": mean.groundtruth_inclusivity}
        if perturbation:
            kw = {"n_blocks": n_blocks, "steps": steps, "fill": fill}
            curves = exp.faithfulness(("morf", "lerf") + (("random",) if random_auc is None else ()), **kw)
            row["morf_auc"], row["lerf_auc"] = curves["morf"].auc, curves["lerf"].auc
            if random_auc is None:
                random_auc = curves["random"].auc
        if sanity:
            names = weighted_layers(exp.model.network)
            untrained = Model(network=randomised(exp.model.network, names).eval(), card=exp.model.card,
                              device=exp.model.device)
            region = exp.target_region()
            other = explain(untrained, case, method=name, target=region if region is not None else "output",
                            **options)
            row["untrained_spearman_signed"] = map_similarity(exp.relevance, other.relevance)["spearman_signed"]
        rows.append(row)
        if progress is not None:
            progress(i + 1, len(methods))
    if perturbation and random_auc is not None:
        rows.append({"method": "random", "morf_auc": random_auc, "lerf_auc": random_auc})
    return pd.DataFrame(rows), results


def save_comparison(table: pd.DataFrame, results: dict[str, Explanation], folder: str | os.PathLike) -> Path:
    """Write a comparison into a folder as one unit: table.csv and one folder per method.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`compare`'s table.
    results : dict[str, Explanation]
        :func:`compare`'s runs (each written with ``Explanation.save``).
    folder : str or os.PathLike
        The output folder.

    Returns
    -------
    Path
        The folder written.
    """
    target = Path(folder)
    with replacing_folder(target) as tmp:
        for spec, exp in results.items():
            exp.save(tmp / _label(spec))
        with replacing(tmp / "table.csv") as csv:
            table.to_csv(csv, index=False)
    return target / "table.csv"
