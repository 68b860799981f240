"""Cohort runs on dask.distributed (core: no napari): sweeps, concept references, the gamma search."""

from .cohort import case_folders, run_case, sweep_cohort
from .concepts import concept_references
from .search import search_cohort

__all__ = ["case_folders", "concept_references", "run_case", "search_cohort", "sweep_cohort"]
