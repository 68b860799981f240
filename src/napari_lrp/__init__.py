"""napari-lrp: layer-wise relevance propagation for 3D segmentation networks, in napari and in scripts.

The public API (DESIGN section 6). The core (io, models, lrp, metrics) never imports napari or Qt, and
no module of the package imports this file (the version comes from the installed metadata).
"""

from . import filters, metrics
from .explanation import Explanation, explain, load_settings, package_version, save_settings
from .io import Case, CaseError, load_case, save_nifti
from .lrp.blocks import every_block
from .models import Model, ModelCard, ModelError, UNet3D, load_model, save_model
from .sweep import sweep

__version__ = package_version()


def show(viewer, explanation, **kwargs):
    """Add the layers the widgets add (anatomy, ground truth, prediction, relevance) to a napari viewer."""
    from .widgets._layers import show_explanation

    return show_explanation(viewer, explanation, **kwargs)


__all__ = ["Case", "CaseError", "Explanation", "Model", "ModelCard", "ModelError", "UNet3D", "every_block",
           "explain", "filters", "load_case", "load_model", "load_settings", "metrics", "save_model",
           "save_nifti", "save_settings", "show", "sweep"]
