"""Cohort runs on dask.distributed (core: no napari): sweeps, concept references, the gamma search, the
scorecard."""

from .cohort import case_folders, run_case, sweep_cohort
from .cohort_scorecard import evaluate_cohort
from .cohort_search import search_cohort
from .references import concept_references

__all__ = ["case_folders", "concept_references", "evaluate_cohort", "run_case", "search_cohort", "sweep_cohort"]
