"""napari dock widgets: the only package that imports napari or Qt."""

from .compare import CompareWidget
from .inclusivity import InclusivityWidget
from .relevance import RelevanceWidget

__all__ = ["CompareWidget", "InclusivityWidget", "RelevanceWidget"]
