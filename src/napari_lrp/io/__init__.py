"""NIfTI <-> arrays: cases, orientation, writer (numpy and nibabel only)."""

from .case import MODALITY_SETS, Case, load_case, recognise, save_nifti
from .nifti import CaseError, read_nifti
from .orientation import Grid, grid_from_layer

__all__ = ["Case", "CaseError", "Grid", "MODALITY_SETS", "grid_from_layer", "load_case", "read_nifti",
           "recognise", "save_nifti"]
