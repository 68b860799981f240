"""The relevance engine (torch only): rules, filters, presets, propagation, kernels, targets, ledger.

One concept per module: ``rules`` (LRP rules), ``presets`` (named rule sets and the default handling),
``types`` (the module and function tables), ``filters`` (filter kinds, specs, grids), ``engine``
(Propagation), ``ledger``, ``folding`` (BatchNorm folding), ``blocks``, ``names`` (name and glob matching),
``kernels`` (oneDNN convolutions), ``targets`` (the start relevance).
"""

from . import filters
from .blocks import block_names, every_block
from .engine import Cancelled, Propagation, PropagationResult, propagate
from .ledger import Ledger, LedgerEntry
from .presets import PRESETS, Preset, default_rule, get_preset, register_preset
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

__all__ = ["PRESETS", "AlphaBeta", "Cancelled", "Epsilon", "Flat", "Gamma", "LRP0", "Ledger", "LedgerEntry",
           "PassThrough", "Preset", "Propagation", "PropagationResult", "Rule", "WSquare", "WinnerTakesAll", "ZBox",
           "ZPlus", "block_names", "default_rule", "every_block", "filters", "get_preset", "propagate",
           "register_preset"]
