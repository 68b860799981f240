"""The 3D U-Net of Tjoa et al. (ISLES 2017), after Cicek et al. (2016)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet3D"]


def _double_conv(cin: int, cmid: int, cout: int, slope: float, bias: bool = True,
                 dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Conv3d(cin, cmid, 3, padding=1, bias=bias), nn.BatchNorm3d(cmid), nn.LeakyReLU(slope),
              nn.Conv3d(cmid, cout, 3, padding=1, bias=bias), nn.BatchNorm3d(cout), nn.LeakyReLU(slope)]
    if dropout > 0:  # last, so the layers' names (and the weights' keys) do not move
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _crop_to(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop the spatial axes of t (N, C, Z, Y, X) to ref's size, from the start (ceil-mode pooling pads at the end)."""
    z, y, x = ref.shape[2:]
    return t[:, :, :z, :y, :x]


class UNet3D(nn.Module):
    """The paper's 3D U-Net: ``levels`` levels of 2 x (Conv3d k3 p1 -> BatchNorm3d -> LeakyReLU 0.2).

    Level l (1-based) of the encoder has widths w*2^(l-1) then w*2^l; MaxPool3d(2, ceil_mode=True)
    between levels; the decoder upsamples with ConvTranspose3d(k2, s2), crops to the skip's size (odd
    sizes such as depth 19 need it), concatenates the skip (torch.cat) and applies two convolutions;
    a 1x1x1 head gives ``out_channels`` logits. Width 32 with 6 inputs: about 19M parameters.
    Input (N, in_channels, Z, Y, X), any size; output (N, out_channels, Z, Y, X). ``dropout`` > 0 ends
    every block with ``nn.Dropout(dropout)`` (Monte Carlo dropout; no weights, so the weights' keys are those
    of the network without it).
    """

    def __init__(self, in_channels: int = 6, out_channels: int = 2, width: int = 32, levels: int = 4,
                 negative_slope: float = 0.2, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels, self.width, self.levels = in_channels, out_channels, width, levels
        w = width
        self.encoders = nn.ModuleList()
        cin = in_channels
        for level in range(levels):
            cmid = w * 2**level
            self.encoders.append(_double_conv(cin, cmid, 2 * cmid, negative_slope, bias, dropout))
            cin = 2 * cmid
        self.pool = nn.MaxPool3d(2, ceil_mode=True)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            skip = 2 * w * 2**level
            self.ups.append(nn.ConvTranspose3d(cin, cin, 2, stride=2, bias=bias))
            self.decoders.append(_double_conv(cin + skip, skip, skip, negative_slope, bias, dropout))
            cin = skip
        self.head = nn.Conv3d(cin, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the segmentation.

        Parameters
        ----------
        x : torch.Tensor
            (N, in_channels, Z, Y, X), any size (ceil-mode pooling and crops handle odd sizes).

        Returns
        -------
        torch.Tensor
            (N, K, Z, Y, X).
        """
        skips = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            skip = skips.pop()
            x = _crop_to(up(x), skip)
            x = dec(torch.cat([skip, x], dim=1))
        return self.head(x)

    def lrp_blocks(self, which: str = "all") -> list[str]:
        """Block names for filters after every block.

        Parameters
        ----------
        which : str
            'all', 'encoder' or 'decoder'.

        Returns
        -------
        list of str
            'encoders.i' and / or 'decoders.i'.
        """
        enc = [f"encoders.{i}" for i in range(len(self.encoders))]
        dec = [f"decoders.{i}" for i in range(len(self.decoders))]
        return {"all": enc + dec, "encoder": enc, "decoder": dec}[which]
