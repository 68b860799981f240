"""Cohort runs on dask.distributed (core: no napari)."""

from .cohort import case_folders, run_case, sweep_cohort

__all__ = ["case_folders", "run_case", "sweep_cohort"]
