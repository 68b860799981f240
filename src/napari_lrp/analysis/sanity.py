"""Sanity checks for explanations (Adebayo et al. 2018): does the map depend on the trained weights?

Model-parameter randomisation, for any method of ``explain``: the network's blocks (``lrp.blocks``; every
leaf layer with weights when the network names none) are re-initialised from the output down, cascading
(each step adds the next block below) or independently (one block at a time); after each step the method
runs again on the same target region (the trained model's) and the map is compared with the original.
Similarities, on |R| summed over channels: Spearman rank correlation over all voxels, SSIM of the central
axial slice (maps scaled to [0, 1]), and the overlap of the top 1 % voxels. Data randomisation needs
retraining and is out of scope.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from ..io.case import Case
from ..lrp.blocks import block_names, loose_layers
from ..metrics.similarity import map_similarity
from ..models.card import Model
from ..pipeline import Explanation, explain

__all__ = ["map_similarity", "randomisation_steps", "randomised", "sanity_check", "weighted_layers"]


def randomisation_steps(network: nn.Module) -> list[str]:
    """The order of a cascading randomisation.

    Parameters
    ----------
    network : torch.nn.Module
        The network.

    Returns
    -------
    list of str
        Any layer with weights outside the blocks (e.g. the head) first, then the blocks from the output down.
    """
    blocks = block_names(network)
    loose = loose_layers(network)
    # the loose layers in reverse definition order (the head is defined last), then the blocks from the top
    return list(reversed(loose)) + list(reversed(blocks))


def weighted_layers(network: nn.Module) -> list[str]:
    """The leaf layers with weights a re-initialisation resets (a fully untrained copy resets all of them).

    Parameters
    ----------
    network : torch.nn.Module
        The network.

    Returns
    -------
    list of str
        Module names, in definition order.
    """
    return [n for n, m in network.named_modules() if n and not list(m.children()) and hasattr(m, "reset_parameters")]


def randomised(network: nn.Module, names: list[str], seed: int = 0) -> nn.Module:
    """A copy of a network with some modules re-initialised (``reset_parameters``, seeded).

    Parameters
    ----------
    network : torch.nn.Module
        The trained network (not changed).
    names : list of str
        The modules to re-initialise.
    seed : int
        The seed of the new weights.

    Returns
    -------
    torch.nn.Module
    """
    net = copy.deepcopy(network)
    modules = dict(net.named_modules())
    for i, name in enumerate(names):
        for j, m in enumerate(modules[name].modules()):
            if hasattr(m, "reset_parameters"):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed * 100_003 + i * 1009 + j)
                    m.reset_parameters()
    return net


def sanity_check(model: Model, case: Case, method: str = "lrp", mode: str = "cascading", seed: int = 0,
                 progress: Callable[[int, int], None] | None = None, **explain_options) -> pd.DataFrame:
    """Model-parameter randomisation of a method (Adebayo et al. 2018): does the map depend on the weights?

    Parameters
    ----------
    model : Model
        The trained model.
    case : Case
        The case.
    method : str
        Any of ``explain``'s methods.
    mode : str
        'cascading' (blocks re-initialised from the output down, cumulatively) or 'independent' (one at a time).
    seed : int
        The seed of the new weights.
    progress : callable(done, total), optional
        Called per step.
    **explain_options
        Passed to ``explain``.

    Returns
    -------
    pandas.DataFrame
        One row per step: step (0 = the trained model), randomised, mode, method, spearman, ssim, top_overlap
        (similarity to the trained model's map), and a last row 'all' (an untrained copy).
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', not {mode!r}")
    base = explain(model, case, method=method, **explain_options)
    region = base.target_region()
    target = region if region is not None else "output"
    options = {k: v for k, v in explain_options.items() if k != "target"}
    steps = randomisation_steps(model.network)
    rows = [{"step": 0, "randomised": "none", **map_similarity(base.relevance, base.relevance)}]
    everything = weighted_layers(model.network)
    plan = [(steps[: i + 1] if mode == "cascading" else [name], name) for i, name in enumerate(steps)]
    plan.append((everything, "all"))
    for i, (names, label) in enumerate(plan, start=1):
        net = randomised(model.network, names, seed)
        other = Model(network=net.eval(), card=model.card, device=model.device)
        exp: Explanation = explain(other, case, method=method, target=target, **options)
        rows.append({"step": i, "randomised": label, **map_similarity(base.relevance, exp.relevance)})
        if progress is not None:
            progress(i, len(plan))
    table = pd.DataFrame(rows)
    table.insert(2, "mode", mode)
    table.insert(3, "method", method if method != "lrp" else f"lrp:{explain_options.get('preset', 'paper')}")
    return table
