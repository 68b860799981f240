"""napari dock widgets: the only package that imports napari or Qt."""

from .inclusivity import InclusivityWidget
from .relevance import RelevanceWidget

__all__ = ["InclusivityWidget", "RelevanceWidget"]
