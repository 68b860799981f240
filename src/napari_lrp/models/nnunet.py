"""nnU-Net v2 results folders: the network as nnU-Net builds it, its pre-processing, back to the case.

A results folder (``.../DatasetXXX_Name/<trainer>__<plans>__<configuration>``) holds ``dataset.json``
(``channel_names``, ``labels``), ``plans.json`` (one entry per configuration) and ``fold_N/checkpoint_final.pth``
(``network_weights``, ``init_args``, ``trainer_name``, ``inference_allowed_mirroring_axes``).
:func:`load_nnunet` builds the configuration's ``dynamic_network_architectures`` class (the allow-list: that
package's ``architectures`` and ``torch.nn`` classes for the ``_kw_requires_import`` arguments), loads every
chosen fold with ``torch.load(weights_only=True)`` and averages the folds' outputs (:class:`FoldEnsemble`; the
relevance of the averaged output is the mean of the folds' relevance when the start is the output).

Pre-processing as nnU-Net's ``DefaultPreprocessor`` (tested against nnunetv2): the case in SimpleITK's axis
order (the file's voxel order reversed, so the file's orientation, not napari's), ``transpose_forward``, crop
to the bounding box of the non-zero region (holes filled), the channel's normalisation (ZScore over the
non-zero region when ``use_mask_for_norm``, CT with the dataset's percentiles, NoNormalization,
RescaleTo01), resampling to the configuration's spacing (:mod:`napari_lrp.models.resampling`), zero padding
to at least the patch size. Prediction as ``nnUNetPredictor``: Gaussian-weighted sliding windows of the patch
size with step 0.5 (its window placement and its float16 importance map), optional mirroring (``mirroring=True``;
nnU-Net's default, 8 passes per window), logits resampled back (``resampling_fn_probabilities``), put into the
crop box, transposed back. Relevance takes the same way back: the epsilon rule of the resamplings, zero outside
the crop box, on the case grid.
"""

from __future__ import annotations

import importlib
import itertools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes
from torch import nn

from .card import Model, ModelCard, ModelError, check_channel_names, read_json
from .network_guard import check_allocation, check_size, construct, refuse_download_arguments, window_bytes
from .pipeline import ModelPipeline
from .preprocess import PreparedInput, match_modalities, pad_spatial, window_padding
from .resampling import Resampling, resampling
from .weights import (
    check_archive,
    check_finite_weights,
    check_readable_weights,
    definition_files,
    identity_sha256,
)

__all__ = ["DNA_PREFIX", "FoldEnsemble", "is_nnunet_folder", "load_nnunet", "MirroredNetwork", "nnunet_gaussian",
           "nnunet_network_spec", "nnunet_sha256", "nnunet_steps", "NnUNetInput", "NnUNetPlan", "nonzero_box",
           "resolve_nnunet"]

DNA_PREFIX = "dynamic_network_architectures.architectures."
NORMALISATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization")


#: the logit of every foreground class and region outside nnU-Net's crop box (sigmoid 9.4e-14): nnU-Net itself
#: writes probability 0 there
OUTSIDE_LOGIT = -30.0


def is_nnunet_folder(path: str | os.PathLike) -> bool:
    """Whether a path is an nnU-Net v2 results folder (dataset.json, plans.json and a fold_* folder).

    Parameters
    ----------
    path : str or os.PathLike
        A folder or file.

    Returns
    -------
    bool
    """
    p = Path(path)
    return p.is_dir() and (p / "plans.json").is_file() and (p / "dataset.json").is_file() and \
        any(c.is_dir() and c.name.startswith("fold_") for c in p.iterdir())


def resolve_nnunet(path: str | os.PathLike):
    """The results folder of a path in one, with the fold and checkpoint a picked file names.

    Parameters
    ----------
    path : str or os.PathLike
        A results folder or a file in one (plans.json, dataset.json, fold_N/checkpoint_*.pth: what a file
        dialog picks).

    Returns
    -------
    tuple or None
        (results folder, fold or None, checkpoint name or None); None for any other path.
    """
    p = Path(path)
    if is_nnunet_folder(p):
        return p, None, None
    if p.is_dir() and not (p / "card.json").exists() and not (p / "configs").is_dir():
        parts = [n for n in ("plans.json", "dataset.json") if (p / n).is_file()]
        folds = any(c.name.startswith("fold_") for c in p.iterdir())
        if parts or folds:  # most of a results folder: name what is missing, not a card's fields
            missing = [n for n in ("plans.json", "dataset.json") if n not in parts] + ([] if folds else ["fold_*"])
            raise ModelError(f"{p}: an nnU-Net results folder without {', '.join(missing)} (nnU-Net writes "
                             "dataset.json, plans.json and fold_N/checkpoint_final.pth); copy the whole folder")
    if p.is_file() and p.name in ("plans.json", "dataset.json") and is_nnunet_folder(p.parent):
        return p.parent, None, None
    if p.is_file() and p.suffix == ".pth" and p.parent.name.startswith("fold_") and is_nnunet_folder(p.parent.parent):
        fold = p.parent.name[5:]
        return p.parent.parent, int(fold) if fold.isdigit() else fold, p.name
    return None


# ---- the allow-list --------------------------------------------------------------------------------------

def _dna_class(name: str, source: str) -> type:
    if not isinstance(name, str) or not name.startswith(DNA_PREFIX):
        raise ModelError(f"{source}: network_class_name {name!r} is not on the allow-list (classes of "
                         f"{DNA_PREFIX}*, as nnU-Net v2 plans them); other classes would run code from outside it")
    module, _, cls = name.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(f"{source}: cannot import {module} ({exc}); install the nnU-Net extra: "
                         "pip install --no-deps dynamic-network-architectures==0.4.4") from exc
    obj = getattr(mod, cls, None)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(f"{source}: {module} has no network class {cls!r}")
    return obj


def _torch_nn_class(name: str, source: str, field_name: str) -> type:
    if not isinstance(name, str) or not name.startswith("torch.nn."):
        raise ModelError(f"{source}: architecture.arch_kwargs.{field_name} = {name!r} is not a torch.nn class; "
                         "only torch.nn classes are imported for nnU-Net plans")
    module, _, cls = name.rpartition(".")
    obj = getattr(importlib.import_module(module), cls, None)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(f"{source}: architecture.arch_kwargs.{field_name} = {name!r} is not a torch.nn module class")
    return obj


# ---- networks as nnU-Net runs them --------------------------------------------------------------------------

class MirroredNetwork(nn.Module):
    """nnU-Net's test-time mirroring: the mean of net(x) and flip(net(flip(x))) over every combination of
    ``axes`` (spatial axes counted from 0 = the first spatial axis)."""

    def __init__(self, network: nn.Module, axes):
        super().__init__()
        self.network = network
        axes = [int(a) + 2 for a in axes]
        self.combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]

    def forward(self, x):
        """The mean of net(x) and flip(net(flip(x))) over every combination of the mirror axes.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, Z, Y, X).

        Returns
        -------
        torch.Tensor
            (N, K, Z, Y, X).
        """
        y = self.network(x)
        for axes in self.combinations:
            y = y + torch.flip(self.network(torch.flip(x, axes)), axes)
        return y / (len(self.combinations) + 1)


class FoldEnsemble(nn.Module):
    """The mean of the folds' outputs (nnU-Net's fold ensemble averages logits)."""

    def __init__(self, folds):
        super().__init__()
        self.folds = nn.ModuleList(folds)

    def forward(self, x):
        """The mean of the folds' logits.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, Z, Y, X), the same input for every fold.

        Returns
        -------
        torch.Tensor
        """
        y = self.folds[0](x)
        for net in self.folds[1:]:
            y = y + net(x)
        return y / len(self.folds)


# ---- sliding windows as nnUNetPredictor places and weighs them -----------------------------------------------

def nnunet_steps(size: int, window: int, step: float = 0.5) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis.

    Parameters
    ----------
    size : int
        The axis' length (at least ``window``).
    window : int
        The patch size along it.
    step : float
        The step as a fraction of the window.

    Returns
    -------
    list of int
        The windows' starts.
    """
    n = int(np.ceil((size - window) / (window * step))) + 1
    if n <= 1:
        return [0]
    actual = (size - window) / (n - 1)
    return [int(np.round(actual * i)) for i in range(n)]


def nnunet_gaussian(window) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian(sigma_scale=1/8, value_scaling_factor=10)`` in its float16, as float64.

    Parameters
    ----------
    window : tuple of int
        The patch size.

    Returns
    -------
    torch.Tensor
    """
    from scipy.ndimage import gaussian_filter

    window = tuple(int(w) for w in window)
    tmp = np.zeros(window)
    tmp[tuple(w // 2 for w in window)] = 1
    g = gaussian_filter(tmp, [w / 8 for w in window], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    g = torch.from_numpy(g).to(torch.float16)
    zero = g == 0
    if bool(zero.any()):
        g[zero] = torch.min(g[~zero])
    return g.double()


# ---- the plan --------------------------------------------------------------------------------------------------

@dataclass
class NnUNetPlan(ModelPipeline):
    """One configuration of a results folder: what nnU-Net does before and after the network.

    Spacings, shapes and patch sizes are in nnU-Net's (transposed) axis order; ``spacing`` in mm."""

    folder: str
    configuration: str
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    intensity_properties: dict
    data_resampling: dict
    probability_resampling: dict
    mirror_axes: tuple[int, ...] | None
    mirroring: bool = False
    step: float = 0.5
    folds: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    #: one sigmoid head per region (BraTS-style training) instead of softmax classes
    region_based: bool = False

    @property
    def window(self) -> tuple[int, int, int]:
        """The patch size: nnU-Net's sliding window."""
        return self.patch_size

    @property
    def overlap(self) -> float:
        """1 - the step (nnU-Net's tile_step_size)."""
        return 1.0 - self.step

    @property
    def blend(self) -> str:
        """'nnunet': its Gaussian importance map and its window placement."""
        return "nnunet"

    def settings(self) -> dict:
        """The configuration, folds and mirroring of the run, for its settings.json.

        Returns
        -------
        dict
            {"nnunet": {configuration, folds, mirroring}}.
        """
        return {"nnunet": {"configuration": self.configuration, "folds": self.folds, "mirroring": self.mirroring}}

    def prepare(self, case, modalities: list[str], network: nn.Module, device: torch.device,
                dtype: torch.dtype = torch.float32, source: str = "case") -> NnUNetInput:
        """The case as nnU-Net feeds it (:class:`NnUNetInput`)."""
        channels = match_modalities(case.modalities, modalities, source)
        image = np.asarray(case.image[channels], dtype=np.float32)
        data = to_nnunet_order(image, case.grid)  # (C, a, b, c) SimpleITK order
        data = data.transpose([0, *[i + 1 for i in self.transpose_forward]])
        zooms = np.sqrt((np.asarray(case.grid.affine)[:3, :3] ** 2).sum(axis=0))[::-1]
        spacing = tuple(float(zooms[i]) for i in self.transpose_forward)
        shape_before = tuple(int(s) for s in data.shape[1:])
        mask, bbox = nonzero_box(data)
        sl = tuple(slice(a, b) for a, b in bbox)
        data = np.ascontiguousarray(data[(slice(None),) + sl])
        mask = mask[sl]
        model_shape = [max(1, int(round(n * a / b))) for n, a, b in zip(data.shape[1:], spacing, self.spacing)]
        # the resampled input, its padding, the blended logits and the relevance: about four volumes of it
        check_allocation(4.0 * 4 * (data.shape[0] + 1) * float(np.prod(model_shape)),
                         f"case {source} resampled from spacing {tuple(round(v, 4) for v in spacing)} to the "
                         f"configuration's {tuple(self.spacing)} (grid {tuple(model_shape)})",
                         f"{self.folder}/plans.json", "check the configuration's spacing, or crop the case")
        normalised = self.normalise(data, mask)
        resample = resampling(normalised.shape[1:], spacing, self.spacing, order=self.data_resampling.get("order", 3),
                              order_z=self.data_resampling.get("order_z", 0),
                              force_separate_z=self.data_resampling.get("force_separate_z"))
        x_normalised = torch.from_numpy(normalised)
        model = resample(x_normalised).to(torch.float32)
        back = resampling(model.shape[1:], self.spacing, spacing, shape_out=normalised.shape[1:],
                          order=self.probability_resampling.get("order", 1),
                          order_z=self.probability_resampling.get("order_z", 0),
                          force_separate_z=self.probability_resampling.get("force_separate_z"))
        pads = window_padding(model.shape[1:], self.patch_size)
        x = pad_spatial(model[None], pads)
        return NnUNetInput(x=x.to(device=device, dtype=dtype), pads=pads, channels=channels, bounds=None,
                           network=network, plan=self, grid=case.grid, spacing=spacing, bbox=bbox,
                           shape_before_crop=shape_before, normalised=x_normalised, data_resampling=resample,
                           probability_resampling=back)

    def normalise(self, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """nnU-Net's per-channel normalisation of the cropped data.

        Parameters
        ----------
        data : numpy.ndarray
            (C, ...) float32, cropped to the non-zero box.
        mask : numpy.ndarray
            The non-zero region (holes filled) inside the crop.

        Returns
        -------
        numpy.ndarray
            Normalised, like ``data``.
        """
        out = data.astype(np.float32, copy=True)
        for c in range(out.shape[0]):
            scheme = self.normalization_schemes[c]
            img = out[c]
            if scheme == "ZScoreNormalization":
                if self.use_mask_for_norm[c]:
                    mean, std = img[mask].mean(), img[mask].std()
                    img[mask] = (img[mask] - mean) / max(std, 1e-8)
                else:
                    mean, std = img.mean(), img.std()
                    img -= mean
                    img /= max(std, 1e-8)
            elif scheme == "CTNormalization":
                p = self.intensity_properties[str(c)]
                np.clip(img, p["percentile_00_5"], p["percentile_99_5"], out=img)
                img -= p["mean"]
                img /= max(p["std"], 1e-8)
            elif scheme == "RescaleTo01Normalization":
                img -= img.min()
                img /= np.clip(img.max(), a_min=1e-8, a_max=None)
            elif scheme != "NoNormalization":
                raise ModelError(f"{self.folder}: normalisation scheme {scheme!r} is not one of "
                                 f"{', '.join(NORMALISATIONS)}")
        return out


def nonzero_box(data: np.ndarray) -> tuple[np.ndarray, tuple]:
    """nnU-Net's ``crop_to_nonzero`` box of (C, ...) data.

    Parameters
    ----------
    data : numpy.ndarray
        (C, ...).

    Returns
    -------
    tuple
        (the non-zero mask over the channels with holes filled, ((lo, hi) per axis)); the whole volume when
        nothing is non-zero (as acvl_utils' bounding box).
    """
    mask = binary_fill_holes(np.any(data != 0, axis=0))
    if not mask.any():
        return mask, tuple((0, int(s)) for s in mask.shape)
    idx = [np.where(np.any(mask, axis=tuple(j for j in range(mask.ndim) if j != i)))[0] for i in range(mask.ndim)]
    return mask, tuple((int(i[0]), int(i[-1]) + 1) for i in idx)


def to_nnunet_order(image: np.ndarray, grid) -> np.ndarray:
    """napari order (C, Z, Y, X) to SimpleITK's order of the file's voxels (C, k, j, i).

    Parameters
    ----------
    image : numpy.ndarray
        (C, Z, Y, X).
    grid : Grid
        The case's grid.

    Returns
    -------
    numpy.ndarray
    """
    file_order = grid.from_napari(image)  # (i, j, k, C)
    return np.ascontiguousarray(np.transpose(file_order, (3, 2, 1, 0)))


def from_nnunet_order(data: np.ndarray, grid) -> np.ndarray:
    """SimpleITK's order (C, k, j, i) back to napari order (C, Z, Y, X).

    Parameters
    ----------
    data : numpy.ndarray
        (C, k, j, i) in the file's voxel order, as SimpleITK reads it.
    grid : Grid
        The case's grid (its orientation).

    Returns
    -------
    numpy.ndarray
    """
    return grid.to_napari(np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0))))


@dataclass
class NnUNetInput(PreparedInput):
    """The model-grid input of an nnU-Net configuration and the maps between its grid and the case's.

    x: (1, C, a', b', c') pre-processed and padded to the patch size (nnU-Net's order); normalised: the
    normalised crop (C, a, b, c) before resampling, the input the relevance is of."""

    maps_grid: ClassVar[bool] = True
    plan: NnUNetPlan | None = None
    grid: object = None
    spacing: tuple = ()
    bbox: tuple = ()
    shape_before_crop: tuple = ()
    normalised: torch.Tensor | None = None
    data_resampling: Resampling | None = None
    probability_resampling: Resampling | None = None

    # case grid <-> nnU-Net frame (orientation and transpose) ------------------------------------------
    def _to_frame(self, a: np.ndarray) -> np.ndarray:
        a = to_nnunet_order(a, self.grid)
        return a.transpose([0, *[i + 1 for i in self.plan.transpose_forward]])

    def _to_case(self, a: np.ndarray) -> np.ndarray:
        a = a.transpose([0, *[i + 1 for i in self.plan.transpose_backward]])
        return from_nnunet_order(a, self.grid)

    def _uncrop(self, a: np.ndarray, fill) -> np.ndarray:
        full = np.empty((a.shape[0], *self.shape_before_crop), dtype=a.dtype)
        full[:] = np.asarray(fill, dtype=a.dtype).reshape(-1, 1, 1, 1)
        full[(slice(None),) + tuple(slice(lo, hi) for lo, hi in self.bbox)] = a
        return full

    def outputs_to_case(self, blended: torch.Tensor) -> torch.Tensor:
        """Blended logits (1, K, padded model grid) -> (1, K, Z, Y, X) on the case grid, float32: crop the
        padding, resample back to the crop, put into the crop box, transpose back. Outside the crop box nnU-Net
        writes exactly background (probability 1 for the background class, 0 for every other class or region);
        the logits there are ``OUTSIDE_LOGIT`` (0 for the background), whose softmax or sigmoid is that to 1e-13."""
        logits = self.crop(blended)[0].double()
        crop = self.probability_resampling(logits).numpy()
        fill = np.full(crop.shape[0], OUTSIDE_LOGIT)
        if not self.plan.region_based:
            fill[0] = 0.0
        return torch.from_numpy(self._to_case(self._uncrop(crop, fill)).astype(np.float32))[None]

    def start_to_model(self, start: torch.Tensor, blended: torch.Tensor):
        """Start relevance (1, K, Z, Y, X) on the case grid -> (1, K, padded model grid), float64, by the
        epsilon rule of the resampling back; returns it and the relevance outside the crop box (absorbed)."""
        s = self._to_frame(start[0].double().cpu().numpy())
        inside = s[(slice(None),) + tuple(slice(lo, hi) for lo, hi in self.bbox)]
        outside = float(s.sum() - inside.sum())
        logits = self.crop(blended)[0].double().cpu()
        r = self.probability_resampling.relevance(logits, torch.from_numpy(np.ascontiguousarray(inside)))
        return self.pad(r[None]).to(blended.device), outside

    def relevance_to_case(self, total: torch.Tensor) -> torch.Tensor:
        """Input relevance (1, C, padded model grid) -> (1, C, Z, Y, X) on the case grid, float64: the
        epsilon rule of the data resampling onto the normalised crop, zero outside the crop box."""
        r = self.crop(total)[0].double().cpu()
        r = self.data_resampling.relevance(self.normalised, r).numpy()
        return torch.from_numpy(self._to_case(self._uncrop(r, 0.0)))[None]


# ---- reading a results folder ----------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    return read_json(path, "not found; an nnU-Net v2 results folder holds dataset.json and plans.json")


def _check_plans(plans: dict, path: Path) -> None:
    """The plans' fields napari-lrp reads have the types nnU-Net writes (before anything is built)."""
    for key in ("transpose_forward", "transpose_backward"):
        v = plans.get(key, [0, 1, 2])
        if not (isinstance(v, list) and all(type(a) is int for a in v) and sorted(v) == [0, 1, 2]):
            raise ModelError(f"{path}: field {key!r} is {v!r}; it must be a permutation of [0, 1, 2]")
    props = plans.get("foreground_intensity_properties_per_channel", {})
    if props is not None and not isinstance(props, dict):
        raise ModelError(f"{path}: field 'foreground_intensity_properties_per_channel' must be an object (channel "
                         f"-> properties), not {props!r:.60}")
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        raise ModelError(f"{path}: field 'configurations' must be an object of configurations (name -> object)")


def _check_configuration(cfg: dict, name: str, n_in: int, path: Path) -> None:
    """A configuration's fields with the types and lengths nnU-Net writes."""
    arch = cfg.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs", {}), dict) \
            or not isinstance(arch.get("network_class_name"), str):
        raise ModelError(f"{path}: configuration {name!r} field 'architecture' must hold 'network_class_name' (text) "
                         "and 'arch_kwargs' (an object)")
    imports = arch.get("_kw_requires_import") or []
    if not (isinstance(imports, list) and all(isinstance(k, str) for k in imports)):
        raise ModelError(f"{path}: configuration {name!r} field 'architecture._kw_requires_import' must be a list "
                         f"of argument names, not {imports!r:.60}")
    for key in ("normalization_schemes", "use_mask_for_norm"):
        v = cfg.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == n_in):
            raise ModelError(f"{path}: configuration {name!r} field {key!r} is {v!r:.80}; it needs one entry per "
                             f"input channel ({n_in})")
    for key in ("resampling_fn_data_kwargs", "resampling_fn_probabilities_kwargs"):
        v = cfg.get(key)
        if v is not None and not isinstance(v, dict):
            raise ModelError(f"{path}: configuration {name!r} field {key!r} must be an object, not {v!r:.60}")


def _load_checkpoint(path: Path, trust: bool) -> dict:
    """nnU-Net's checkpoint with ``weights_only=True`` (numpy scalars and dtypes in its logging allowed)."""
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64)),
            type(np.dtype(np.int32)), type(np.dtype(np.bool_))]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    safe.append(scalar)
    check_archive(path)
    check_readable_weights(path)
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError / RuntimeError variants
        if not trust:
            raise ModelError(f"{path}: cannot be read with torch.load(weights_only=True) ({str(exc).splitlines()[0]}); "
                             "it holds Python objects beyond tensors and numbers. Load it with trust=True only if "
                             "you trust its author") from exc
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), dict):
        raise ModelError(f"{path}: not an nnU-Net v2 checkpoint (no 'network_weights' dict)")
    return ckpt


def _configuration_name(folder: Path, ckpt: dict | None, plans: dict) -> str:
    parts = folder.name.split("__")
    if len(parts) == 3 and parts[2] in plans.get("configurations", {}):
        return parts[2]
    if ckpt is not None:
        name = (ckpt.get("init_args") or {}).get("configuration")
        if name in plans.get("configurations", {}):
            return name
    raise ModelError(f"{folder}: cannot tell the configuration: the folder is not named "
                     "<trainer>__<plans>__<configuration> and the checkpoint's init_args has none")


def _configuration(plans: dict, name: str, source: str) -> dict:
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise ModelError(f"{source}: plans.json has no configuration {name!r} (has {', '.join(configs)})")
    cfg = dict(configs[name])
    seen = {name}
    while "inherits_from" in cfg:  # nnU-Net's inheritance between configurations
        parent = cfg.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ModelError(f"{source}: configuration {name!r} inherits from {parent!r}, which is missing or circular")
        seen.add(parent)
        cfg = {**configs[parent], **cfg}
    if "architecture" not in cfg:
        raise ModelError(f"{source}: configuration {name!r} has no 'architecture' entry (plans from nnU-Net "
                         "before 2.4, with UNet_class_name); re-plan with nnU-Net >= 2.4 "
                         "(nnUNetv2_plan_experiment) to get the current plans format")
    return cfg


def fold_folders(folder: Path, fold) -> list[Path]:
    """The fold folders a ``fold`` argument chooses; refused when a fold_* entry is not a folder.

    Parameters
    ----------
    folder : Path
        The results folder.
    fold : int, str, sequence or None
        None (every fold_N, as nnUNetv2_predict), 'all' (fold_all, else every fold_N), N or several.

    Returns
    -------
    list of Path
    """
    broken = sorted(p.name for p in folder.iterdir() if p.name.startswith("fold_") and not p.is_dir())
    if broken:  # a link whose target is gone would make the ensemble silently smaller
        raise ModelError(f"{folder}: {', '.join(broken)} is not a folder (a broken link, or a file); restore it "
                         "or remove it, so the folds averaged are the ones meant")
    present = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("fold_"))
    if fold is None or (fold == "all" and not (folder / "fold_all").is_dir()):
        chosen = [p for p in present if p.name[5:].isdigit()] or present
    elif fold == "all":
        chosen = [folder / "fold_all"]
    else:
        folds = [fold] if isinstance(fold, (int, str)) else list(fold)
        if len(set(map(str, folds))) != len(folds):
            raise ModelError(f"{folder}: fold={fold!r} names a fold twice; an ensemble averages distinct folds")
        chosen = [folder / f"fold_{f}" for f in folds]
    missing = [p.name for p in chosen if not p.is_dir()]
    if missing or not chosen:
        raise ModelError(f"{folder}: no {', '.join(missing) or 'fold_* folder'} (present: "
                         f"{', '.join(p.name for p in present) or 'none'}); pass fold= one of them")
    return chosen


def _check_sizes(cfg: dict, name: str, n_in: int, n_out: int, plans_path: Path, device=None) -> None:
    """The configuration's patch size and spacing are whole, positive and the LRP of one window fits the
    memory where the network runs (estimated on the meta device before anything is built)."""
    patch, spacing = cfg["patch_size"], cfg["spacing"]
    if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch):
        raise ModelError(f"{plans_path}: configuration {name!r} patch_size {patch!r} must be three whole sizes >= 1")
    if len(spacing) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e3
                                    for v in spacing):
        raise ModelError(f"{plans_path}: configuration {name!r} spacing {spacing!r} must be three sizes in mm "
                         "above 0")
    cls, full = nnunet_network_spec(cfg, n_in, n_out, str(plans_path))
    check_size(cls, full, str(plans_path))
    need = window_bytes(cls, full, (1, n_in, *patch))
    if need is not None:
        check_allocation(need, f"the LRP of one window of configuration {name!r} (patch {tuple(patch)})",
                         str(plans_path), "this configuration cannot be explained on this machine (nnU-Net's "
                         "windows are its patch size)", device)


def nnunet_network_spec(cfg: dict, n_in: int, n_out: int, source: str) -> tuple[type, dict]:
    """The class and arguments of a configuration's network, as nnU-Net's ``get_network_from_plans`` builds it.

    Deep supervision off; the class from the allow-list, ``_kw_requires_import`` only from torch.nn.

    Parameters
    ----------
    cfg : dict
        The configuration of plans.json.
    n_in, n_out : int
        Input channels and output channels (classes).
    source : str
        Named in refusals.

    Returns
    -------
    tuple
        (class, keyword arguments).
    """
    arch = cfg["architecture"]
    cls = _dna_class(arch.get("network_class_name"), source)
    kwargs = dict(arch.get("arch_kwargs") or {})
    for key in arch.get("_kw_requires_import") or []:
        if kwargs.get(key) is not None:
            kwargs[key] = _torch_nn_class(kwargs[key], source, key)
    refuse_download_arguments(kwargs, source)
    return cls, dict(input_channels=n_in, num_classes=n_out, deep_supervision=False, **kwargs)


def build_nnunet_network(cfg: dict, n_in: int, n_out: int, source: str, sized: bool = False) -> nn.Module:
    """The configuration's network (:func:`nnunet_network_spec`).

    Its size is checked on the meta device first (the plans' sizes are not trusted) unless the caller did.

    Parameters
    ----------
    cfg, n_in, n_out, source
        As for :func:`nnunet_network_spec`.
    sized : bool
        The caller checked the size already.

    Returns
    -------
    torch.nn.Module
    """
    cls, full = nnunet_network_spec(cfg, n_in, n_out, source)
    if not sized:
        check_size(cls, full, source)
    return construct(cls, full, source, "from plans.json")


def _region_labels(labels: dict, source: str) -> tuple[list[str], str, dict]:
    """Region-based training (BraTS): one sigmoid head per region, in the order dataset.json lists them after
    the background (nnU-Net's LabelManager.foreground_regions); each region the label values it unites."""
    regions = {}
    for name, value in labels.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or any(type(v) is not int or v < 0 for v in values):
            raise ModelError(f"{source}: dataset.json region {name!r} is {value!r}; a region is a label value or a "
                             "list of them (whole numbers >= 0)")
        if values == [0]:
            continue  # the background has no head
        regions[str(name)] = values
    if not regions:
        raise ModelError(f"{source}: dataset.json labels {labels} hold no foreground region")
    return list(regions), "sigmoid", regions


def _regions_class_order(dataset: dict, regions: dict | None, source: str) -> list[int] | None:
    """dataset.json's regions_class_order: the label value each region paints, checked against the regions."""
    if regions is None:
        return None
    order = dataset.get("regions_class_order")
    if order is None:
        raise ModelError(f"{source}: region-based labels need 'regions_class_order' (one label value per region, "
                         f"as nnU-Net's BraTS datasets give it: {len(regions)} values for {list(regions)})")
    if not isinstance(order, list) or len(order) != len(regions) or any(type(v) is not int for v in order):
        raise ModelError(f"{source}: field 'regions_class_order' is {order!r}; it needs {len(regions)} whole numbers, "
                         f"one label value per region ({list(regions)})")
    return list(order)


def _labels(dataset: dict, source: str) -> tuple[list[str], str, dict | None]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"{source}: dataset.json has no 'labels' mapping (name -> value)")
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        return _region_labels(labels, source)
    bad = {k: v for k, v in labels.items() if type(v) is not int or v < 0}
    if bad:
        raise ModelError(f"{source}: dataset.json labels {bad!r:.120} are not whole numbers >= 0 (label name -> value)")
    if "ignore" in labels and labels["ignore"] == max(labels.values()) and len(labels) > 2:
        # nnU-Net's ignore label marks unannotated voxels in training; the network has no output for it
        labels = {k: v for k, v in labels.items() if k != "ignore"}
    order = sorted(labels.items(), key=lambda kv: int(kv[1]))
    if [int(v) for _k, v in order] != list(range(len(order))):
        raise ModelError(f"{source}: dataset.json labels {labels} are not consecutive 0..K-1")
    return [k for k, _v in order], "softmax", None


def _channel_names(dataset: dict, where: Path) -> list[str]:
    """dataset.json's channel names in input order ('0', '1', ... -> name), checked."""
    channel_names = dataset.get("channel_names") or dataset.get("modality")
    if not isinstance(channel_names, dict) or not channel_names:
        raise ModelError(f"{where}: no 'channel_names' (index -> name)")
    if sorted(channel_names) != [str(i) for i in range(len(channel_names))] or not all(
            isinstance(v, str) and v.strip() for v in channel_names.values()):
        raise ModelError(f"{where}: field 'channel_names' is {channel_names!r:.120}; it maps each "
                         "input index '0', '1', ... to a channel name (non-empty text)")
    return check_channel_names([str(channel_names[k]) for k in sorted(channel_names, key=int)], str(where),
                               "channel_names")


def _check_stage(cfg: dict, name: str, where: Path) -> None:
    """A single-stage 3D configuration with the keys the pipeline reads."""
    for key in ("patch_size", "spacing", "normalization_schemes"):
        if key not in cfg:
            raise ModelError(f"{where}: configuration {name!r} lacks {key!r}")
    if cfg.get("previous_stage"):
        raise ModelError(f"{where}: configuration {name!r} is a cascade stage (previous_stage "
                         f"{cfg['previous_stage']!r}: its input holds the previous stage's segmentation); "
                         "napari-lrp explains single-stage configurations (3d_fullres, 3d_lowres) for now")
    if len(cfg["patch_size"]) != 3:
        raise ModelError(f"{where}: configuration {name!r} is {len(cfg['patch_size'])}D; "
                         "napari-lrp explains 3D configurations (3d_fullres, 3d_lowres)")


def _fold_network(cfg: dict, n_in: int, n_out: int, source: str, path: Path, ckpt: dict) -> nn.Module:
    """One fold's network with its checkpoint's weights (sizes checked before by ``_check_sizes``)."""
    net = build_nnunet_network(cfg, n_in, n_out, source, sized=True)
    sd = ckpt["network_weights"]
    if sd and all(k.startswith("_orig_mod.") for k in sd):  # torch.compile'd training
        sd = {k[len("_orig_mod."):]: v for k, v in sd.items()}
    check_finite_weights(sd, path)
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit the network plans.json describes "
                         f"({str(exc).splitlines()[0]})") from exc
    return net


def _check_plan(plan: NnUNetPlan, cfg: dict, where: Path) -> None:
    """The resampling and normalisation the plan asks for are the ones reproduced here."""
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        fn = cfg.get(key, "resample_data_or_seg_to_shape")
        if fn != "resample_data_or_seg_to_shape":
            raise ModelError(f"{where}: {key} = {fn!r}; napari-lrp reproduces nnU-Net's default "
                             "resample_data_or_seg_to_shape only")
    for c, scheme in enumerate(plan.normalization_schemes):
        props = plan.intensity_properties.get(str(c))
        if scheme == "CTNormalization" and not (isinstance(props, dict) and all(
                isinstance(props.get(k), (int, float)) for k in ("percentile_00_5", "percentile_99_5", "mean", "std"))):
            raise ModelError(f"{where}: channel {c} uses CTNormalization but "
                             f"'foreground_intensity_properties_per_channel.{c}' lacks percentile_00_5, "
                             "percentile_99_5, mean or std (nnU-Net's fingerprint writes them)")
    unknown = [s for s in plan.normalization_schemes if s not in NORMALISATIONS]
    if unknown:
        raise ModelError(f"{where}: normalisation scheme {unknown[0]!r} is not one of {', '.join(NORMALISATIONS)}")


def load_nnunet(folder: str | os.PathLike, device: torch.device, fold=None, checkpoint: str = "checkpoint_final.pth",
                mirroring: bool = False, trust: bool = False) -> Model:
    """A Model from an nnU-Net v2 results folder: its network, its plan (the pipeline), its card.

    Parameters
    ----------
    folder : str or os.PathLike
        The results folder.
    device : torch.device
        Where the network runs.
    fold : int, list of int, 'all' or None
        An int (fold_N), a list (their ensemble), 'all' (fold_all, or every fold_N when there is none) or None
        (every fold_N present, as nnUNetv2_predict does by default).
    checkpoint : str
        The file in each fold (checkpoint_best.pth works too).
    mirroring : bool
        nnU-Net's test-time mirroring (its predictor's default; 2-8x the passes).
    trust : bool
        Allow checkpoints that hold more than weights.

    Returns
    -------
    Model
        ``explain`` and ``predict_case`` run its plan (``Model.pipeline``).
    """
    folder = Path(folder)
    source = str(folder)
    dataset = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    _check_plans(plans, folder / "plans.json")
    folds = fold_folders(folder, fold)
    paths = [f / checkpoint for f in folds]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ModelError(f"{missing[0]}: checkpoint not found (checkpoint={checkpoint!r}; "
                         f"nnU-Net writes checkpoint_final.pth at the end of training, checkpoint_best.pth on the way)")
    ckpts = [_load_checkpoint(p, trust) for p in paths]
    name = _configuration_name(folder, ckpts[0], plans)
    cfg = _configuration(plans, name, str(folder / "plans.json"))
    modalities = _channel_names(dataset, folder / "dataset.json")
    classes, activation, regions = _labels(dataset, str(folder / "dataset.json"))
    n_out = len(classes)
    _check_stage(cfg, name, folder / "plans.json")
    _check_configuration(cfg, name, len(modalities), folder / "plans.json")
    _check_sizes(cfg, name, len(modalities), n_out, folder / "plans.json", device)
    nets = [_fold_network(cfg, len(modalities), n_out, source, path, ckpt) for path, ckpt in zip(paths, ckpts)]
    mirror_axes = ckpts[0].get("inference_allowed_mirroring_axes")
    plan = NnUNetPlan(
        folder=source, configuration=name, transpose_forward=tuple(plans.get("transpose_forward", (0, 1, 2))),
        transpose_backward=tuple(plans.get("transpose_backward", (0, 1, 2))),
        spacing=tuple(float(s) for s in cfg["spacing"]), patch_size=tuple(int(p) for p in cfg["patch_size"]),
        normalization_schemes=list(cfg["normalization_schemes"]),
        use_mask_for_norm=list(cfg.get("use_mask_for_norm") or [False] * len(modalities)),
        intensity_properties=dict(plans.get("foreground_intensity_properties_per_channel") or {}),
        data_resampling=dict(cfg.get("resampling_fn_data_kwargs") or {"order": 3, "order_z": 0,
                                                                       "force_separate_z": None}),
        probability_resampling=dict(cfg.get("resampling_fn_probabilities_kwargs") or {"order": 1, "order_z": 0,
                                                                                       "force_separate_z": None}),
        mirror_axes=None if mirror_axes is None else tuple(int(a) for a in mirror_axes), mirroring=bool(mirroring),
        folds=[f.name for f in folds], checkpoints=[str(p) for p in paths], region_based=regions is not None)
    _check_plan(plan, cfg, folder / "plans.json")
    network = nets[0] if len(nets) == 1 else FoldEnsemble(nets)
    if mirroring and plan.mirror_axes:
        network = MirroredNetwork(network, plan.mirror_axes)
    elif mirroring:
        warnings.warn(f"{source}: the checkpoint allows no mirroring axes; running without mirroring", stacklevel=2)
    network = network.to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    card = ModelCard(name=f"{folder.parent.name} {folder.name} ({', '.join(plan.folds)})",
                     architecture={"class": cfg["architecture"]["network_class_name"], "kwargs": {}},
                     weights=checkpoint, modalities=modalities,
                     input={"spatial_size": None, "intensity": "none", "divisible": 1}, classes=classes,
                     target_class=0 if regions else min(1, n_out - 1),
                     output_activation=activation, regions=regions,
                     regions_class_order=_regions_class_order(dataset, regions, str(folder / "dataset.json")))
    return Model(network=network, card=card, device=device, path=source, sha256=nnunet_sha256(paths, folder),
                 pipeline=plan)


def nnunet_sha256(paths, folder) -> str:
    """The identity of an nnU-Net model.

    Parameters
    ----------
    paths : list of Path
        The chosen folds' checkpoints.
    folder : Path
        The results folder (its plans.json and dataset.json count).

    Returns
    -------
    str
        :func:`~napari_lrp.models.weights.identity_sha256` of them.
    """
    return identity_sha256(paths, definition_files(folder))

