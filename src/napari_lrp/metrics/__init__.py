"""Interpretability measures on arrays (numpy/torch, no napari): inclusivity, mean power, signal
distribution, the coefficient table, region perturbation and the paper's charts. Sweeps over an
Explanation live in :mod:`napari_lrp.analysis.sweep`."""

from .measures import (
    Coefficients,
    dice,
    groundtruth_inclusivity,
    inclusivities,
    inclusivity,
    input_inclusivity,
    input_mask,
    mean_power,
    signal_distribution,
)
from .perturbation import PerturbationCurve, region_perturbation
from .table import measure


def layer_mean_power(result, q: float = 0.8) -> dict[str, float]:
    """Mean power of every kept layer of a propagation.

    Parameters
    ----------
    result : Explanation or PropagationResult
        A run with kept layers (``keep=True``).
    q : float
        The quantile of :func:`mean_power`.

    Returns
    -------
    dict[str, float]
        {layer name: mp}.
    """
    kept = result.kept
    return {name: float(mean_power(R[0] if R.ndim > 1 else R, q)[0]) for name, R in kept.items()}


__all__ = ["Coefficients", "dice", "groundtruth_inclusivity", "inclusivities", "inclusivity", "input_inclusivity",
           "input_mask", "layer_mean_power", "mean_power", "measure", "PerturbationCurve", "region_perturbation",
           "signal_distribution"]
