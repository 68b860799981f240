"""Inclusivity, mean power and signal distribution, vectorised in torch.

All functions take numpy arrays or torch tensors. Relevance and images are (C, Z, Y, X) (any number
of spatial axes after C); labels are (Z, Y, X).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..io.labels import ground_truth_mask

__all__ = ["Coefficients", "dice", "groundtruth_inclusivity", "inclusivities", "inclusivity", "input_inclusivity",
           "input_mask", "mean_power", "signal_distribution", "SMOOTHING"]

SMOOTHING = 1e-9


class Coefficients(NamedTuple):
    """per_channel: float64 (C,) (NaN where undefined); mean: NaN-ignoring mean over channels."""

    per_channel: np.ndarray
    mean: float


def _t(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(a))


def inclusivity(a, b) -> float:
    """D(a, b) = |a ∩ b| / (|b| + 1e-9) for binary masks a, b.

    Parameters
    ----------
    a, b : numpy.ndarray or torch.Tensor
        Binary masks of one shape.

    Returns
    -------
    float
        NaN when b is empty.
    """
    a, b = _t(a).bool(), _t(b).bool()
    nb = int(b.sum())
    if nb == 0:
        return float("nan")
    return int((a & b).sum()) / (nb + SMOOTHING)


def _ground_truth(label) -> torch.Tensor:
    """The one binarisation (:func:`napari_lrp.io.labels.ground_truth_mask`) as a bool tensor."""
    if isinstance(label, torch.Tensor):
        label = label.cpu().numpy()
    return torch.from_numpy(np.ascontiguousarray(ground_truth_mask(label)))


def _relevance_masks(relevance, tau_r: float, signed: bool) -> torch.Tensor:
    R = _t(relevance).float()
    flat = R.reshape(R.shape[0], -1)
    mx = torch.maximum(flat.amax(dim=1), -flat.amin(dim=1))
    view = (-1,) + (1,) * (R.ndim - 1)
    thr = (tau_r * mx).view(view)
    # |R_c| / max |R_c| >= tau  <=>  |R_c| >= tau * max |R_c|; an all-zero channel selects nothing
    if signed:
        return (R >= thr) & (mx.view(view) > 0)
    return ((R >= thr) | (R <= -thr)) & (mx.view(view) > 0)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True values per row of a 2D bool tensor, as float64 (summing bytes is ~10x faster than bools)."""
    dtype = torch.int32 if mask.shape[1] < 2**31 else torch.int64  # int32 accumulation is much faster on CPU
    return mask.contiguous().view(torch.uint8).sum(dim=1, dtype=dtype).double()


def _coefficients(a: torch.Tensor, b: torch.Tensor) -> Coefficients:
    C = a.shape[0]
    a2 = a.reshape(C, -1)
    b2 = b.reshape(b.shape[0], -1).expand(C, -1) if b.shape[0] in (1, C) else None
    inter = _count(a2 & b2)
    nb = _count(b2)
    d = torch.where(nb > 0, inter / (nb + SMOOTHING), torch.full_like(nb, float("nan"))).numpy()
    mean = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
    return Coefficients(d, mean)


def input_mask(image, tau_x: float = 0.1) -> torch.Tensor:
    """The image-signal mask b_c = |x_c| / max |x_c| > tau_x (strictly).

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) intensities.
    tau_x : float
        The threshold as a fraction of each channel's maximum |x|.

    Returns
    -------
    torch.Tensor
        (C, Z, Y, X) bool; an all-zero channel selects nothing.
    """
    x = _t(image).float().abs()
    mx = x.reshape(x.shape[0], -1).amax(dim=1).view((-1,) + (1,) * (x.ndim - 1))
    return (x > tau_x * mx) & (mx > 0)


def inclusivities(relevance, image_mask, label=None, tau_r: float = 0.5,
                  signed: bool = False) -> tuple[Coefficients, Coefficients | None]:
    """Input and ground-truth inclusivity from one relevance mask: the slider path of the docks.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) relevance.
    image_mask : torch.Tensor
        :func:`input_mask` of the image (it does not change while filters move).
    label, tau_r, signed
        As for :func:`groundtruth_inclusivity`.

    Returns
    -------
    tuple
        (input inclusivity, ground-truth inclusivity or None), each a :class:`Coefficients`.
    """
    a = _relevance_masks(relevance, tau_r, signed)
    ii = _coefficients(a, torch.as_tensor(image_mask))
    gi = _coefficients(a, _ground_truth(label)[None]) if label is not None else None
    return ii, gi


def input_inclusivity(relevance, image, tau_r: float = 0.5, tau_x: float = 0.1, signed: bool = False) -> Coefficients:
    """Per channel D(a_c, b_c) with a_c the strongly relevant voxels, b_c the image signal.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) relevance.
    image : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) intensities.
    tau_r : float
        A voxel is strongly relevant when |R_c| >= tau_r max |R_c|.
    signed : bool
        Use R_c / max |R_c| >= tau_r instead (evidence for the class only).
    tau_x : float
        b_c = |x_c| / max |x_c| > tau_x.

    Returns
    -------
    Coefficients
        ``per_channel`` (C,) float64 (NaN where undefined) and ``mean``, the NaN-ignoring mean.
    """
    return _coefficients(_relevance_masks(relevance, tau_r, signed), input_mask(image, tau_x))


def groundtruth_inclusivity(relevance, label, tau_r: float = 0.5, signed: bool = False) -> Coefficients:
    """Per channel D(a_c, ground truth) with a_c as in :func:`input_inclusivity`.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) relevance.
    label : numpy.ndarray or None
        (Z, Y, X) ground-truth mask or binary label (any non-zero voxel; a multi-label array is refused).
    tau_r : float
        A voxel is strongly relevant when |R_c| >= tau_r max |R_c|.
    signed : bool
        Use R_c / max |R_c| >= tau_r instead (evidence for the class only).

    Returns
    -------
    Coefficients
        ``per_channel`` (C,) float64 (NaN where undefined) and ``mean``, the NaN-ignoring mean.
    """
    a = _relevance_masks(relevance, tau_r, signed)
    b = _ground_truth(label)[None]
    return _coefficients(a, b)


def _mp_part(v: np.ndarray, q: float) -> float:
    n = v.size
    if n < 2:
        return 1.0
    k = min(max(int(np.floor(q * n)), 1), n - 1)
    part = np.partition(v, k)
    bottom = float(part[:k].mean(dtype=np.float64))
    top = float(part[k:].mean(dtype=np.float64))
    return top / max(bottom, 1e-9)


def mean_power(relevance, q: float = 0.8, per_channel: bool = False):
    """Mean power (mp, mp_plus, mp_minus) of a relevance tensor.

    For the positive values and for the absolute negative values separately: sort, split at the q quantile
    (bottom floor(q n) values), MP± = mean(top) / max(mean(bottom), 1e-9); 1.0 with fewer than two values;
    mp = (MP+ + MP-) / 2. Scale-invariant.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) relevance.
    q : float
        The quantile that splits bottom from top (0.8: the strongest 20 %).
    per_channel : bool
        Three (C,) arrays instead of three numbers.

    Returns
    -------
    tuple
        (mp, mp_plus, mp_minus).
    """
    R = _t(relevance).float().numpy()
    if per_channel:
        rows = [mean_power(R[c], q) for c in range(R.shape[0])]
        return tuple(np.array(col) for col in zip(*rows))
    flat = R.ravel()
    plus = _mp_part(flat[flat > 0], q)
    minus = _mp_part(-flat[flat < 0], q)
    return (plus + minus) / 2, plus, minus


def signal_distribution(relevance) -> np.ndarray:
    """mu_c = mean over voxels of R_c / max |R_c| for each channel.

    Parameters
    ----------
    relevance : numpy.ndarray or torch.Tensor
        (C, Z, Y, X) relevance.

    Returns
    -------
    numpy.ndarray
        (C,); 0 for an all-zero channel.
    """
    R = _t(relevance).float()
    flat = R.reshape(R.shape[0], -1)
    mx = flat.abs().amax(dim=1)
    mu = flat.double().mean(dim=1) / torch.where(mx > 0, mx, torch.ones_like(mx)).double()
    return mu.numpy()


def dice(prediction, label, cls: int = 1, multilabel: bool = False) -> float:
    """Dice of the predicted region of a class (prediction == cls, or bit cls) against the ground truth.

    Parameters
    ----------
    prediction : numpy.ndarray
        (Z, Y, X) class indices, or region bits for a model of independent sigmoid regions.
    label : numpy.ndarray or None
        (Z, Y, X) ground-truth mask or binary label (any non-zero voxel; a multi-label array is refused).
    cls : int
        The class (or region) compared.
    multilabel : bool
        ``prediction`` holds one bit per region (``lrp.targets.predict`` of several sigmoid channels).

    Returns
    -------
    float
        NaN without a label, 1 when both are empty.
    """
    if label is None:
        return float("nan")
    p = ((_t(prediction).to(torch.int32) >> cls) & 1).bool() if multilabel else _t(prediction) == cls
    g = _ground_truth(label)
    den = int(p.sum()) + int(g.sum())
    return 2.0 * int((p & g).sum()) / den if den else 1.0
