"""napari dock widgets: the only package that imports napari or Qt."""

from .compare_dock import CompareWidget
from .concepts_dock import ConceptsWidget
from .inclusivity_dock import InclusivityWidget
from .relevance_dock import RelevanceWidget

__all__ = ["CompareWidget", "ConceptsWidget", "InclusivityWidget", "RelevanceWidget"]
