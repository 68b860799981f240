"""One dask.distributed client for cohort runs: a LocalCluster of single-threaded processes or a scheduler."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["cluster_client"]


@contextlib.contextmanager
def cluster_client(workers: int | None, scheduler: str | None = None, memory_limit=None,
                   config: dict | None = None) -> Iterator:
    """A dask client for the duration of the block; the LocalCluster it started is closed after.

    Parameters
    ----------
    workers : int or None
        Worker processes of a LocalCluster (None or 0: one per core); unused with ``scheduler``.
    scheduler : str, optional
        The address of a running scheduler (no cluster is started).
    memory_limit : str or float, optional
        Each LocalCluster worker's memory (dask's words: bytes or '4GB').
    config : dict, optional
        dask configuration set while the cluster and client start.

    Yields
    ------
    distributed.Client
    """
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    with dask.config.set(config or {}):
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                   dashboard_address=None,
                                   **({"memory_limit": memory_limit} if memory_limit is not None else {}))
        client = Client(scheduler or cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
