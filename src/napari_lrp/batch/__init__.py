"""Cohort runs on dask.distributed (core: no napari)."""

from .cohort import case_folders, run_case, sweep_cohort
from .concepts import concept_references

__all__ = ["case_folders", "concept_references", "run_case", "sweep_cohort"]
