"""Start relevance at the network output ('Target' in docs/method.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MAX_REGIONS", "RegionTarget", "class_view", "is_multilabel", "predict", "region_mask", "start_relevance",
           "target_of", "needs_ground_truth"]

#: the most sigmoid regions a multi-label prediction holds (one bit each of a uint8 voxel)
MAX_REGIONS = 8


@dataclass(frozen=True)
class RegionTarget:
    """A target whose voxels follow from the prediction (a lesion, a miss, a border band), resolved above the
    engine: ``name`` is the spec it came from (what the settings record), ``region(prediction)`` gives the
    bool mask (Z, Y, X) from the class map (Z, Y, X); ``against``: a class whose logit enters the start
    relevance with the opposite sign (a contrast: evidence for the target class rather than that one)."""

    name: str
    region: Callable[[np.ndarray], np.ndarray]
    against: int | None = None


#: the target names of the case's ground-truth region
GROUND_TRUTH_TARGETS = ("groundtruth", "ground truth", "label", "gt")

def is_multilabel(activation: str, n_outputs: int) -> bool:
    """Whether a model's outputs are independent regions (several sigmoid channels) rather than classes.

    Parameters
    ----------
    activation : str
        The card's output activation.
    n_outputs : int
        The number of output channels.

    Returns
    -------
    bool
        True for two or more sigmoid channels (BraTS' whole tumour / tumour core / enhancing tumour).
    """
    return activation == "sigmoid" and n_outputs > 1


def predict(logits: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """The prediction from logits: a class map, or for independent sigmoid regions one bit per region.

    Softmax (and 'none'): the argmax. One sigmoid channel: logit > 0 (value 1). Several sigmoid channels
    (multi-label, overlapping regions such as BraTS' whole tumour / core / enhancing): voxel value
    sum over k of 2**k [logit_k > 0], so region k is bit k (sigmoid > 0.5, as MONAI's AsDiscrete(threshold=0.5)
    and nnU-Net's region prediction threshold it); nested regions read as 1, 3, 7, ...

    Parameters
    ----------
    logits : torch.Tensor
        (N, K, *spatial).
    activation : str
        'softmax', 'sigmoid' or 'none' (the card's output activation).

    Returns
    -------
    torch.Tensor
        (N, *spatial) uint8.
    """
    if is_multilabel(activation, logits.shape[1]):
        if logits.shape[1] > MAX_REGIONS:
            raise ValueError(f"the model has {logits.shape[1]} sigmoid output channels (independent regions); "
                             f"napari-lrp holds at most {MAX_REGIONS} regions per voxel (one bit each)")
        bits = (2 ** torch.arange(logits.shape[1], device=logits.device)).view(1, -1, *([1] * (logits.ndim - 2)))
        return ((logits > 0).to(torch.int32) * bits).sum(dim=1).to(torch.uint8)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(dim=1).to(torch.uint8)


def class_view(prediction: np.ndarray, target_class: int, multilabel: bool) -> np.ndarray:
    """The prediction as one class sees it: equal to ``target_class`` exactly on that class's predicted region.

    For a class map this is the map itself. For independent regions (bit k of :func:`predict`'s value) region
    ``target_class`` becomes that value and every other voxel 255, so that the region targets (``== class``,
    ``!= class``: components, misses, borders) read the region of the class explained.

    Parameters
    ----------
    prediction : numpy.ndarray
        (Z, Y, X) uint8 from :func:`predict`.
    target_class : int
        The class or region.
    multilabel : bool
        Whether the prediction holds region bits (:func:`is_multilabel`).

    Returns
    -------
    numpy.ndarray
        (Z, Y, X) uint8.
    """
    if not multilabel:
        return prediction
    on = (np.asarray(prediction) >> target_class) & 1
    return np.where(on > 0, np.uint8(target_class), np.uint8(255))


def region_mask(target, prediction: np.ndarray, ground_truth: np.ndarray | None,
                target_class: int) -> np.ndarray | None:
    """Binary mask M (Z, Y, X) for a region target.

    Parameters
    ----------
    target : str, RegionTarget or numpy.ndarray
        'region' or 'predicted' (the predicted region of the class), 'groundtruth' (the case's ground-truth
        region), 'output', a researcher's target (``RegionTarget``), a boolean/integer mask array (non-zero
        voxels) or a voxel (z, y, x).
    prediction : numpy.ndarray
        (Z, Y, X) class map.
    ground_truth : numpy.ndarray or None
        (Z, Y, X) bool, for the ground-truth targets.
    target_class : int
        The class explained.

    Returns
    -------
    numpy.ndarray or None
        (Z, Y, X) bool; None for the 'output' target.
    """
    if isinstance(target, RegionTarget):
        return np.asarray(target.region(prediction), dtype=bool)
    if isinstance(target, str):
        t = target.lower()
        if t in ("region", "predicted", "prediction"):
            return prediction == target_class
        if t in GROUND_TRUTH_TARGETS:
            if ground_truth is None:
                raise ValueError("target 'groundtruth' needs a case with a label")
            return np.asarray(ground_truth, dtype=bool)
        if t == "output":
            return None
        raise ValueError(f"unknown target {target!r}: use region, groundtruth, output, a mask or a voxel (z, y, x)")
    if isinstance(target, (tuple, list)) and len(target) == 3 and all(np.isscalar(v) for v in target):
        m = np.zeros(prediction.shape, dtype=bool)
        z, y, x = (int(v) for v in target)
        if not all(0 <= v < s for v, s in zip((z, y, x), prediction.shape)):
            raise ValueError(f"voxel target {tuple(target)} lies outside the volume {prediction.shape}")
        m[z, y, x] = True
        return m
    mask = np.asarray(target)
    if mask.shape != prediction.shape:
        raise ValueError(f"target mask has shape {mask.shape}, the case {prediction.shape}")
    return mask > 0


def start_relevance(logits: torch.Tensor, mask: np.ndarray | None, target_class: int,
                    against: int | None = None) -> torch.Tensor:
    """The start relevance: R = y_c M for class c (other classes 0), or the output itself without a mask.

    With ``against`` = b also R_b = -y_b M (the contrast y_c - y_b over M, zennit/CRP's contrastive start).

    Parameters
    ----------
    logits : torch.Tensor
        (1, K, Z, Y, X) on the case grid.
    mask : numpy.ndarray or None
        (Z, Y, X) bool.
    target_class : int
        c.
    against : int, optional
        b.

    Returns
    -------
    torch.Tensor
        Like ``logits``.
    """
    if mask is None:
        return logits.detach().clone()
    R = torch.zeros_like(logits)
    m = torch.as_tensor(np.ascontiguousarray(mask), device=logits.device, dtype=logits.dtype)
    R[:, target_class] = logits[:, target_class].detach() * m
    if against is not None:
        if not 0 <= against < logits.shape[1] or against == target_class:
            raise ValueError(f"contrast against class {against}: it must be another of the model's "
                             f"{logits.shape[1]} classes")
        R[:, against] = -logits[:, against].detach() * m
    return R


def needs_ground_truth(target) -> bool:
    """Whether a target names the ground-truth region.

    Parameters
    ----------
    target : object
        A target as :func:`region_mask` takes it.

    Returns
    -------
    bool
        True for 'groundtruth', 'ground truth', 'label' and 'gt' (any case).
    """
    return isinstance(target, str) and target.lower() in GROUND_TRUTH_TARGETS


def target_of(logits: torch.Tensor, activation: str, target, target_class: int, ground_truth=None,
              name: str = "case", prediction: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The prediction and the target's mask from logits on the case grid.

    Refuses a class the model does not have; warns when the target region is empty.

    Parameters
    ----------
    logits : torch.Tensor
        (1, K, Z, Y, X).
    activation : str
        The card's output activation.
    target : object
        As for :func:`region_mask`.
    target_class : int
        The class explained.
    ground_truth : callable, optional
        Gives the ground-truth region of the class (asked only for that target).
    name : str
        The case's name, for messages.
    prediction : numpy.ndarray, optional
        The model's own label (Z, Y, X) uint8 (a bundle's postprocessing); default: from the logits.

    Returns
    -------
    tuple
        (prediction (Z, Y, X) uint8, target mask (Z, Y, X) bool or None).
    """
    import warnings

    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(f"target class {target_class} does not exist; the model has {logits.shape[1]} output "
                         "channels")
    if prediction is None:
        prediction = predict(logits, activation)[0].cpu().numpy()
    truth = ground_truth() if needs_ground_truth(target) and ground_truth is not None else None
    view = class_view(prediction, target_class, is_multilabel(activation, logits.shape[1]))
    mask = region_mask(target, view, truth, target_class)
    if mask is not None and not mask.any():
        warnings.warn(f"{name}: the target region is empty; the relevance is zero", stacklevel=3)
    return prediction, mask
