"""Faithfulness correlation (Bhatt, Weller and Moura, IJCAI 2020): does removing what the map calls relevant
change the output by as much as the map says?

Random subsets of the input's blocks (all channels) are set to a baseline; over ``n_runs`` subsets, the
Pearson correlation between the relevance the subset holds and the drop of the target's score. Blocks
instead of single voxels, so that a subset of a 3D volume moves the output measurably (a block of one voxel
and one channel is Quantus's ``FaithfulnessCorrelation`` on the flattened input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .perturbation import block_relevance, block_shape, fill_values, voxel_blocks

__all__ = ["faithfulness_correlation"]


@torch.no_grad()
def faithfulness_correlation(score: Callable[[torch.Tensor], torch.Tensor], x, relevance, n_runs: int = 100,
                             subset: float | int = 0.1, block=None, n_blocks: int = 1000, fill: str = "mean",
                             foreground=None, rng=0, batch: int = 1, subsets=None) -> float:
    """The Pearson correlation, over random subsets of blocks, of their relevance and the score's drop.

    Parameters
    ----------
    score : callable
        (B, C, Z, Y, X) inputs -> (B,) the target's score (e.g. the class logit summed over the target region).
    x : torch.Tensor
        (1, C, Z, Y, X) model input.
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) on x's grid.
    n_runs : int
        How many subsets (one forward pass each).
    subset : float or int
        The subset's size: a share of the blocks (float below 1) or a number of blocks (int).
    block : tuple of int, optional
        The block's size; default about ``n_blocks`` blocks (:func:`napari_lrp.metrics.perturbation.block_shape`).
    n_blocks : int
        About how many blocks when ``block`` is not given.
    fill : str
        The baseline of a removed block (:func:`napari_lrp.metrics.perturbation.fill_values`; Quantus's default
        "black" is 'black').
    foreground : numpy.ndarray, optional
        (Z, Y, X) where 'mean' takes the channel means.
    rng : int or numpy.random.RandomState
        The subsets' generator: ``rng.choice(n_blocks, size, replace=False)`` per run, as Quantus draws them
        from numpy's global state.
    batch : int
        Perturbed inputs per forward pass.
    subsets : sequence of numpy.ndarray, optional
        The subsets themselves (block indices in C order of the grid), instead of drawing ``n_runs`` of them.

    Returns
    -------
    float
        In [-1, 1]: 1 when the relevance of a subset predicts the drop exactly (up to scale); NaN when either
        side does not vary.
    """
    x = torch.as_tensor(x)
    R = torch.as_tensor(np.asarray(relevance) if not isinstance(relevance, torch.Tensor) else relevance)
    R = R.reshape(x.shape[1:]).to(x.device)
    spatial = tuple(x.shape[2:])
    bs = tuple(block) if block is not None else block_shape(spatial, n_blocks)
    sums, grid = block_relevance(R, bs)
    nb = sums.numel()
    size = int(round(subset * nb)) if isinstance(subset, float) and subset < 1 else int(subset)
    if not 1 <= size < nb:
        raise ValueError(f"subset={subset!r} is {size} of {nb} blocks: choose 1 to {nb - 1} (or a share below 1)")
    rng = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(rng)
    if subsets is None:
        subsets = [rng.choice(nb, size, replace=False) for _ in range(n_runs)]
    n_runs = len(subsets)
    fg = None if foreground is None else torch.as_tensor(np.asarray(foreground)).to(x.device).bool()[None, None]
    filled = fill_values(x, fill, fg)
    block_of = voxel_blocks(torch.arange(nb, device=x.device), grid, bs, spatial)
    base = float(torch.as_tensor(score(x)).double().reshape(-1)[0])
    drops = []
    for start in range(0, n_runs, batch):
        chunk = subsets[start:start + batch]
        flips = torch.stack([torch.isin(block_of, torch.as_tensor(s, device=x.device)) for s in chunk])[:, None]
        out = torch.as_tensor(score(torch.where(flips, filled, x))).double().reshape(-1)
        drops.extend((base - out).cpu().tolist())
    held = np.array([float(sums[torch.as_tensor(s)].sum()) for s in subsets])
    drops = np.asarray(drops)
    if held.std() == 0 or drops.std() == 0:
        return float("nan")
    return float(np.corrcoef(held, drops)[0, 1])
