"""Filter sweeps over a cohort: every case x filter setting, on a dask.distributed cluster.

Resumable and honest about what it reuses: each finished case leaves ``cases/<case>.csv`` (written
atomically) whose rows carry the model's sha256 and a hash of the run's settings (preset, placement, grid,
target, thresholds, label values, non-finite handling, package version). A rerun reuses a case only when
both match; a case computed with another model or other settings is recomputed (``resume='recompute'``,
the default) or refused (``resume='strict'``). A failing case, also one whose worker dies (killed for
memory), leaves ``cases/<case>.failed.json`` with its name and error and does not stop the others (it is
retried on the next run). The combined table is written to ``table.csv`` (and ``table.parquet`` when
pyarrow is installed) with the provenance columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
import unicodedata
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..analysis.sweep import sweep
from ..io import load_case
from ..io.atomic import replacing, write_text
from ..io.case import readable_name
from ..lrp.filters import default_grid, format_filter, parse_filter
from ..lrp.presets import PRESETS
from ..metrics.components import TARGET_KINDS
from ..models import load_model
from ..models.devices import resolve_device
from ..models.loading import model_sha256
from ..pipeline import explain, package_version
from ..pipeline.sampling import DrawnDropout, Sampling
from .cluster import cluster_client

__all__ = ["case_folders", "case_task", "run_case", "run_settings", "settings_hash", "sweep_cohort"]

RESUME_MODES = ("recompute", "strict")


def case_folders(cohort: str | os.PathLike) -> list[Path]:
    """The case folders of a cohort folder.

    Parameters
    ----------
    cohort : str or os.PathLike
        A folder of case folders.

    Returns
    -------
    list of Path
        Its sub-folders, sorted by name; hidden ones skipped.
    """
    root = Path(cohort)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: cohort folder not found")
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cases:
        raise FileNotFoundError(f"{root}: no case folders inside")
    seen: dict[str, Path] = {}
    for c in cases:  # results are filed under the readable name: two folders must not share one
        key = unicodedata.normalize("NFC", case_name(c))
        if key in seen:
            raise ValueError(f"{root}: the case folders {os.fsencode(seen[key].name)!r} and {os.fsencode(c.name)!r} "
                             f"read as the same name {case_name(c)!r} (after decoding), so their "
                             "results would overwrite each other: rename one of them")
        seen[key] = c
    return cases


def run_settings(preset: str = "paper", placement: str = "input", grid=None, target: str = "region",
                 tau_r: float = 0.5, tau_x: float = 0.1, label_values=None, nonfinite: str = "error",
                 sampling: dict | None = None, max_memory: float | None = None, lesions: bool = False) -> dict:
    """Everything besides the model that decides a case's sweep table, as a JSON-able dict.

    Parameters
    ----------
    preset, placement, grid, target, tau_r, tau_x
        As for ``sweep_cohort`` and ``sweep``.
    label_values : int or list of int, optional
        The ground-truth values of multi-label files.
    nonfinite : str
        'error' or 'zero' (NaN/Inf voxels).
    sampling : dict, optional
        ``explain``'s uncertainty keywords (mc_samples, dropout, seed, tta), which add the '_sd' columns.
    max_memory : float, optional
        The budget in bytes a case plans its run within.
    lesions : bool
        Lesion-wise rows (``sweep(..., lesions=True)``).

    Returns
    -------
    dict
    """
    grid = default_grid() if grid is None else grid
    return {"preset": preset, "placement": placement, "grid": [format_filter(placement, f) for f in grid],
            "target": target, "tau_r": float(tau_r), "tau_x": float(tau_x),
            "label_values": None if label_values is None else [int(v) for v in (
                [label_values] if isinstance(label_values, int) else label_values)],
            "nonfinite": nonfinite, "napari_lrp": package_version(),
            **({"sampling": dict(sampling)} if sampling else {}),
            **({"max_memory": float(max_memory)} if max_memory else {}),
            **({"lesions": True} if lesions else {})}


def settings_hash(settings: dict) -> str:
    """A short, stable hash of :func:`run_settings`.

    Parameters
    ----------
    settings : dict
        The settings.

    Returns
    -------
    str
        16 hex digits.
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=2)
def _cached_model(model_path: str, device: str, identity: str):
    model = load_model(model_path, device=device)
    if model.sha256 != identity:  # edited between the sweep's hash and the load: not the model asked for
        raise ValueError(f"{model_path}: the model changed while the sweep started (its files hash to "
                         f"{model.sha256[:12]}, not {identity[:12]}); run the sweep again")
    return model


def cached_model(model_path: str, device: str, identity: str | None = None):
    """The loaded model, cached per worker by its path and identity.

    An edited card or weights file is another model, loaded again.

    Parameters
    ----------
    model_path : str
        The model.
    device : str
        Where it runs.
    identity : str, optional
        Its sha256 (computed when not given).

    Returns
    -------
    Model
    """
    return _cached_model(model_path, device, identity or model_sha256(model_path))


def case_name(case_dir) -> str:
    """A case's name for tables and files: its folder's name, readable (see ``io.case.readable_name``).

    Parameters
    ----------
    case_dir : str or os.PathLike
        The case folder.

    Returns
    -------
    str
    """
    return readable_name(Path(case_dir).name)


#: a case whose worker was killed this many times (this model, these settings) is not tried again
MAX_KILLS = 2


def _killed(cases: Path, name: str, record: dict) -> int:
    """How often this case's worker was killed with this model and these settings (its failed.json)."""
    try:
        rec = json.loads((cases / f"{name}.failed.json").read_text())
    except (OSError, ValueError):
        return 0
    same = rec.get("model_sha256") == record.get("model_sha256") and rec.get("settings_hash") == record.get(
        "settings_hash")
    return int(rec.get("killed", 0)) if same else 0


def write_failure(cases: Path, name: str, error: str, trace: str, record: dict, killed: bool = False) -> dict:
    """Record a case's failure in cases/<name>.failed.json (a killed worker counted).

    Parameters
    ----------
    cases : Path
        The sweep's cases/ folder.
    name : str
        The case.
    error, trace : str
        The message and the traceback.
    record : dict
        The model's identity and the settings' hash.
    killed : bool
        Whether its worker died.

    Returns
    -------
    dict
        The task's report (case, status 'failed', error).
    """
    kills = _killed(cases, name, record) + 1 if killed else 0
    write_text(cases / f"{name}.failed.json", json.dumps(
        {"case": name, "error": error, "traceback": trace, **record, **({"killed": kills} if killed else {})}))
    return {"case": name, "status": "failed", "error": error}


def run_case(case_dir: str, model_path: str, out_dir: str, preset: str = "paper", placement: str = "input",
             device: str = "cpu", settings: dict | None = None, model_sha256: str = "") -> dict:
    """Explain one case and sweep the grid of ``settings``: cases/<name>.csv or cases/<name>.failed.json.

    The rows carry ``model_sha256`` and ``settings_hash``.

    Parameters
    ----------
    case_dir : str
        The case folder.
    model_path : str
        The model.
    out_dir : str
        The sweep's results folder (cases/ inside).
    preset, placement, device : str
        The run's preset, the filters' placement and where the network runs.
    settings : dict, optional
        :func:`run_settings`'s dict (decides the rows and their reuse).
    model_sha256 : str
        The model's identity, written into every row.

    Returns
    -------
    dict
        The task's report (case, status, error).
    """
    settings = settings or run_settings(preset, placement)

    def sweep_table(case):
        exp = explain(cached_model(str(model_path), device, model_sha256), case, preset=settings["preset"],
                      target=settings["target"],
                      max_memory=settings.get("max_memory"), **settings.get("sampling", {}))
        grid = [parse_filter(spec)[1] for spec in settings["grid"]]
        table = sweep(exp, placement=settings["placement"], grid=grid, tau_r=settings["tau_r"],
                      tau_x=settings["tau_x"], lesions=settings.get("lesions", False))
        return table, exp.model.sha256

    return case_task(case_dir, out_dir, settings, model_sha256, sweep_table)


def case_task(case_dir: str, out_dir: str, settings: dict, model_sha256: str, table_of) -> dict:
    """What every per-case task of a cohort does around its own work: load the case with the cohort's
    settings, write its rows (with the model's identity and the settings' hash) or its failure.

    Parameters
    ----------
    case_dir, out_dir : str
        The case folder and the results folder (cases/ inside).
    settings : dict
        The cohort's settings (``nonfinite`` and ``label_values`` load the case; all of them are hashed).
    model_sha256 : str
        The model's identity.
    table_of : callable
        Case -> (its rows as a DataFrame, the model's sha256 or None).

    Returns
    -------
    dict
        The task's report (case, status, error).
    """
    record = {"model_sha256": model_sha256, "settings_hash": settings_hash(settings)}
    name = case_name(case_dir)
    cases = Path(out_dir) / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    try:
        case = load_case(case_dir, nonfinite=settings["nonfinite"], label_values=settings["label_values"])
        table, sha = table_of(case)
        return write_case_table(cases, name, table, record, sha)
    except Exception as exc:  # noqa: BLE001 - a failing case is reported, the others go on
        return write_failure(cases, name, f"{type(exc).__name__}: {exc}", traceback.format_exc(), record)


def write_case_table(cases: Path, name: str, table: pd.DataFrame, record: dict, model_sha: str | None) -> dict:
    """Write one case's rows atomically to cases/<name>.csv and clear an earlier failure.

    The rows carry the case, the status and the model's identity and settings' hash that decide their reuse.

    Parameters
    ----------
    cases : Path
        The sweep's cases/ folder, where the table and any earlier failure of the case lie.
    name : str
        The case's name (the files' stem).
    table : pandas.DataFrame
        Its rows.
    record : dict
        The settings' hash.
    model_sha : str or None
        The model's identity.

    Returns
    -------
    dict
        The task's report.
    """
    table.insert(0, "case", name)
    table["status"], table["error"] = "ok", ""
    table["model_sha256"] = record["model_sha256"] or (model_sha or "")
    table["settings_hash"] = record["settings_hash"]
    with replacing(cases / f"{name}.csv") as tmp:
        table.to_csv(tmp, index=False)
    (cases / f"{name}.failed.json").unlink(missing_ok=True)
    return {"case": name, "status": "ok"}


def _record_of(csv: Path) -> tuple[str, str] | None:
    """(model_sha256, settings_hash) a case table was computed with; None for a table without them."""
    try:
        head = pd.read_csv(csv, nrows=1, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if head.empty or "model_sha256" not in head or "settings_hash" not in head:
        return None
    return str(head.model_sha256.iloc[0]), str(head.settings_hash.iloc[0])


def _collect(cases: list[Path], out: Path) -> pd.DataFrame:
    tables = []
    for c in cases:
        name = case_name(c)
        csv = out / "cases" / f"{name}.csv"
        failed = out / "cases" / f"{name}.failed.json"
        if failed.exists() and (not csv.exists() or failed.stat().st_mtime_ns > csv.stat().st_mtime_ns):
            rec = json.loads(failed.read_text())
            tables.append(pd.DataFrame([{"case": name, "status": "failed", "error": rec["error"],
                                         "model_sha256": rec.get("model_sha256", ""),
                                         "settings_hash": rec.get("settings_hash", "")}]))
        elif csv.exists():
            tables.append(pd.read_csv(csv, keep_default_na=False, na_values=[""],
                                      dtype={"model_sha256": str, "settings_hash": str}))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    for col in ("error", "model_sha256", "settings_hash"):
        if col in table:
            table[col] = table[col].fillna("")
    return table


def _bar(total: int, skipped: int, show: bool):
    if not show or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"cases ({skipped} already done)", unit="case")


def _report(bar, result: dict) -> None:
    if bar is None:
        return
    if result["status"] != "ok":
        bar.write(f"{result['case']}: failed: {result.get('error', '')}")
    bar.update(1)


#: the targets a sweep takes by name (a mask or a voxel differs per case)
SWEEP_TARGETS = ("region", "groundtruth", "output")


def _check_sweep_arguments(model, preset: str, target: str, device: str, sampling: dict | None) -> None:
    """Refuse, before any case runs, an argument that would fail every case (and exit 0 with a table of
    failures): an unknown preset or target, a device this machine lacks, draws the network cannot make."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")

    kind = target.partition(":")[0].lower() if isinstance(target, str) else None
    if target not in SWEEP_TARGETS and kind not in TARGET_KINDS:
        raise ValueError(f"target {target!r}: a cohort sweep explains one of {', '.join(SWEEP_TARGETS)} or a target "
                         f"spec ({', '.join(k + ':...' for k in TARGET_KINDS)}) in every case")
    resolve_device(device)
    if sampling:
        s = Sampling(**sampling)
        if s.stochastic:
            DrawnDropout(cached_model(str(model), "cpu").network, s)  # refuses a network without Dropout modules


def _result_of(fut, name: str, cases: Path, record: dict) -> dict:
    """The finished case's record, or its failure written under its name (a dead worker counted)."""
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001 - a dead worker (KilledWorker) or a lost task
        killed = type(exc).__name__ == "KilledWorker"
        kills = _killed(cases, name, record) + 1
        why = (f" (its worker died, {kills} time(s) with this model and these settings; often the case "
               "needs more memory than a worker has: raise memory_limit" +
               (", or it is not tried again" if kills < MAX_KILLS else "; not tried again") + ")"
               if killed else "")
        return write_failure(cases, name, f"{type(exc).__name__}: case {name} failed{why}",
                             traceback.format_exc(), record, killed=killed)


def sweep_cohort(cohort, model, out, preset: str = "paper", workers: int | None = None,
                 scheduler: str | None = None, placement: str = "input", device: str = "cpu",
                 show_progress: bool = True, target: str = "region", tau_r: float = 0.5, tau_x: float = 0.1,
                 label_values=None, nonfinite: str = "error", resume: str = "recompute",
                 sampling: dict | None = None, memory_limit: str | float | None = None, lesions: bool = False,
                 _task=None, extra_settings: dict | None = None) -> pd.DataFrame:
    """Sweep every case of a cohort with a model: cases/<case>.csv per case, table.csv (+ .parquet).

    A case whose table was computed with this model and these settings is reused. Every case is isolated: an
    error or a dead worker is recorded under the case's name; a case whose worker is killed is retried once
    more by a rerun and then left failed (``MAX_KILLS``), named in table.csv.

    Parameters
    ----------
    cohort : str or os.PathLike
        A folder of case folders.
    model : str or os.PathLike
        The model.
    out : str or os.PathLike
        The results folder.
    preset, placement, target, tau_r, tau_x
        As for ``explain`` and ``sweep``.
    workers : int or None
        0: serially in this process; None: a dask LocalCluster with one process per core; else that many.
    scheduler : str, optional
        The address of an existing dask scheduler.
    device : str
        Where the network runs.
    show_progress : bool
        A progress bar on the terminal.
    label_values, nonfinite
        As for ``load_case``.
    resume : str
        'recompute' (cases computed with another model or settings are recomputed) or 'strict' (refused before
        anything is computed).
    sampling : dict, optional
        ``explain``'s uncertainty keywords (e.g. ``{"tta": "flips"}``); the tables get '_sd' columns.
    memory_limit : str or float, optional
        Each LocalCluster worker's memory (dask's words: bytes or '4GB'); a case then plans its run within
        about half of it (tiling when the whole volume would not fit).
    lesions : bool
        Lesion-wise rows besides the run's (every lesion of the prediction and the ground truth explained alone).
    _task : callable, optional
        Replaces :func:`run_case` (another per-case task, e.g. concept references).
    extra_settings : dict, optional
        More settings for the task (in its ``settings``, and in the hash that decides reuse).

    Returns
    -------
    pandas.DataFrame
        Every case's rows.
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}, not {resume!r}")
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 0):
        raise ValueError(f"workers must be a whole number >= 0 (0: serially in this process) or None (one per "
                         f"core), not {workers!r}")
    task = _task or run_case
    cases = case_folders(cohort)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: is a file; choose a folder for the results")
    _check_sweep_arguments(model, preset, target, device, sampling)
    budget = None
    if memory_limit is not None and scheduler is None:
        from dask.utils import parse_bytes

        budget = 0.5 * (parse_bytes(memory_limit) if isinstance(memory_limit, str) else float(memory_limit))
    settings = run_settings(preset, placement, None, target, tau_r, tau_x, label_values, nonfinite, sampling,
                            max_memory=budget, lesions=lesions)
    settings.update(extra_settings or {})  # a task's own settings (e.g. the layer of concept references)
    sha = model_sha256(model)
    want = (sha, settings_hash(settings))
    record = {"model_sha256": sha, "settings_hash": want[1]}
    todo, stale = [], []
    for c in cases:
        csv = out / "cases" / f"{case_name(c)}.csv"
        if _killed(out / "cases", case_name(c), record) >= MAX_KILLS:
            continue  # killed twice with this model and these settings: left failed, not tried again
        if not csv.exists():
            todo.append(c)
        elif _record_of(csv) != want:
            stale.append(c)
    if stale and resume == "strict":
        raise ValueError(f"{out}: {len(stale)} case(s) ({', '.join(case_name(c) for c in stale[:5])}) were computed "
                         "with another model or other settings; use another output folder or resume='recompute'")
    todo = sorted(todo + stale)
    (out / "cases").mkdir(parents=True, exist_ok=True)  # only once the sweep is known to run
    args = dict(model_path=str(model), out_dir=str(out), preset=preset, placement=placement, device=device,
                settings=settings, model_sha256=sha)
    bar = _bar(len(todo), len(cases) - len(todo), show_progress)
    if todo and workers == 0 and scheduler is None:
        for c in todo:
            _report(bar, task(str(c), **args))
    elif todo:
        from dask.distributed import as_completed

        # a worker holds one case at a time (saturation 1.0 with one thread: no second case queued on it), so a
        # case that kills its worker takes no other case with it
        config = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}
        with cluster_client(workers, scheduler, memory_limit, config) as client:
            futures = {client.submit(task, str(c), pure=False, **args): c for c in todo}
            for fut in as_completed(futures):
                _report(bar, _result_of(fut, case_name(futures[fut]), out / "cases", record))
    if bar is not None:
        bar.close()
    table = _collect(cases, out)
    with replacing(out / "table.csv") as tmp:
        table.to_csv(tmp, index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return table
    with replacing(out / "table.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return table
