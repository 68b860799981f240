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

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..io.case import Case
from ..lrp.blocks import block_names, loose_layers
from ..models.card import Model
from ..pipeline import Explanation, explain

__all__ = ["map_similarity", "randomisation_steps", "randomised", "sanity_check"]


def map_similarity(a: np.ndarray, b: np.ndarray, top: float = 0.01, mask: np.ndarray | None = None) -> dict[str, float]:
    """Similarity of two relevance maps.

    Parameters
    ----------
    a, b : numpy.ndarray
        (C, Z, Y, X) maps.
    top : float
        The share of voxels of the |.| sums whose overlap is measured.
    mask : numpy.ndarray, optional
        (Z, Y, X) where the rank correlations are computed (default everywhere).

    Returns
    -------
    dict[str, float]
        spearman_signed (the signed maps, all channels' voxels), spearman (|a|, |b| summed over channels),
        ssim (the central axial slice of the |.| sums, scaled to [0, 1]) and top_overlap.
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    A = np.abs(a).sum(0) if a.ndim == 4 else np.abs(a)
    B = np.abs(b).sum(0) if b.ndim == 4 else np.abs(b)
    m = np.ones(A.shape, bool) if mask is None else np.asarray(mask, bool)
    rho = float(spearmanr(A[m], B[m]).statistic)
    signed = float(spearmanr(a[..., m].ravel() if a.ndim == 4 else a[m], b[..., m].ravel() if b.ndim == 4
                             else b[m]).statistic)
    z = A.shape[0] // 2
    sa, sb = A[z] / (A[z].max() or 1.0), B[z] / (B[z].max() or 1.0)
    win = min(7, *(d if d % 2 else d - 1 for d in sa.shape))  # SSIM's 7x7 window, smaller on tiny slices
    ssim = float(structural_similarity(sa, sb, data_range=1.0, win_size=win)) if win >= 3 else float("nan")
    k = max(1, int(round(top * A.size)))
    ta = np.argpartition(A.ravel(), -k)[-k:]
    tb = np.argpartition(B.ravel(), -k)[-k:]
    overlap = len(np.intersect1d(ta, tb)) / k
    return {"spearman": 0.0 if np.isnan(rho) else rho, "spearman_signed": 0.0 if np.isnan(signed) else signed,
            "ssim": ssim, "top_overlap": float(overlap)}


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
    everything = [n for n, m in model.network.named_modules() if n and not list(m.children())
                  and hasattr(m, "reset_parameters")]
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
