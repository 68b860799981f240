"""The blocks of a U-Net (the paper's filter placement "after every block") and the layers around them.

The one place that says which modules a filter, a rule group or a randomisation step can name: the blocks
(:func:`block_names`), the linear layers inside a group of blocks (:func:`block_layers`), every layer a
filter can follow (:func:`filterable_layers`) and the layers with weights outside the blocks
(:func:`loose_layers`).
"""

from __future__ import annotations

from torch import nn

from .filters import Filter
from .types import LINEAR_TYPES

__all__ = ["block_layers", "block_names", "every_block", "filterable_layers", "loose_layers"]


def block_names(module: nn.Module, which: str = "all") -> list[str]:
    """Names of the blocks of a U-Net: modules with a convolution as a direct child.

    Modules that define ``lrp_blocks(which)`` (like UNet3D) name their own blocks; for others the first half
    in forward order counts as the encoder.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    which : str
        'all', 'encoder' or 'decoder'.

    Returns
    -------
    list of str
        Module names in forward order.
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
    """One filter after every block of a network (the paper's placement "after every block").

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    f : Filter
        The filter.
    which : str
        'all', 'encoder' or 'decoder' (see :func:`block_names`).

    Returns
    -------
    dict[str, Filter]
        {block name: f}, for ``explain(filters=...)`` or ``Explanation.refilter``.
    """
    return {n: f for n in block_names(module, which)}


def block_layers(module: nn.Module, which: str = "all") -> list[str]:
    """The convolutions and linear layers inside the blocks of one group.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    which : str
        'all', 'encoder' or 'decoder' (see :func:`block_names`).

    Returns
    -------
    list of str
        Module names, block by block in forward order.
    """
    modules = dict(module.named_modules())
    out = []
    for b in block_names(module, which):
        out += [f"{b}.{n}" if n else b for n, m in modules[b].named_modules() if isinstance(m, LINEAR_TYPES)]
    return out


def filterable_layers(module: nn.Module) -> list[str]:
    """Every layer a filter can follow, as a layer table lists them.

    Parameters
    ----------
    module : torch.nn.Module
        The network (its blocks come first, then its single layers with weights that are not blocks).

    Returns
    -------
    list of str
        Module names in that order.
    """
    names = block_names(module)
    seen = set(names)
    return names + [n for n, m in module.named_modules()
                    if n and n not in seen and next(iter(m.children()), None) is None and hasattr(m, "weight")]


def loose_layers(module: nn.Module) -> list[str]:
    """The layers with weights outside every block (a segmentation head, a stem).

    Parameters
    ----------
    module : torch.nn.Module
        A network whose blocks (:func:`block_names`) leave some weighted layers out.

    Returns
    -------
    list of str
        Their module names, in definition order.
    """
    inside = {n for b in block_names(module) for n, _ in dict(module.named_modules())[b].named_modules(prefix=b)}
    return [n for n, m in module.named_modules() if n and n not in inside and not list(m.children())
            and list(m.parameters(recurse=False))]
