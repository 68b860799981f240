"""The gamma search (:func:`~napari_lrp.analysis.search.lrp_search`) over a cohort, serially or on dask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..analysis.search import lrp_search
from ..io import load_case
from ..io.atomic import replacing
from .cluster import cluster_client
from .cohort import cached_model, case_folders, case_name

__all__ = ["search_cohort"]


def search_cohort(cohort, model, out, gammas: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 1.0),
                  groups: Sequence[str] = ("encoder", "decoder"), target="region", n_blocks: int = 300,
                  steps: int = 6, workers: int | None = 0, scheduler: str | None = None,
                  device: str = "cpu") -> pd.DataFrame:
    """:func:`~napari_lrp.analysis.search.lrp_search` on every case of ``cohort``.

    Writes ``cases/<case>.search.csv`` per case, ``table.csv`` (all points of all cases) and ``mean.csv``
    (the points averaged over the cases, best first).

    Parameters
    ----------
    cohort : path
        A folder of case folders.
    model : path
        The model.
    out : path
        The results folder.
    gammas, groups, target, n_blocks, steps
        As for ``lrp_search``.
    workers : int or None
        0: serially in this process; None: one dask worker per core; else that many.
    scheduler : str, optional
        The address of a running dask scheduler.
    device : str
        Where the network runs.

    Returns
    -------
    DataFrame
        The mean table, best first.
    """
    out = Path(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    cases = case_folders(cohort)
    kw = dict(model_path=str(model), out_dir=str(out), gammas=tuple(gammas), groups=tuple(groups), target=target,
              n_blocks=n_blocks, steps=steps, device=device)
    if workers == 0 and scheduler is None:
        for c in cases:
            _search_case(str(c), **kw)
    else:
        with cluster_client(workers, scheduler) as client:
            client.gather([client.submit(_search_case, str(c), pure=False, **kw) for c in cases])
    tables = [pd.read_csv(out / "cases" / f"{case_name(c)}.search.csv") for c in cases]
    table = pd.concat(tables, ignore_index=True)
    gcols = [f"gamma_{g}" for g in groups]
    mean = table.drop(columns=["case"]).groupby(gcols, as_index=False).mean()
    mean = mean.sort_values("faithfulness", ascending=False, ignore_index=True)
    for name, t in (("table.csv", table), ("mean.csv", mean)):
        with replacing(out / name) as tmp:
            t.to_csv(tmp, index=False)
    return mean


def _search_case(case_dir: str, model_path: str, out_dir: str, gammas, groups, target, n_blocks, steps, device):
    name = case_name(case_dir)
    res = lrp_search(cached_model(model_path, device), load_case(case_dir), gammas=gammas, groups=groups, target=target,
                     n_blocks=n_blocks, steps=steps)
    table = res.table.copy()
    table.insert(0, "case", name)
    with replacing(Path(out_dir) / "cases" / f"{name}.search.csv") as tmp:
        table.to_csv(tmp, index=False)
    return name
