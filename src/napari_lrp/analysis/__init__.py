"""Studies of many runs of one case: filter sweeps, sanity checks, method comparison, the gamma search."""

from .compare import compare, save_comparison
from .sanity import sanity_check
from .search import lrp_search
from .sweep import sweep

__all__ = ["compare", "lrp_search", "sanity_check", "save_comparison", "sweep"]
