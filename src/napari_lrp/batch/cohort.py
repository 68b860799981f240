"""Filter sweeps over a cohort: every case x filter setting, on a dask.distributed cluster.

Resumable: each finished case leaves ``cases/<case>.csv`` (written atomically) and is skipped next time;
a failing case leaves ``cases/<case>.failed.json`` with its error and does not stop the others (it is
retried on the next run). The combined table is written to ``table.csv`` (and ``table.parquet`` when
pyarrow is installed).
"""

from __future__ import annotations

import json
import os
import traceback
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..io.atomic import replacing, write_text

__all__ = ["case_folders", "run_case", "sweep_cohort"]


def case_folders(cohort: str | os.PathLike) -> list[Path]:
    """The case folders of a cohort folder (its sub-folders, sorted by name)."""
    root = Path(cohort)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: cohort folder not found")
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cases:
        raise FileNotFoundError(f"{root}: no case folders inside")
    return cases


@lru_cache(maxsize=2)
def _model(model_path: str, device: str):
    from ..models import load_model

    return load_model(model_path, device=device)


def run_case(case_dir: str, model_path: str, out_dir: str, preset: str = "paper", placement: str = "input",
             device: str = "cpu") -> dict:
    """Explain one case and sweep the default grid; writes cases/<name>.csv (or .failed.json)."""
    from ..explanation import explain
    from ..io import load_case
    from ..sweep import sweep

    name = Path(case_dir).name
    cases = Path(out_dir) / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    try:
        exp = explain(_model(str(model_path), device), load_case(case_dir), preset=preset)
        table = sweep(exp, placement=placement)
        table.insert(0, "case", name)
        table["status"] = "ok"
        table["error"] = ""
        with replacing(cases / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        (cases / f"{name}.failed.json").unlink(missing_ok=True)
        return {"case": name, "status": "ok"}
    except Exception as exc:  # noqa: BLE001 - a failing case is reported, the others go on
        write_text(cases / f"{name}.failed.json", json.dumps(
            {"case": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
        return {"case": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _collect(cases: list[Path], out: Path) -> pd.DataFrame:
    tables = []
    for c in cases:
        csv = out / "cases" / f"{c.name}.csv"
        failed = out / "cases" / f"{c.name}.failed.json"
        if csv.exists():
            tables.append(pd.read_csv(csv, keep_default_na=False, na_values=[""]))
        elif failed.exists():
            err = json.loads(failed.read_text())["error"]
            tables.append(pd.DataFrame([{"case": c.name, "status": "failed", "error": err}]))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if "error" in table:
        table["error"] = table["error"].fillna("")
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


def sweep_cohort(cohort, model, out, preset: str = "paper", workers: int | None = None,
                 scheduler: str | None = None, placement: str = "input", device: str = "cpu",
                 show_progress: bool = True) -> pd.DataFrame:
    """Sweep every case of ``cohort`` with ``model``; results in ``out``. Returns the combined table.

    workers=0 runs serially in this process; otherwise a dask LocalCluster with ``workers`` processes
    (default: one per core), or the existing scheduler at ``scheduler``. Finished cases are skipped.
    """
    cases = case_folders(cohort)
    out = Path(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if not (out / "cases" / f"{c.name}.csv").exists()]
    args = dict(model_path=str(model), out_dir=str(out), preset=preset, placement=placement, device=device)
    bar = _bar(len(todo), len(cases) - len(todo), show_progress)
    if todo and workers == 0 and scheduler is None:
        for c in todo:
            _report(bar, run_case(str(c), **args))
    elif todo:
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler is None:
            n = workers or os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(scheduler or cluster)
        try:
            futures = [client.submit(run_case, str(c), pure=False, **args) for c in todo]
            for fut in as_completed(futures):
                _report(bar, fut.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
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
