"""What runs around a network that brings its own pre-processing and windows (an nnU-Net results folder,
a MONAI bundle): the :class:`ModelPipeline` protocol both implement, and the two questions a run asks of it.

This module imports no other module of ``models`` (``card.Model`` refers to it), so models, cases and
inputs are described in the docstrings rather than imported for annotations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["ModelPipeline", "pipeline_input", "pipeline_windows"]


@runtime_checkable
class ModelPipeline(Protocol):
    """A model's own pipeline: pre-processing to its grid, sliding windows, the way back to the case.

    Attributes
    ----------
    window : tuple of int or None
        Window size (Z, Y, X) on the model grid; None: the whole model grid in one window.
    overlap : float
        Fraction of a window shared with its neighbour.
    blend : str
        How windows are blended ('nnunet', 'gaussian', 'constant').
    """

    window: tuple[int, int, int] | None
    overlap: float
    blend: str

    def prepare(self, case, modalities: list[str], network, device: torch.device, dtype=torch.float32,
                source: str = ""):
        """The case on the model's grid (channels by name, pre-processed), with the way back.

        Parameters
        ----------
        case : Case
            The case.
        modalities : list of str
            The model's input channels (matched to the case's by name).
        network : torch.nn.Module
            The model's network.
        device : torch.device
            Where it runs.
        dtype : torch.dtype
            The network's parameter type.
        source : str
            Named in refusals.

        Returns
        -------
        PreparedInput
            The model-grid input and the maps between the grids.
        """

    def settings(self) -> dict:
        """What the run's settings record about the pipeline (JSON-able; empty when nothing)."""


def pipeline_input(m, case):
    """``case`` pre-processed by ``m``'s own pipeline, in the network's dtype.

    Parameters
    ----------
    m : Model
        A model with a pipeline.
    case : Case
        The case.

    Returns
    -------
    PreparedInput
        The model-grid input (1, C, Z', Y', X') and the maps between the grids.
    """
    param = next(m.network.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    return m.pipeline.prepare(case, m.card.modalities, m.network, m.device, dtype, source=case.name)


def pipeline_windows(m, prep) -> tuple:
    """(window, overlap, blend) of ``m``'s pipeline over ``prep``.

    Parameters
    ----------
    m : Model
        A model with a pipeline.
    prep : PreparedInput
        Its input (a pipeline without windows, MONAI's SimpleInferer, takes the whole model grid).

    Returns
    -------
    tuple
        (window (Z, Y, X), overlap, blend).
    """
    p = m.pipeline
    window = p.window or tuple(int(v) for v in prep.x.shape[2:])
    return window, p.overlap, p.blend if p.window else "constant"
