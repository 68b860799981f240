"""The scorecard of a cohort: every case runs every method and is scored (``napari_lrp.evaluate``), on
dask.distributed, resumable like a sweep (each case a task of :func:`~napari_lrp.batch.cohort.sweep_cohort`;
its rows are reused while the model and these settings, the methods and metrics included, are unchanged).

The folder it writes: ``cases/<case>.csv`` (one scorecard per case), ``table.csv`` (all of them),
``scorecard.csv`` (mean, sd and number of cases per method and metric) and ``scorecard.png`` (the figure of
normalised ranks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..analysis.compare import parse_method
from ..analysis.scorecard import evaluate, selected_metrics, summarise
from ..io.atomic import replacing
from ..metrics.plots import scorecard_figure
from ..pipeline import explain
from .cohort import cached_model, case_task, sweep_cohort

__all__ = ["evaluate_cohort", "run_scorecard_case", "scorecard_of_case", "write_scorecard"]


def scorecard_of_case(model, case, methods: Sequence[str], target="region", metrics="all",
                      **options) -> pd.DataFrame:
    """Every method spec run on one case, then scored.

    Parameters
    ----------
    model : Model
        The model.
    case : Case
        The case.
    methods : sequence of str
        Method specs as ``napari-lrp compare`` takes them (``lrp:paper``, ``gxi``, ``ig:16``, ...).
    target : str
        As for :func:`napari_lrp.explain`.
    metrics : str or sequence of str
        As for :func:`napari_lrp.evaluate`.
    **options
        Further options of :func:`napari_lrp.evaluate` (noise, n_noise, n_runs, ...).

    Returns
    -------
    pandas.DataFrame
        The scorecard, the methods labelled by their specs.
    """
    selected_metrics(metrics)  # an unknown metric is refused before any method runs
    for spec in methods:
        parse_method(spec)
    runs = {}
    for spec in methods:
        name, method_options = parse_method(spec)
        runs[spec] = explain(model, case, method=name, target=target, **method_options)
    return evaluate(runs, metrics=metrics, **options)


def run_scorecard_case(case_dir: str, model_path: str, out_dir: str, preset: str = "paper",
                       placement: str = "input", device: str = "cpu", settings: dict | None = None,
                       model_sha256: str = "") -> dict:
    """One case's scorecard (a task of ``sweep_cohort``): cases/<name>.csv or cases/<name>.failed.json.

    Parameters
    ----------
    case_dir, model_path, out_dir, preset, placement, device, settings, model_sha256
        As for :func:`~napari_lrp.batch.cohort.run_case`; ``settings`` holds the methods, metrics and options.

    Returns
    -------
    dict
        The task's report.
    """

    def scorecard_table(case):
        model = cached_model(str(model_path), device, model_sha256)
        table = scorecard_of_case(model, case, settings["methods"], settings["target"], settings["metrics"],
                                  **settings["options"])
        return table.drop(columns="case"), model.sha256

    return case_task(case_dir, out_dir, settings, model_sha256, scorecard_table)


def write_scorecard(table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write a scorecard (one case's, or a cohort's summary) as scorecard.csv and its figure scorecard.png.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`napari_lrp.evaluate`'s table or :func:`~napari_lrp.analysis.scorecard.summarise`'s.
    out : str or Path
        The folder (made when missing).

    Returns
    -------
    tuple of Path
        (the table, the figure).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / "scorecard.csv") as tmp:
        table.to_csv(tmp, index=False)
    fig = scorecard_figure(table)
    with replacing(out / "scorecard.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return out / "scorecard.csv", out / "scorecard.png"


def evaluate_cohort(cohort, model, out, methods: Sequence[str], metrics="all", target: str = "region",
                    workers: int | None = None, scheduler: str | None = None, device: str = "cpu",
                    resume: str = "recompute", show_progress: bool = True, label_values=None,
                    nonfinite: str = "error", **options) -> pd.DataFrame:
    """The scorecard of every case of a cohort, and its summary (mean and spread per method and metric).

    Parameters
    ----------
    cohort, model : path
        The folder of case folders, and the model they are explained with.
    out : path
        Where cases/, table.csv, scorecard.csv and scorecard.png are written.
    methods : sequence of str
        Method specs (:func:`scorecard_of_case`).
    metrics : str or sequence of str
        As for :func:`napari_lrp.evaluate`.
    target : str
        As for :func:`napari_lrp.explain`.
    workers, scheduler, device, resume, show_progress, label_values, nonfinite
        As for :func:`~napari_lrp.batch.cohort.sweep_cohort`.
    **options
        Further options of :func:`napari_lrp.evaluate` (noise, n_noise, n_runs, subset, n_blocks, steps,
        tolerance_mm, top_k, other_class, seed); recorded in the settings that decide reuse.

    Returns
    -------
    pandas.DataFrame
        The summary (scorecard.csv).
    """
    methods = list(methods)
    for spec in methods:  # an unknown method or metric is refused before any case runs
        parse_method(spec)
    evaluate_options = dict(options)
    if "folds" in evaluate_options:
        raise ValueError("evaluate_cohort: folds are models, which a cohort's settings cannot record; give the "
                         "runs draws (repeatability) or evaluate case by case")
    selected_metrics(metrics)
    extra = {"kind": "scorecard", "methods": methods, "metrics": metrics if isinstance(metrics, str) else
             list(metrics), "options": evaluate_options}
    table = sweep_cohort(cohort, model, out, workers=workers, scheduler=scheduler, device=device, target=target,
                         resume=resume, show_progress=show_progress, label_values=label_values,
                         nonfinite=nonfinite, _task=run_scorecard_case, extra_settings=extra)
    ok = table[table.status == "ok"] if "status" in table else table
    if ok.empty:
        raise ValueError(f"{out}: no case of {cohort} was scored; see cases/*.failed.json")
    summary = summarise(ok)
    write_scorecard(summary, out)
    return summary
