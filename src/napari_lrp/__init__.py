"""napari-lrp: layer-wise relevance propagation for 3D segmentation networks.

The public API (DESIGN section 6); the core never imports napari or Qt.
"""

__version__ = "0.1.0"

from . import filters
from .io import Case, CaseError, load_case, save_nifti

__all__ = ["Case", "CaseError", "filters", "load_case", "save_nifti"]
