"""The blocks of a U-Net (the paper's filter placement "after every block")."""

from __future__ import annotations

from torch import nn

from .filters import Filter
from .types import LINEAR_TYPES

__all__ = ["block_names", "every_block"]


def block_names(module: nn.Module, which: str = "all") -> list[str]:
    """Names of the blocks of a U-Net: modules with a convolution as a direct child.

    Modules that define ``lrp_blocks(which)`` (like UNet3D) name their own blocks; ``which`` is
    'all', 'encoder' or 'decoder' (for others, the first half in forward order counts as encoder).
    """
    if hasattr(module, "lrp_blocks"):
        return list(module.lrp_blocks(which))
    names = [n for n, m in module.named_modules()
             if n and any(isinstance(c, LINEAR_TYPES) for c in m.children())]
    if which == "all":
        return names
    half = (len(names) + 1) // 2
    return names[:half] if which == "encoder" else names[half:]


def every_block(module: nn.Module, f: Filter, which: str = "all") -> dict[str, Filter]:
    """{block name: f} for every block of ``module`` (see :func:`block_names`)."""
    return {n: f for n in block_names(module, which)}
