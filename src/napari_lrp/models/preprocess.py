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
    """Indices into the case's channels in the model's order, matched by name (ignoring case and punctuation,
    every BraTS release's spelling of one sequence the same: :func:`napari_lrp.io.channels.match_channels`);
    never by position. ModelError names a missing channel."""
    try:
        return match_channels(case_modalities, model_modalities, source)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def normalise_intensity(image: np.ndarray, mode: str) -> tuple[np.ndarray, tuple | None]:
    """Per-channel intensity normalisation of (C, Z, Y, X) -> (normalised float32, z-box bounds or None).

    minmax: each channel to [0, 1] over the whole volume (bounds (0, 1)); zscore: zero mean and unit
    variance over the channel's non-zero voxels (bounds None: the data's own range); none: unchanged.
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
    """(before, after) per axis up to at least ``window`` voxels, half before (nnU-Net's ``pad_nd_image``,
    MONAI's sliding window)."""
    return [(d // 2, d - d // 2) for d in (max(int(w) - int(s), 0) for s, w in zip(shape, window))]


def pad_spatial(t: torch.Tensor, pads) -> torch.Tensor:
    """Zero-pad the last three axes of ``t`` by (before, after) per axis (unchanged without padding)."""
    flat = [v for b, a in reversed(pads) for v in (b, a)]
    return F.pad(t, flat) if any(flat) else t


def divisible_padding(shape, k: int) -> list[tuple[int, int]]:
    """Symmetric (before, after) padding per axis so each size is divisible by k (MONAI DivisiblePad style)."""
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
        """Crop the padded spatial axes (the last three) back to the case grid."""
        sl = tuple(slice(b, t.shape[-3 + i] - a) for i, (b, a) in enumerate(self.pads))
        return t[(...,) + sl]

    def pad(self, t):
        """Zero-pad a case-grid tensor (last three axes) to the model grid."""
        return pad_spatial(t, self.pads)

    #: whether the model grid is a resampled grid whose maps below book relevance (nnU-Net, bundles)
    maps_grid: ClassVar[bool] = False

    # the maps between the model grid and the case grid (tiling.py uses these; nnU-Net's input overrides them)
    def outputs_to_case(self, blended: torch.Tensor) -> torch.Tensor:
        """Outputs (1, K, model grid) -> (1, K, Z, Y, X) on the case grid."""
        return self.crop(blended)

    def start_to_model(self, start: torch.Tensor, blended: torch.Tensor):
        """Start relevance on the case grid -> the model grid; and the relevance that stays behind (absorbed)."""
        return self.pad(start), 0.0

    def relevance_to_case(self, total: torch.Tensor) -> torch.Tensor:
        """Input relevance (1, C, model grid) -> (1, C, Z, Y, X) on the case grid."""
        return self.crop(total)


def prepare_input(image: np.ndarray, modalities: list[str], card: ModelCard, network: nn.Module,
                  device: torch.device, source: str = "case") -> PreparedInput:
    """Case image (C, Z, Y, X) -> the network's input as the card describes."""
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
