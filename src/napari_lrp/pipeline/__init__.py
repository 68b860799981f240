"""The pipeline above the engine: a model and a case in, an :class:`Explanation` out.

``explain`` chooses the kind of run (``runs``: one LRP pass; ``attribution``: another method; ``tiling``:
sliding windows; ``sampling``: draws), ``result`` holds the Explanation and its settings.
"""

from .explain import explain, explain_again, predict_case
from .result import Explanation, PlacedRelevance, load_settings, package_version, save_settings
from .runs import Run, RunSpec

__all__ = ["Explanation", "PlacedRelevance", "Run", "RunSpec", "explain", "explain_again", "load_settings",
           "package_version", "predict_case", "save_settings"]
