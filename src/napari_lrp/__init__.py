"""napari-lrp: layer-wise relevance propagation for 3D segmentation networks, in napari and in scripts.

The public API (see docs/api.md). The core (io, models, lrp, metrics, pipeline, analysis, batch) never
imports napari or Qt, and no module of the package imports this file (the version comes from the
installed metadata).
"""

import sys

from . import metrics
from .analysis.scorecard import evaluate
from .analysis.sweep import sweep
from .io import Case, CaseError, load_case, save_nifti
from .lrp import filters
from .lrp.blocks import every_block
from .models import Model, ModelCard, ModelError, UNet3D, load_model, save_model
from .pipeline import Explanation, explain, load_settings, package_version, save_settings

# ``napari_lrp.filters`` is the public name of the filter vocabulary (lrp/filters.py): importable as a module
sys.modules[f"{__name__}.filters"] = filters

__version__ = package_version()


def show(viewer, explanation, **kwargs):
    """Add the layers the widgets add (anatomy, ground truth, prediction, relevance) to a napari viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    explanation : Explanation
        The run to show.
    **kwargs
        Passed to ``widgets._layers.show_explanation``.

    Returns
    -------
    list
        The layers added or updated.
    """
    from .widgets._layers import show_explanation

    return show_explanation(viewer, explanation, **kwargs)


__all__ = ["Case", "CaseError", "Explanation", "Model", "ModelCard", "ModelError", "UNet3D", "evaluate",
           "every_block", "explain", "filters", "load_case", "load_model", "load_settings", "metrics", "save_model",
           "save_nifti", "save_settings", "show", "sweep"]
