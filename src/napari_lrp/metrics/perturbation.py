"""Region perturbation (pixel flipping in 3D)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .imputation import noisy_linear_imputation

__all__ = ["FILLS", "region_perturbation", "PerturbationCurve", "block_relevance", "block_shape", "fill_values",
           "imputed", "voxel_blocks"]

#: the fills of flipped blocks, named in every table (``noisy_linear`` is ROAD's imputation)
FILLS = ("mean", "zero", "black", "noise", "blur", "noisy_linear")


@dataclass
class PerturbationCurve:
    """fractions: flipped fraction of blocks (0 .. 1); scores: score / score at 0; auc: trapezoid area;
    fill: what a flipped block took (one of ``FILLS``: the imputation, named in every table)."""

    order: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    block: tuple[int, int, int]
    fill: str = "mean"


def block_shape(shape, n_blocks: int = 1000) -> tuple[int, ...]:
    """A near-cubic block edge (voxels) so a volume splits into about ``n_blocks`` blocks.

    Parameters
    ----------
    shape : tuple of int
        The volume's spatial shape.
    n_blocks : int
        About how many blocks.

    Returns
    -------
    tuple of int
        The block's size per axis.
    """
    edge = max(1, int(round((float(np.prod(shape)) / n_blocks) ** (1.0 / len(shape)))))
    return tuple(min(edge, s) for s in shape)


def block_relevance(relevance: torch.Tensor, block) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The relevance summed over channels and over each block of a regular grid of blocks.

    Parameters
    ----------
    relevance : torch.Tensor
        (C, Z, Y, X).
    block : tuple of int
        The block's size (voxels) per axis; the last block of an axis may be cut by the volume's edge.

    Returns
    -------
    tuple
        (sums, flattened over the grid in C order, float64; the grid's shape in blocks).
    """
    spatial = relevance.shape[1:]
    grid = tuple(-(-s // b) for s, b in zip(spatial, block))
    pads = []
    for s, b, g in reversed(list(zip(spatial, block, grid))):
        pads += [0, g * b - s]
    Rs = F.pad(relevance.double().sum(dim=0)[None, None], pads)[0, 0]
    sums = Rs.reshape(grid[0], block[0], grid[1], block[1], grid[2], block[2]).sum(dim=(1, 3, 5)).flatten()
    return sums, grid


def voxel_blocks(per_block: torch.Tensor, grid, block, spatial) -> torch.Tensor:
    """A value per block (flat, C order of the grid) spread over the block's voxels.

    Parameters
    ----------
    per_block : torch.Tensor
        (number of blocks,).
    grid, block, spatial : tuple of int
        The grid's shape in blocks, the block's size and the volume's shape (Z, Y, X).

    Returns
    -------
    torch.Tensor
        (Z, Y, X).
    """
    out = per_block.reshape(grid)
    for axis, b in enumerate(block):
        out = out.repeat_interleave(b, axis)
    return out[: spatial[0], : spatial[1], : spatial[2]]


def fill_values(x: torch.Tensor, fill: str, foreground: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """The values a flipped voxel takes, for every voxel of ``x`` (fills that do not depend on what is flipped).

    Parameters
    ----------
    x : torch.Tensor
        (1, C, Z, Y, X) model input.
    fill : str
        'mean' (each channel's mean over the foreground), 'zero', 'black' (the input's minimum, Quantus's
        "black"), 'noise' (Gaussian with each channel's mean and sd, seeded) or 'blur' (a 5-voxel box mean).
    foreground : torch.Tensor, optional
        (1, 1, Z, Y, X) bool where 'mean' takes the means (default: voxels with any non-zero channel).
    seed : int
        For 'noise'.

    Returns
    -------
    torch.Tensor
        Like ``x``.
    """
    C = x.shape[1]
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "black":
        return torch.full_like(x, float(x.min()))
    if fill == "mean":
        fg = foreground if foreground is not None else (x.abs().sum(dim=1, keepdim=True) > 0)
        fgf = fg.to(x.dtype)
        n = fgf.sum().clamp(min=1)
        mean = (x * fgf).sum(dim=(0, 2, 3, 4)) / n
        return mean.view(1, C, 1, 1, 1).expand_as(x).clone()
    if fill == "noise":
        g = torch.Generator(device="cpu").manual_seed(seed)
        mean = x.mean(dim=(0, 2, 3, 4)).view(1, C, 1, 1, 1)
        std = x.std(dim=(0, 2, 3, 4)).view(1, C, 1, 1, 1)
        return (mean + std * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device))
    if fill == "blur":
        return F.avg_pool3d(F.pad(x, (2, 2, 2, 2, 2, 2), mode="replicate"), 5, stride=1)
    raise ValueError(f"unknown fill {fill!r}: use one of {', '.join(FILLS)}")


def imputed(x: torch.Tensor, flip: torch.Tensor, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """``x`` with the flipped voxels replaced by ROAD's noisy linear imputation.

    Parameters
    ----------
    x : torch.Tensor
        (1, C, Z, Y, X) model input.
    flip : torch.Tensor
        (Z, Y, X) bool, the voxels removed.
    noise : float
        The noise's sd as a share of each channel's sd over the volume (ROAD's 0.01 on [0, 1] images).
    seed : int
        The noise's seed.

    Returns
    -------
    torch.Tensor
        Like ``x``.
    """
    arr = x[0].double().cpu().numpy()
    sd = noise * arr.reshape(arr.shape[0], -1).std(axis=1)
    out = noisy_linear_imputation(arr, flip.cpu().numpy(), sd, np.random.RandomState(seed))
    return torch.from_numpy(out)[None].to(x.device, x.dtype)


@torch.no_grad()
def region_perturbation(model, x, relevance, target_mask, target_class: int = 1, order: str = "morf",
                        n_blocks: int = 1000, block=None, fill: str = "mean", steps: int = 20, seed: int = 0,
                        batch: int | None = None, foreground=None, cache: dict | None = None) -> PerturbationCurve:
    """Flip blocks of ``x`` in the order the relevance gives and score the model after each step.

    Parameters
    ----------
    model : torch.nn.Module, Model or Propagation
        The network taking ``x`` (a Propagation: its module).
    x : torch.Tensor
        (1, C, Z, Y, X) model input.
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) or (1, C, Z, Y, X) on x's grid.
    target_mask : numpy.ndarray
        (Z, Y, X) region whose class logit sum is the score.
    target_class : int
        The class scored.
    order : str
        'morf' (most relevant first), 'lerf' or 'random' (seeded; independent of the relevance).
    n_blocks : int
        About how many blocks (:func:`block_shape`).
    block : tuple of int, optional
        The block's size instead.
    fill : str
        One of ``FILLS`` (:func:`fill_values`; 'noisy_linear': ROAD's imputation of the flipped voxels from their
        neighbours, solved per step, noise 0.01 of each channel's sd).
    steps : int
        About that many log-spaced steps.
    seed : int
        For 'random' and 'noise'.
    batch : int, optional
        Perturbed volumes per forward pass (default 1 on a CPU, where batches are slower per volume with the
        engine's convolution kernels: 0.103 s against 0.123 s for the sample model; 4 on an accelerator).
    foreground : numpy.ndarray, optional
        (Z, Y, X) bool where 'mean' takes the channel means.
    cache : dict, optional
        Shared by calls on the same x, model, target and fill (a hyper-parameter search): a set of flipped
        blocks scored once is not scored again.

    Returns
    -------
    PerturbationCurve
        The flipped fractions, the scores and the area under the curve.
    """
    net = model
    for attr in ("network", "module"):  # a napari_lrp Model, or a Propagation
        if not isinstance(net, nn.Module) and getattr(net, attr, None) is not None:
            net = getattr(net, attr)
    if isinstance(net, nn.Module):
        p = next(net.parameters(), None)
        dev, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    else:
        dev, dtype = torch.device("cpu"), torch.float32
    x = torch.as_tensor(x).to(dev, dtype)
    if batch is None:
        batch = 1 if dev.type == "cpu" else 4
    if x.ndim != 5:
        raise ValueError(f"x must be (1, C, Z, Y, X), got {tuple(x.shape)}")
    R = torch.as_tensor(np.asarray(relevance) if not isinstance(relevance, torch.Tensor) else relevance)
    R = R.to(dev, torch.float64).reshape(x.shape[1:])
    mask = torch.as_tensor(np.asarray(target_mask)).to(dev).bool()
    spatial = x.shape[2:]
    bs = tuple(block) if block is not None else block_shape(spatial, n_blocks)
    block_scores, grid = block_relevance(R, bs)
    nb = block_scores.numel()
    if order == "morf":
        idx = torch.argsort(block_scores, descending=True, stable=True)
    elif order == "lerf":
        idx = torch.argsort(block_scores, descending=False, stable=True)
    elif order == "random":
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(nb, generator=g).to(dev)
    else:
        raise ValueError(f"unknown order {order!r}: use morf, lerf or random")
    ks = np.unique(np.round(np.logspace(0, np.log10(nb), max(steps, 2))).astype(int))
    ks = np.concatenate([[0], ks[ks <= nb]])
    fg = None if foreground is None else torch.as_tensor(np.asarray(foreground)).to(dev).bool()[None, None]
    filled = None if fill == "noisy_linear" else fill_values(x, fill, fg, seed)
    rank = torch.empty(nb, dtype=torch.long, device=dev)
    rank[idx] = torch.arange(nb, device=dev)
    rank_vox = voxel_blocks(rank, grid, bs, spatial)

    def score(out):
        return (out[:, target_class] * mask).sum(dim=tuple(range(1, out.ndim - 1))).double()

    cache = {} if cache is None else cache
    order_np = idx.cpu().numpy()
    keys = [(bs, fill, seed, np.sort(order_np[: int(k)]).tobytes()) for k in ks]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        flip = torch.stack([rank_vox < int(ks[i]) for i in chunk])[:, None]  # (B, 1, Z, Y, X)
        if filled is None:
            xb = torch.cat([imputed(x, f[0], seed=seed) for f in flip])
        else:
            xb = torch.where(flip, filled, x)
        for i, v in zip(chunk, score(net(xb)).cpu().tolist()):
            cache[keys[i]] = v
    s = np.array([cache[key] for key in keys], dtype=np.float64)
    s0 = s[0] if s[0] != 0 else 1.0
    rel = s / s0
    fr = ks / nb
    auc = float(np.sum((rel[1:] + rel[:-1]) * np.diff(fr)) / 2)
    return PerturbationCurve(order=order, fractions=fr, scores=rel, auc=auc, block=bs, fill=fill)
