"""napari dock widgets: the only package that imports napari or Qt."""

from .compare import CompareWidget
from .concepts import ConceptsWidget
from .inclusivity import InclusivityWidget
from .relevance import RelevanceWidget

__all__ = ["CompareWidget", "ConceptsWidget", "InclusivityWidget", "RelevanceWidget"]
