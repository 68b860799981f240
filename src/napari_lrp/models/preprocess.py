"""Feeding a case to a model as its card says: channel matching, intensity, padding to the model grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io.channels import match_channels
from .card import ModelCard, ModelError

__all__ = ["match_modalities", "normalise_intensity", "divisible_padding", "window_padding", "pad_spatial",
           "PreparedInput", "prepare_input", "ResizedNetwork"]


def match_modalities(case_modalities: list[str], model_modalities: list[str], source: str = "case") -> list[int]:
    """The case's channels in the model's order, matched by name, never by position.

    Names match ignoring case and punctuation, every BraTS release's spelling of one sequence the same
    (:func:`napari_lrp.io.channels.match_channels`).

    Parameters
    ----------
    case_modalities : list of str
        The case's channel names.
    model_modalities : list of str
        The model's input channel names, in its order.
    source : str
        Named in refusals.

    Returns
    -------
    list of int
        Indices into the case's channels.

    Raises
    ------
    ModelError
        Naming a missing channel.
    """
    try:
        return match_channels(case_modalities, model_modalities, source)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def normalise_intensity(image: np.ndarray, mode: str) -> tuple[np.ndarray, tuple | None]:
    """Per-channel intensity normalisation.

    Parameters
    ----------
    image : numpy.ndarray
        (C, Z, Y, X).
    mode : str
        'minmax' (each channel to [0, 1] over the whole volume), 'zscore' (zero mean and unit variance over
        the channel's non-zero voxels) or 'none' (unchanged).

    Returns
    -------
    tuple
        (normalised float32 image, z-box bounds: (0, 1) for minmax, None otherwise (the data's own range)).
    """
    image = np.asarray(image, dtype=np.float32)
    if mode == "none":
        return image, None
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        v = image[c]
        if mode == "minmax":
            lo, hi = float(v.min()), float(v.max())
            out[c] = (v - lo) / (hi - lo) if hi > lo else 0.0
        elif mode == "zscore":
            fg = v[v != 0]
            fg = fg if fg.size else v.ravel()
            mu, sd = float(fg.mean()), float(fg.std())
            out[c] = (v - mu) / sd if sd > 0 else v - mu
        else:
            raise ModelError(f"unknown intensity normalisation {mode!r}")
    return out, ((0.0, 1.0) if mode == "minmax" else None)


def window_padding(shape, window) -> list[tuple[int, int]]:
    """(before, after) per axis up to at least ``window`` voxels, half before.

    As nnU-Net's ``pad_nd_image`` and MONAI's sliding window pad.

    Parameters
    ----------
    shape : tuple of int
        The spatial shape.
    window : tuple of int
        The window.

    Returns
    -------
    list of (int, int)
    """
    return [(d // 2, d - d // 2) for d in (max(int(w) - int(s), 0) for s, w in zip(shape, window))]


def pad_spatial(t: torch.Tensor, pads) -> torch.Tensor:
    """Zero-pad the last three axes of a tensor (unchanged without padding).

    Parameters
    ----------
    t : torch.Tensor
        (..., Z, Y, X).
    pads : list of (int, int)
        (before, after) per spatial axis.

    Returns
    -------
    torch.Tensor
    """
    flat = [v for b, a in reversed(pads) for v in (b, a)]
    return F.pad(t, flat) if any(flat) else t


def divisible_padding(shape, k: int) -> list[tuple[int, int]]:
    """Symmetric (before, after) padding per axis so each size is divisible by k (MONAI DivisiblePad style).

    Parameters
    ----------
    shape : tuple of int
        The spatial shape.
    k : int
        The divisor.

    Returns
    -------
    list of (int, int)
    """
    pads = []
    for s in shape:
        total = (-s) % k if k > 1 else 0
        pads.append((total // 2, total - total // 2))
    return pads


class ResizedNetwork(nn.Module):
    """Runs ``network`` on a fixed model grid: trilinear resize in, logits resized back to the case grid.

    Both resizes are interpolations, which the relevance engine treats with the epsilon rule, so the
    relevance comes out on the case grid.
    """

    def __init__(self, network: nn.Module, model_size, case_size):
        super().__init__()
        self.network = network
        self.model_size = tuple(int(s) for s in model_size)
        self.case_size = tuple(int(s) for s in case_size)

    def forward(self, x):
        """The network's logits on the case grid: resize in, run, resize back.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, Z, Y, X) on the case grid.

        Returns
        -------
        torch.Tensor
            (N, K, Z, Y, X).
        """
        x = F.interpolate(x, size=self.model_size, mode="trilinear", align_corners=False)
        y = self.network(x)
        return F.interpolate(y, size=self.case_size, mode="trilinear", align_corners=False)


@dataclass
class PreparedInput:
    """x: (1, C, Z', Y', X') float32 on the model's input grid; pads: (before, after) per spatial axis;
    channels: indices into the case's channels; bounds: z-box bounds; network: what to run on x."""

    x: torch.Tensor
    pads: list[tuple[int, int]]
    channels: list[int]
    bounds: tuple | None
    network: nn.Module

    def crop(self, t):
        """Crop the padded spatial axes (the last three) back to the case grid.

        Parameters
        ----------
        t : torch.Tensor
            (..., Z', Y', X') on the model grid.

        Returns
        -------
        torch.Tensor
            (..., Z, Y, X).
        """
        sl = tuple(slice(b, t.shape[-3 + i] - a) for i, (b, a) in enumerate(self.pads))
        return t[(...,) + sl]

    def pad(self, t):
        """Zero-pad a case-grid tensor (last three axes) to the model grid.

        Parameters
        ----------
        t : torch.Tensor
            (..., Z, Y, X).

        Returns
        -------
        torch.Tensor
            (..., Z', Y', X').
        """
        return pad_spatial(t, self.pads)

    #: whether the model grid is a resampled grid whose maps below book relevance (nnU-Net, bundles)
    maps_grid: ClassVar[bool] = False

    # the maps between the model grid and the case grid (tiling.py uses these; nnU-Net's input overrides them)
    def outputs_to_case(self, blended: torch.Tensor) -> torch.Tensor:
        """The network's outputs on the case grid.

        Parameters
        ----------
        blended : torch.Tensor
            (1, K, model grid) outputs (blended over windows).

        Returns
        -------
        torch.Tensor
            (1, K, Z, Y, X).
        """
        return self.crop(blended)

    def label_on_case(self, blended: torch.Tensor) -> np.ndarray | None:
        """The label the model's own postprocessing makes (a bundle's); None: napari-lrp's prediction from the
        logits on the case grid.

        Parameters
        ----------
        blended : torch.Tensor
            (1, K, model grid) outputs.

        Returns
        -------
        numpy.ndarray or None
            uint8 (Z, Y, X).
        """
        return None

    def start_to_model(self, start: torch.Tensor, blended: torch.Tensor):
        """Start relevance from the case grid to the model grid.

        Parameters
        ----------
        start : torch.Tensor
            (1, K, Z, Y, X).
        blended : torch.Tensor
            The model-grid outputs (the maps that resample use them).

        Returns
        -------
        tuple
            (start relevance on the model grid, the relevance that stays behind (absorbed) as a float).
        """
        return self.pad(start), 0.0

    def relevance_to_case(self, total: torch.Tensor) -> torch.Tensor:
        """Input relevance from the model grid to the case grid.

        Parameters
        ----------
        total : torch.Tensor
            (1, C, model grid).

        Returns
        -------
        torch.Tensor
            (1, C, Z, Y, X).
        """
        return self.crop(total)


def prepare_input(image: np.ndarray, modalities: list[str], card: ModelCard, network: nn.Module,
                  device: torch.device, source: str = "case") -> PreparedInput:
    """A case's image as the network's input, as the card describes it.

    Channels picked by name, intensities normalised, padded to the card's divisibility (or resized to its fixed
    size, the network then wrapped to resize back).

    Parameters
    ----------
    image : numpy.ndarray
        (C, Z, Y, X) on the case grid.
    modalities : list of str
        The case's channel names.
    card : ModelCard
        The model's card.
    network : torch.nn.Module
        The model's network.
    device : torch.device
        Where it runs.
    source : str
        Named in refusals.

    Returns
    -------
    PreparedInput
    """
    channels = match_modalities(modalities, card.modalities, source)
    img, bounds = normalise_intensity(image[channels], card.intensity)
    x = torch.from_numpy(img)[None]
    case_size = img.shape[1:]
    pads = [(0, 0)] * 3
    if card.spatial_size is not None and tuple(card.spatial_size) != tuple(case_size):
        network = ResizedNetwork(network, card.spatial_size, case_size)
    else:
        pads = divisible_padding(case_size, card.divisible)
        x = pad_spatial(x, pads)
    param = next(network.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    return PreparedInput(x=x.to(device=device, dtype=dtype), pads=pads, channels=channels, bounds=bounds,
                         network=network)
