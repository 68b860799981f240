"""A MONAI bundle's ``preprocessing`` and ``inferer``, read as data and run as MONAI runs them.

``configs/inference.json``'s ``preprocessing`` (a ``Compose`` of dictionary transforms of
``monai.transforms``) and ``inferer`` (``SlidingWindowInferer`` roi_size / overlap / mode, or
``SimpleInferer``) are honoured; the configuration is read by :mod:`napari_lrp.models.bundle_config` (no code
runs); any transform outside ``monai.transforms`` or outside the three kinds below is refused, named with the
fix.

The case enters as ``LoadImaged`` + ``EnsureChannelFirstd`` would give it (the files' voxel order, channels
first, the file's affine), so the transforms see what they see in MONAI. Kinds:

* spatial transforms that move voxels (Orientationd, CropForegroundd, pads and crops, Flipd, Rotate90d) and
  that resample (Spacingd, Resized, Zoomd): their outputs are linear in their inputs;
* intensity transforms (ScaleIntensityRanged, NormalizeIntensityd, ...): voxel by voxel;
* loading and typing (LoadImaged, EnsureChannelFirstd, EnsureTyped, ...): nothing to do (the case is loaded).

Prediction: MONAI's sliding-window placement and importance map (its own functions), logits mapped back to
the files' grid by the transforms' own ``inverse`` (as ``Invertd`` does). Relevance takes the transposes of
the same linear maps (vector-Jacobian products through MONAI's transforms, the intensity transforms passed
through): relevance on the model grid is shared back onto the voxels each model voxel was interpolated from,
in proportion to the interpolation weights (rows of an interpolation sum to 1, so it is conserved; what lands
on padding is absorbed and booked). The start relevance on the case grid goes to the model grid the same way
through the inverse transforms.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .bundle_code import BUNDLE_CODE_PREFIX, bundle_class
from .card import ModelError
from .network_guard import check_allocation
from .pipeline import ModelPipeline
from .preprocess import PreparedInput, match_modalities, pad_spatial, window_padding

__all__ = ["BundleInput", "BundlePipeline", "INTENSITY", "LOADING", "PADDING_MODES", "RESAMPLING", "ROUTING",
           "GUIDANCE", "added_channels", "bundle_pipeline", "input_keys", "label_painting"]

ROUTING = frozenset({"Orientationd", "CropForegroundd", "SpatialPadd", "DivisiblePadd", "BorderPadd",
                     "CenterSpatialCropd", "SpatialCropd", "ResizeWithPadOrCropd", "Flipd", "Rotate90d"})
RESAMPLING = frozenset({"Spacingd", "Resized", "Zoomd"})
INTENSITY = frozenset({"ScaleIntensityRanged", "NormalizeIntensityd", "ScaleIntensityd", "ThresholdIntensityd",
                       "ScaleIntensityRangePercentilesd", "ClipIntensityPercentilesd", "ShiftIntensityd",
                       "ScaleIntensityFixedMeand"})
LOADING = frozenset({"LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "ToTensord", "CastToTyped", "Identityd",
                     "AddChanneld", "ToDeviced", "SqueezeDimd"})
#: DeepEdit's click guidance (monai.apps.deepedit.transforms): run as MONAI runs them with no clicks, so the
#: channels they add to the image are constants (zero), not the case's
GUIDANCE = frozenset({"AddGuidanceFromPointsDeepEditd", "ResizeGuidanceMultipleLabelDeepEditd",
                      "AddGuidanceSignalDeepEditd"})
SUPPORTED = ROUTING | RESAMPLING | INTENSITY | LOADING | GUIDANCE


def _short(target, source: str, where: str, prefix: str) -> str:
    if not isinstance(target, str):
        raise ModelError(f"{source}: {where}._target_ must be a class name, got {target!r}")
    if "." in target and not target.startswith(prefix):
        raise ModelError(f"{source}: {where}._target_ {target!r} is outside {prefix[:-1]}; only {prefix}* classes "
                         "are built from bundles")
    return target.rsplit(".", 1)[-1]


class _StraightThrough:
    """An intensity transform whose values are MONAI's and whose vector-Jacobian product is the identity: the
    relevance passes it voxel by voxel."""

    def __init__(self, transform, keys):
        self.transform = transform
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, data):
        here = [k for k in self.keys if k in data]
        # MONAI's value on detached copies: several intensity transforms write into their input (per channel,
        # per non-zero mask), which autograd refuses on the views of a tensor that requires gradients
        with torch.no_grad():
            out = self.transform({**data, **{k: data[k].detach().clone() for k in here}})
        for k in here:
            x = data[k]
            out[k] = out[k].detach() + (x - x.detach())  # y's values exactly; d/dx = identity
        return out


class _Rearrangement:
    """A transform that runs outside torch's graph (a bundle's own ``scripts/`` code, DeepEdit's guidance)
    whose outputs are voxels of its inputs or constants: run as written for the values, and traced twice on
    numbered voxels (two numberings: a copied voxel's number moves with the numbering, a constant does not) to
    find where each output voxel comes from, so the relevance returns to that voxel. An output that is neither
    is refused."""

    def __init__(self, transform, name: str, source: str):
        self.transform, self.name, self.source = transform, name, source

    def __call__(self, data):
        arrays = [k for k, v in data.items() if isinstance(v, torch.Tensor)]
        starts = dict(zip(arrays, np.cumsum([1] + [data[k].numel() for k in arrays]).tolist()))
        count = sum(data[k].numel() for k in arrays)
        with torch.no_grad():
            values = self.transform({**data, **{k: data[k].detach().clone() for k in arrays}})
            first = self.transform({**data, **_numbered(data, arrays, 1)})
            second = self.transform({**data, **_numbered(data, arrays, 1 + count)})
        flat = None  # every input voxel in numbering order, made only when an output is not an input as it was
        out = dict(values)
        for k, v in values.items():
            if not isinstance(v, (torch.Tensor, np.ndarray)) or k not in first:
                continue
            ids = torch.as_tensor(np.asarray(_plain(first[k])), dtype=torch.float64)
            own = torch.arange(starts[k], starts[k] + data[k].numel(), dtype=torch.float64) if k in arrays else None
            if own is not None and ids.shape == data[k].shape and torch.equal(ids.reshape(-1), own):
                out[k] = data[k]  # untouched: the graph is kept
                continue
            if flat is None:
                flat = torch.cat([_plain(data[a]).reshape(-1) for a in arrays]) if arrays else torch.zeros(0)
            other = torch.as_tensor(np.asarray(_plain(second[k])), dtype=torch.float64)
            out[k] = self._gathered(k, v, ids, other, flat, count)
        return out

    def _gathered(self, key: str, value, ids, other, flat, count: int):
        from monai.data import MetaTensor

        value_t = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else _plain(value))
        copied = (other - ids) == count
        index = (ids - 1).clamp(0, max(count - 1, 0)).long()
        exact = ids.shape == value_t.shape == other.shape and bool((ids == ids.round()).all()) and \
            bool((~copied | ((ids >= 1) & (ids <= count))).all()) and bool((copied | (other == ids)).all())
        gathered = torch.where(copied.to(flat.device), flat[index] if count else value_t.to(flat.dtype),
                               value_t.to(flat.dtype)) if exact else None
        if gathered is None or not torch.equal(gathered.detach().to(value_t.dtype), value_t):
            raise ModelError(f"{self.source}: the bundle's transform {self.name} makes {key!r} of values that are "
                             "neither voxels of its inputs nor constants; napari-lrp passes relevance through a "
                             "transform it runs outside torch only where it moves or copies voxels (concatenation, "
                             "crops, flips) or adds constant channels")
        if not isinstance(value, MetaTensor):
            return gathered
        return MetaTensor(gathered, meta=copy.deepcopy(value.meta),
                          applied_operations=copy.deepcopy(value.applied_operations))


def _numbered(data: dict, arrays: list[str], start: int) -> dict:
    """Every array of ``data`` replaced by its voxels' numbers (float64, exact), counting on from ``start``."""
    from monai.data import MetaTensor

    out, offset = {}, start
    for k in arrays:
        n = data[k].numel()
        ids = torch.arange(offset, offset + n, dtype=torch.float64).reshape(data[k].shape)
        out[k] = MetaTensor(ids, meta=copy.deepcopy(data[k].meta),
                            applied_operations=copy.deepcopy(data[k].applied_operations)) \
            if isinstance(data[k], MetaTensor) else ids
        offset += n
    return out


def _guidance_class(name: str):
    """DeepEdit's guidance transform of that name, or None."""
    if name not in GUIDANCE:
        return None
    import monai.apps.deepedit.transforms as deepedit

    return getattr(deepedit, name)


def _plain(t):
    """A MetaTensor's torch tensor (its graph kept); other tensors as they are."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


@dataclass
class BundlePipeline(ModelPipeline):
    """The bundle's transforms (as dicts from inference.json) and its inferer's settings."""

    source: str
    key: str
    specs: list[dict]  # {"_target_": short name, **kwargs} in order (loading ones dropped)
    window: tuple[int, int, int] | None  # roi_size; None: SimpleInferer (the whole volume)
    overlap: float = 0.25
    mode: str = "constant"
    #: how the sliding window pads a volume smaller than roi_size (torch.nn.functional.pad's modes, as MONAI)
    padding_mode: str = "constant"
    cval: float = 0.0
    #: the bundle's postprocessing steps that make its label ({"_target_": short name, **kwargs}), in order;
    #: None: the label is the argmax (or thresholds) of the logits on the case grid
    post: list[dict] | None = None
    kinds: list[str] = field(default_factory=list)
    #: the keys the case's channels enter as, in channel order ([key] unless a transform merges several files
    #: into the network's input, as the CECT bundle's three phases)
    inputs: list[str] = field(default_factory=list)
    #: the key whose applied operations the postprocessing's Invertd undoes (its orig_keys)
    invert_key: str = ""
    #: input channels the transforms add that are not the case's (DeepEdit's click guidance, zero without
    #: clicks); their relevance is booked as absorbed on the way back to the case
    added_channels: int = 0

    def __post_init__(self):
        self.inputs = self.inputs or [self.key]
        self.invert_key = self.invert_key or self.key

    @property
    def blend(self) -> str:
        """'monai-<mode>': MONAI's importance map of the inferer's mode and its window placement."""
        return f"monai-{self.mode}"

    def settings(self) -> dict:
        """Nothing beyond the model's path and sha256 (the bundle's configs are part of its identity)."""
        return {}

    def transforms(self) -> list:
        """The bundle's pre-processing as MONAI transforms, built from their specs.

        Returns
        -------
        list
        """
        import monai.transforms as mt

        out = []
        for spec in self.specs:
            cls = spec.get("_class_") or _guidance_class(spec["_target_"]) or getattr(mt, spec["_target_"])
            kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
            try:
                t = cls(**kwargs)
            except Exception as exc:  # noqa: BLE001 - MONAI's constructors raise many kinds on bad arguments
                raise ModelError(f"{self.source}: cannot build {spec['_target_']} with {kwargs} "
                                 f"({type(exc).__name__}: {exc})") from exc
            if "_class_" in spec or spec["_target_"] in GUIDANCE:
                t = _Rearrangement(t, spec["_target_"], self.source)
            keys = list(dict.fromkeys([*self.inputs, self.key]))
            out.append(_StraightThrough(t, keys) if spec["_target_"] in INTENSITY else t)
        return out

    def _check_sizes(self, shape, grid, source: str) -> None:
        """Estimate, before any transform runs, the volumes the resampling transforms make (each is kept for
        the relevance's way back) and refuse them over half the free memory."""
        channels, dims = int(shape[0]), [float(v) for v in shape[1:]]
        spacing = [float(v) for v in np.sqrt((np.asarray(grid.affine)[:3, :3] ** 2).sum(axis=0))]
        kept = channels * float(np.prod(dims))
        for spec in self.specs:
            name = spec["_target_"]
            if name == "Spacingd" and spec.get("pixdim") is not None:
                pix = spec["pixdim"] if isinstance(spec["pixdim"], (list, tuple)) else [spec["pixdim"]] * 3
                if any(not isinstance(p, (int, float)) or p <= 0 for p in pix[:3]):
                    raise ModelError(f"{self.source}: Spacingd pixdim {spec['pixdim']!r} must be sizes in mm above 0")
                dims = [d * s / float(p) for d, s, p in zip(dims, spacing, pix)]
                spacing = [float(p) for p in pix[:3]]
            elif name == "Resized" and spec.get("spatial_size") is not None:
                size = spec["spatial_size"]
                size = size if isinstance(size, (list, tuple)) else [size] * 3
                dims = [d if int(v) <= 0 else float(v) for d, v in zip(dims, size)]
            elif name == "Zoomd" and spec.get("zoom") is not None:
                zoom = spec["zoom"] if isinstance(spec["zoom"], (list, tuple)) else [spec["zoom"]] * 3
                dims = [d * float(z) for d, z in zip(dims, zoom)]
            else:
                continue
            kept += channels * float(np.prod(dims))
        # the kept transform outputs, their gradients, and the model grid's input, logits and relevance
        need = 4.0 * (2 * kept + 4 * (channels + 1) * float(np.prod(dims)))
        check_allocation(need, f"case {source} through the bundle's transforms (model grid about "
                               f"{tuple(int(round(d)) for d in dims)})", self.source,
                         "check the transforms' pixdim / spatial_size, or crop the case")

    def prepare(self, case, modalities: list[str], network, device: torch.device, dtype=torch.float32,
                source: str = "case") -> BundleInput:
        """The case through the bundle's transforms (graph kept for the relevance's way back)."""
        from monai.data import MetaTensor

        channels = match_modalities(case.modalities, modalities, source)
        image = np.asarray(case.image[channels], dtype=np.float32)
        file_order = np.ascontiguousarray(np.moveaxis(case.grid.from_napari(image), -1, 0))  # (C, i, j, k)
        leaf = torch.from_numpy(file_order).requires_grad_(True)

        def entered(t: torch.Tensor):
            return MetaTensor(t, affine=torch.as_tensor(np.asarray(case.grid.affine), dtype=torch.float64),
                              meta={"original_affine": np.asarray(case.grid.affine), "space": "RAS",
                                    "filename_or_obj": case.name, "spatial_shape": np.asarray(t.shape[1:])})

        self._check_sizes(file_order.shape, case.grid, source)
        transforms = self.transforms()
        if len(self.inputs) == 1:
            data = {self.key: entered(leaf)}
        else:  # one file per key, as LoadImaged(image_only=False) gives them (with their meta dicts)
            data = {k: entered(leaf[i:i + 1]) for i, k in enumerate(self.inputs)}
            data.update({f"{k}_meta_dict": dict(data[k].meta) for k in self.inputs})
        with torch.enable_grad():
            for spec, t in zip(self.specs, transforms):
                try:
                    data = t(data)
                except ModelError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a transform's arguments that fail on this case
                    raise ModelError(f"{self.source}: preprocessing transform {spec['_target_']} failed on case "
                                     f"{source} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                                     "; check its arguments in inference.json") from exc
        if self.key not in data or self.invert_key not in data:
            raise ModelError(f"{self.source}: the preprocessing gives no {self.key!r} (the network's input) or no "
                             f"{self.invert_key!r} (what Invertd inverts) for case {source}")
        out = data[self.key]
        x = _plain(out).detach().float()
        shape = tuple(x.shape[1:])
        window = self.window or shape
        pads = window_padding(shape, window)
        xp = _pad(x[None], pads, self.padding_mode, self.cval)
        return BundleInput(x=xp.to(device=device, dtype=dtype), pads=pads, channels=channels, bounds=None,
                           network=network, pipeline=self, grid=case.grid, leaf=leaf, transformed=out,
                           reference=data[self.invert_key], transforms=transforms)


@dataclass
class BundleInput(PreparedInput):
    """A case through a bundle's transforms; the maps between the model grid and the case grid."""

    maps_grid: ClassVar[bool] = True
    pipeline: BundlePipeline | None = None
    grid: object = None
    leaf: torch.Tensor | None = None  # the case (C, i, j, k), files' voxel order, requires grad
    transformed: object = None  # the network's input as the transforms give it (with its graph)
    reference: object = None  # the MetaTensor whose applied operations Invertd undoes (orig_keys)
    transforms: list = field(default_factory=list)
    _inverted: object = None
    _logits_leaf: torch.Tensor | None = None

    def _napari(self, a: torch.Tensor) -> torch.Tensor:
        """(K, i, j, k) files' order -> (1, K, Z, Y, X)."""
        arr = a.detach().double().cpu().numpy()
        return torch.from_numpy(self.grid.to_napari(np.ascontiguousarray(np.moveaxis(arr, 0, -1))))[None]

    def _file_order(self, a: torch.Tensor) -> torch.Tensor:
        """(1, K, Z, Y, X) -> (K, i, j, k)."""
        arr = self.grid.from_napari(a[0].detach().double().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))

    def _like_transformed(self, t: torch.Tensor):
        """``t`` as a MetaTensor with the inverted key's meta (its affine in it: given twice, MONAI warns)."""
        from monai.data import MetaTensor

        out = MetaTensor(t, meta=copy.deepcopy(self.reference.meta))
        out.affine = self.reference.affine  # the MetaTensor's own, which its meta may hold stale
        return out

    def outputs_to_case(self, blended: torch.Tensor) -> torch.Tensor:
        """Logits (1, K, padded model grid) -> the case grid by the transforms' inverse (as Invertd)."""
        import monai.transforms as mt

        key = self.pipeline.invert_key
        leaf = self.crop(blended)[0].detach().float().cpu().requires_grad_(True)
        logits = self._like_transformed(leaf)
        logits.applied_operations = copy.deepcopy(self.reference.applied_operations)
        invertible = [t for t in self.transforms if isinstance(t, mt.InvertibleTransform)]
        data = {key: logits}
        with torch.enable_grad():
            for t in reversed(invertible):
                data = t.inverse(data)
        inverted = data[key]
        if tuple(inverted.shape[1:]) != tuple(self.leaf.shape[1:]):
            raise ModelError(f"{self.pipeline.source}: the inverse transforms give {tuple(inverted.shape[1:])}, not "
                             f"the case's {tuple(self.leaf.shape[1:])} voxels")
        self._inverted, self._logits_leaf = inverted, leaf
        return self._napari(inverted).float()

    def start_to_model(self, start: torch.Tensor, blended: torch.Tensor):
        """Start relevance on the case grid -> the model grid by the transpose of the inverse transforms."""
        s = self._file_order(start).to(self._inverted.dtype)
        (g,) = torch.autograd.grad(self._inverted.as_tensor(), self._logits_leaf, grad_outputs=s, retain_graph=True,
                                   allow_unused=True)
        g = torch.zeros_like(self._logits_leaf) if g is None else g
        return self.pad(g.double()[None]).to(blended.device), 0.0

    def relevance_to_case(self, total: torch.Tensor) -> torch.Tensor:
        """Input relevance (1, C, padded model grid) -> the case grid by the transpose of the transforms (and
        of the inferer's padding: a replicated or reflected voxel's relevance returns to the voxel it copies;
        constant padding is not the case's and keeps its share, which the ledger books as absorbed)."""
        mode = self.pipeline.padding_mode if self.pipeline is not None else "constant"
        if mode == "constant" or not any(b or a for b, a in self.pads):
            r = self.crop(total)[0]
        else:
            inner = torch.zeros_like(self.crop(total), dtype=total.dtype, requires_grad=True)
            with torch.enable_grad():
                (r,) = torch.autograd.grad(_pad(inner, self.pads, mode, 0.0), inner, grad_outputs=total)
            r = r[0]
        r = r.to(self.leaf.dtype).cpu()
        (g,) = torch.autograd.grad(_plain(self.transformed), self.leaf, grad_outputs=r, retain_graph=True)
        return self._napari(g)


    def label_on_case(self, blended: torch.Tensor) -> np.ndarray | None:
        """The label the bundle's own postprocessing makes of the blended logits, on the case grid.

        Activations, thresholds or argmax, connected components and the inversion run in the bundle's order
        and with its options (``Invertd(nearest_interp=True)`` inverts with nearest-neighbour interpolation);
        several binary channels become bit k of the label, as napari-lrp writes region models.

        Parameters
        ----------
        blended : torch.Tensor
            (1, K, padded model grid) logits.

        Returns
        -------
        numpy.ndarray or None
            uint8 (Z, Y, X); None when the bundle's postprocessing does not make a label napari-lrp reproduces.
        """
        import monai.transforms as mt
        from monai.transforms.utils import convert_applied_interp_mode

        steps = self.pipeline.post if self.pipeline is not None else None
        if not steps:
            return None
        pred = self._like_transformed(self.crop(blended)[0].detach().float().cpu())
        inverted = False
        for step in steps:
            name, kw = step["_target_"], {k: v for k, v in step.items() if k != "_target_"}
            if name == "Invertd":
                ops = self.reference.applied_operations
                pred.applied_operations = copy.deepcopy(
                    convert_applied_interp_mode(ops, mode="nearest", align_corners=None) if kw.get("nearest_interp")
                    else ops)
                pred = self._invert(pred)
                inverted = True
            else:
                pred = getattr(mt, name[:-1])(**kw)(pred)
        if not inverted:  # the label is on the model grid: it goes to the case grid as a label does
            pred.applied_operations = copy.deepcopy(convert_applied_interp_mode(
                self.reference.applied_operations, mode="nearest", align_corners=None))
            pred = self._invert(pred)
        label = torch.as_tensor(pred).round()
        if label.shape[0] > 1:  # binary channels (sigmoid and threshold): bit k is channel k
            weights = (2 ** torch.arange(label.shape[0], dtype=torch.float64)).view(-1, 1, 1, 1)
            label = (label.double() * weights).sum(0, keepdim=True)
        return self._napari(label.double())[0, 0].numpy().astype(np.uint8)

    def _invert(self, pred):
        """``pred`` (a MetaTensor with the applied operations to undo) through the transforms' inverse."""
        import monai.transforms as mt

        key = self.pipeline.invert_key
        data = {key: pred}
        for t in reversed([t for t in self.transforms if isinstance(t, mt.InvertibleTransform)]):
            data = t.inverse(data)
        return data[key]


#: the sliding window's padding modes (torch.nn.functional.pad's, which MONAI's sliding_window_inference uses)
PADDING_MODES = ("constant", "replicate", "reflect", "circular")


def _pad(t: torch.Tensor, pads, mode: str, cval: float) -> torch.Tensor:
    """Pad the last three axes as MONAI's sliding window does (``pads``: (before, after) per axis)."""
    if mode == "constant" and not cval:
        return pad_spatial(t, pads)
    flat = [v for b, a in reversed(pads) for v in (b, a)]
    if not any(flat):
        return t
    return torch.nn.functional.pad(t, flat, mode=mode, value=cval) if mode == "constant" else \
        torch.nn.functional.pad(t, flat, mode=mode)


def bundle_pipeline(config, trust: bool = False) -> BundlePipeline | None:
    """The pipeline of a bundle's inference configuration.

    Only what napari-lrp runs is resolved: the transforms it applies (loading and typing transforms and
    ``_disabled_`` ones are never evaluated) and the inferer. A transform of the bundle's own ``scripts/`` runs
    only with ``trust``, and only where its outputs are voxels of its inputs (:class:`_Rearrangement`).

    Parameters
    ----------
    config : BundleConfig
        The inference configuration (:mod:`napari_lrp.models.bundle_config`).
    trust : bool
        Whether the bundle's own code may run.

    Returns
    -------
    BundlePipeline or None
        None when it has no ``preprocessing``.
    """
    source = config.source
    if not config.has("preprocessing"):
        return None
    entries = _transform_entries(config)
    inputs, key = _input_keys(config, entries)
    specs, kinds = [], []
    for at, where, target, item in entries:
        if target.startswith(BUNDLE_CODE_PREFIX):
            cls = bundle_class(target, config.folder, source, trust, base=object, what=f"{where}._target_")
            spec = {k: v for k, v in config.resolve(item, at).items() if not k.startswith("_")}
            specs.append({**spec, "_target_": target, "_class_": cls})
            kinds.append(target)
            continue
        deepedit = target.startswith("monai.apps.deepedit.transforms.") and target.rsplit(".", 1)[-1] in GUIDANCE
        name = target.rsplit(".", 1)[-1] if deepedit else _short(target, source, where, "monai.transforms.")
        if name not in SUPPORTED:
            raise ModelError(f"{source}: {where} {name} is not supported: napari-lrp maps relevance back through "
                             f"{', '.join(sorted(ROUTING | RESAMPLING))} and passes {', '.join(sorted(INTENSITY))}; "
                             "remove it from preprocessing or ask for it")
        if name in LOADING:  # the case is loaded already: these are never evaluated
            continue
        item = config.resolve(item, at)
        if name in GUIDANCE:
            specs.append({**{k: v for k, v in item.items() if not k.startswith("_")}, "_target_": name})
            kinds.append(name)
            continue
        keys = _listed(item.get("keys"))
        acting = [k for k in keys if k in inputs or k == key]
        if not acting:
            raise ModelError(f"{source}: {where} {name} does not act on the image key {key!r} (keys {keys})")
        spec = {k: v for k, v in item.items() if not k.startswith("_")}
        spec["keys"] = acting
        if len(keys) > 1 or len(inputs) > 1:  # the label and other keys of the bundle are not there in napari-lrp
            spec["allow_missing_keys"] = True
            for k in ("mode", "padding_mode", "align_corners", "dtype"):  # per-key options: the image's
                if isinstance(spec.get(k), list) and len(spec[k]) == len(keys):
                    picked = [spec[k][keys.index(a)] for a in acting]
                    spec[k] = picked[0] if len(picked) == 1 else picked
        if name == "CropForegroundd" and spec.get("source_key") not in (None, *acting):
            raise ModelError(f"{source}: {where} crops by {spec['source_key']!r}; napari-lrp has the image only")
        spec["_target_"] = name
        specs.append(spec)
        kinds.append(name)
    return BundlePipeline(source=source, key=key, specs=specs, kinds=kinds, post=_postprocessing(config, trust),
                          inputs=inputs, invert_key=_invert_key(config, inputs, key),
                          added_channels=added_channels(config), **_inferer_settings(config))


def _listed(keys) -> list:
    return [keys] if isinstance(keys, str) else list(keys) if isinstance(keys, (list, tuple)) else []


def _transform_entries(config) -> list[tuple[str, str, str, dict]]:
    """(key path, place in messages, target, entry as written) of the preprocessing's transforms in use."""
    source = config.source
    target, items = config.compose("preprocessing")
    if items is None:
        raise ModelError(f"{source}: preprocessing must be a Compose ({{'_target_': 'Compose', 'transforms': [...]}})")
    if target is not None and _short(target, source, "preprocessing", "monai.transforms.") != "Compose":
        raise ModelError(f"{source}: preprocessing must be a Compose of transforms, not {target!r}")
    entries = []
    for at, where, item in items:
        if not isinstance(item, dict) or "_target_" not in item:
            raise ModelError(f"{source}: {where} is not a transform ({{'_target_': ..., ...}})")
        if config.disabled(item, at):
            continue
        name = config.resolve(item["_target_"], f"{at}#_target_")
        if not isinstance(name, str):
            raise ModelError(f"{source}: {where}._target_ must be a class name, got {name!r}")
        entries.append((at, where, name, item))
    return entries


def _input_keys(config, entries) -> tuple[list[str], str]:
    """The keys the case's channels enter as and the network's input key.

    The network reads ``image`` (MONAI's evaluators do); a bundle that loads several files under keys of
    their own, transforms them and merges them into ``image`` (the CECT bundle's three phases) takes one
    channel per key of its first transform; otherwise the case enters whole as the loaded image key."""
    loaded, acted = None, []
    for at, _where, target, item in entries:
        name = target.rsplit(".", 1)[-1]
        if target.startswith(BUNDLE_CODE_PREFIX):
            acted.append([])
        elif name in LOADING:  # keys as written (loading transforms are never evaluated)
            keys = _listed(item.get("keys"))
            if loaded is None and keys and all(isinstance(k, str) and not k.startswith(("$", "@")) for k in keys):
                loaded = keys
        elif name in SUPPORTED:
            acted.append([k for k in _listed(config.resolve(item.get("keys"), f"{at}#keys")) if isinstance(k, str)])
    first = next((keys for keys in acted if keys), [])
    if "image" not in (loaded or []) + first and len(first) > 1 and any("image" in keys for keys in acted):
        return first, "image"
    source_keys = loaded or first
    key = "image" if "image" in source_keys else source_keys[0] if source_keys else "image"
    return [key], key


def _invert_key(config, inputs: list[str], key: str) -> str:
    """The key the postprocessing's Invertd inverts (its ``orig_keys``), where the case enters by it."""
    if not config.has("postprocessing"):
        return key
    for at, name, _target, item in _value_steps(config):
        if name == "Invertd" and "orig_keys" in item:
            orig = _listed(config.resolve(item["orig_keys"], f"{at}#orig_keys"))
            if orig and orig[0] in (*inputs, key):
                return orig[0]
    return key


def added_channels(config) -> int:
    """The input channels a bundle's transforms add beyond the case's: DeepEdit's guidance signal, one channel
    per label (``len(label_names)``) after its ``number_intensity_ch`` image channels.

    Parameters
    ----------
    config : BundleConfig
        The inference configuration.

    Returns
    -------
    int
    """
    if not config.has("preprocessing"):
        return 0
    entries = {target.rsplit(".", 1)[-1]: (at, item) for at, _where, target, item in _transform_entries(config)}
    if "AddGuidanceSignalDeepEditd" not in entries:
        return 0
    at, item = entries.get("AddGuidanceFromPointsDeepEditd", entries["AddGuidanceSignalDeepEditd"])
    names = config.resolve(item.get("label_names"), f"{at}#label_names")
    if not isinstance(names, dict) or not names:
        raise ModelError(f"{config.source}: {at} adds one guidance channel per label, but its label_names is not a "
                         f"mapping of label names to values ({names!r:.60})")
    return len(names)


def input_keys(config) -> list[str]:
    """The keys a bundle's case enters as, one per channel (no code is run and nothing is refused).

    Parameters
    ----------
    config : BundleConfig
        The inference configuration.

    Returns
    -------
    list of str
        One key, or one per file where the preprocessing merges several into the network's input.
    """
    if not config.has("preprocessing"):
        return []
    return _input_keys(config, _transform_entries(config))[0]


#: postprocessing transforms that make the bundle's label (the rest, saving and typing, change no value)
LABEL_STEPS = frozenset({"Activationsd", "AsDiscreted", "Invertd", "KeepLargestConnectedComponentd"})
NO_VALUE_STEPS = frozenset({"SaveImaged", "EnsureTyped", "ToTensord", "ToDeviced", "CopyItemsd", "DeleteItemsd",
                            "CastToTyped", "ToNumpyd", "Identityd"})


def _value_steps(config) -> list[tuple[str, str, str, dict]]:
    """(key path, short name, target, entry) of the postprocessing steps that change values, in order."""
    steps = []
    for at, _where, item in config.compose("postprocessing")[1] or []:
        target = item.get("_target_") if isinstance(item, dict) else None
        name = str(target).rsplit(".", 1)[-1]
        if name not in NO_VALUE_STEPS:
            steps.append((at, name, str(target), item if isinstance(item, dict) else {}))
    return steps


def _is_painting(steps, i: int, trust: bool = False) -> bool:
    """Whether step ``i`` is the last one and paints the label from the region channels: MONAI's ``Lambdad``
    (its function a restricted lambda), or with ``trust`` a transform of the bundle's own ``scripts/``."""
    _at, name, target, _item = steps[i]
    last = i == len(steps) - 1
    return last and (name == "Lambdad" and target in ("Lambdad", "monai.transforms.Lambdad")
                     or trust and target.startswith(BUNDLE_CODE_PREFIX))


def _postprocessing(config, trust: bool = False) -> list[dict] | None:
    """The label-making steps of the bundle's postprocessing (see :data:`LABEL_STEPS`), or None (with a warning
    naming the step) when a step napari-lrp does not reproduce changes the label. A last step painting the
    regions into one label is left to the card (:func:`label_painting`)."""
    if not config.has("postprocessing"):
        return None
    steps, value_steps = [], _value_steps(config)
    for i, (at, name, target, item) in enumerate(value_steps):
        if _is_painting(value_steps, i, trust):
            break
        if name not in LABEL_STEPS or ("." in target and not target.startswith("monai.transforms.")):
            own = " (the bundle's own code: with trust=True napari-lrp runs it where it paints the label last)" \
                if target.startswith(BUNDLE_CODE_PREFIX) else ""
            warnings.warn(f"{config.source}: {at} {target} is not reproduced by napari-lrp{own}; the prediction is "
                          "the argmax (or thresholds) of the logits on the case grid instead of the bundle's own label",
                          UserWarning, stacklevel=2)
            return None
        spec = config.resolve({k: v for k, v in item.items() if k not in ("keys", "_target_")}, at)
        if name == "Invertd":
            spec = {"nearest_interp": bool(spec.get("nearest_interp", True))}
        else:
            spec = {k: v for k, v in spec.items() if k not in ("allow_missing_keys", "dtype")}
        steps.append({"_target_": name, **spec})
    return steps or None


#: the most region channels whose combinations a painting is evaluated on (2**K label values)
MAX_PAINTED_REGIONS = 8


def label_painting(config, n_regions: int, trust: bool = False) -> tuple[list[int], bool] | None:
    """The label value a bundle's last postprocessing step paints for every combination of its region channels.

    BraTS' bundle paints ``torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, ...))`` over its thresholded
    channels (a restricted lambda, :mod:`napari_lrp.models.bundle_config`); the CECT bundle merges its channels
    with a transform of its own ``scripts/`` (run only with ``trust``). The step is run once on the 2**K
    combinations, so a prediction's region bits map to the bundle's label value by table.

    Parameters
    ----------
    config : BundleConfig
        The inference configuration.
    n_regions : int
        The network's output channels K.
    trust : bool
        Whether the bundle's own code may run.

    Returns
    -------
    tuple or None
        (2**K values, entry b for the regions set in b; whether a ``Lambdad`` painted them), or None when the
        postprocessing ends in no such step.
    """
    if not config.has("postprocessing") or n_regions < 2:
        return None
    steps = _value_steps(config)
    if not steps or not _is_painting(steps, len(steps) - 1, trust):
        return None
    at, name, target, item = steps[-1]
    if n_regions > MAX_PAINTED_REGIONS:
        raise ModelError(f"{config.source}: {at} paints {n_regions} region channels; napari-lrp reproduces a "
                         f"painting of at most {MAX_PAINTED_REGIONS}")
    lambdad = name == "Lambdad" and not target.startswith(BUNDLE_CODE_PREFIX)
    bits = torch.arange(2 ** n_regions)
    # two voxels a side: a painting that squeezes its input keeps the channel and combination axes
    combos = torch.stack([(bits >> k) & 1 for k in range(n_regions)]).view(n_regions, -1, 1, 1).expand(
        -1, -1, 2, 2).float().contiguous()
    try:
        if lambdad:
            func = config.resolve(item.get("func"), f"{at}#func")
            painted = func(combos) if callable(func) else None
        else:
            from monai.data import MetaTensor

            cls = bundle_class(target, config.folder, config.source, trust, base=object, what=f"{at}._target_")
            kwargs = {k: v for k, v in config.resolve(item, at).items() if not k.startswith("_")}
            painted = cls(**{**kwargs, "keys": "pred"})({"pred": MetaTensor(combos)})["pred"]
        painted = None if painted is None else torch.as_tensor(_plain(painted))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the file's function fails on the combinations in its own ways
        raise ModelError(f"{config.source}: {at}{'#func' if lambdad else ''} fails on the {n_regions} region "
                         f"channels: {type(exc).__name__}: {exc}") from exc
    if painted is None or tuple(painted.shape) != (1, 2 ** n_regions, 2, 2) or painted.is_floating_point() and \
            not torch.equal(painted, painted.round()) or not ((painted >= 0) & (painted <= 255)).all():
        raise ModelError(f"{config.source}: {at}{'#func' if lambdad else ''} does not paint the {n_regions} region "
                         "channels into one label of values 0 to 255; napari-lrp reproduces only such a painting")
    return [int(v) for v in painted[0, :, 0, 0]], lambdad


def _inferer_settings(config) -> dict:
    """The BundlePipeline fields of the configuration's inferer (window None: a SimpleInferer or none)."""
    source = config.source
    inferer = config.get("inferer")
    window, overlap, mode, padding_mode, cval = None, 0.25, "constant", "constant", 0.0
    if inferer is not None:
        if not isinstance(inferer, dict):
            raise ModelError(f"{source}: inferer must be an inferer ({{'_target_': ..., ...}}), not {inferer!r:.60}")
        name = _short(inferer.get("_target_"), source, "inferer", "monai.inferers.")
        if name == "SlidingWindowInferer":
            roi = inferer.get("roi_size")
            if not (isinstance(roi, list) and len(roi) == 3 and all(isinstance(v, int) and v > 0 for v in roi)):
                raise ModelError(f"{source}: inferer.roi_size must be three positive integers, got {roi!r}")
            window = tuple(roi)
            overlap = float(inferer.get("overlap", 0.25))
            mode = str(inferer.get("mode", "constant"))
            if mode not in ("constant", "gaussian"):
                raise ModelError(f"{source}: inferer.mode {mode!r} is not 'constant' or 'gaussian'")
            if float(inferer.get("sigma_scale", 0.125)) != 0.125:
                raise ModelError(f"{source}: inferer.sigma_scale other than 0.125 is not supported yet")
            padding_mode = str(inferer.get("padding_mode", "constant"))
            if padding_mode not in PADDING_MODES:
                raise ModelError(f"{source}: inferer.padding_mode {padding_mode!r} is not one of "
                                 f"{', '.join(PADDING_MODES)}")
            cval = float(inferer.get("cval", 0.0))
        elif name != "SimpleInferer":
            raise ModelError(f"{source}: inferer {name!r} is not supported (SlidingWindowInferer, SimpleInferer)")
    return {"window": window, "overlap": overlap, "mode": mode, "padding_mode": padding_mode, "cval": cval}
