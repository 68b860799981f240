"""The relevance engine (torch only): rules, filters, presets, propagation."""

from . import filters
from .engine import (
    PRESETS,
    Cancelled,
    Ledger,
    Propagation,
    PropagationResult,
    block_names,
    default_rule,
    every_block,
    propagate,
)
from .rules import (
    LRP0,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    PassThrough,
    Rule,
    WinnerTakesAll,
    WSquare,
    ZBox,
    ZPlus,
)

__all__ = ["PRESETS", "AlphaBeta", "Cancelled", "Epsilon", "Flat", "Gamma", "LRP0", "Ledger", "PassThrough",
           "Propagation", "PropagationResult", "Rule", "WSquare", "WinnerTakesAll", "ZBox", "ZPlus", "block_names",
           "default_rule", "every_block", "filters", "propagate"]
