"""``explain``: a model and a case in, relevance on the case grid out (DESIGN sections 3 and 6).

The pipeline above the engine: preprocessing from the model card (``models.preprocess``), one forward
pass and a backward relevance pass (``lrp.engine``), mapping back to the case grid; the result, an
:class:`Explanation`, owns its outputs (``save``) and its settings (``settings``, ``load_settings``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .io.atomic import check_outside_inputs, replacing, replacing_folder, write_text
from .io.case import Case, save_nifti
from .io.nifti import CaseError
from .lrp.engine import Cancelled, Propagation, select_output
from .lrp.filters import Filter, filters_from_specs, format_filter, heatmap
from .lrp.kernels import onednn_convolutions
from .lrp.ledger import Ledger
from .lrp.rule_specs import rules_from_specs, rules_to_specs
from .lrp.targets import RegionTarget, needs_ground_truth, predict, region_mask, start_relevance, target_of
from .metrics.components import components_table, resolve_target
from .metrics.concepts import (
    channel_relevance,
    channel_table,
    concept_measures,
    conditional_relevance,
    layer_conditions,
)
from .metrics.table import measure
from .models.card import Model, ModelCard, ModelError
from .models.preprocess import PreparedInput, prepare_input
from .runs import RunRecord
from .tiling import TiledRun, check_tiling, run_tiled
from .uncertainty import Sampling, run_sampled

__all__ = ["Explanation", "PlacedRelevance", "explain", "predict_case", "load_settings", "save_settings",
           "filters_from_specs", "package_version"]


def package_version() -> str:
    """The installed napari-lrp version (from the distribution's metadata)."""
    try:
        return _dist_version("napari-lrp")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "0+unknown"


def _default_card(network: nn.Module, case: Case) -> ModelCard:
    return ModelCard(name=type(network).__name__, architecture={"class": type(network).__name__, "kwargs": {}},
                     modalities=list(case.modalities),
                     input={"spatial_size": None, "intensity": "none", "divisible": 1})


@dataclass
class _Run(RunRecord):
    """What a refilter needs from the one forward pass: the propagation and the start relevance (model
    grid), besides the run's fixed choices (:class:`~napari_lrp.runs.RunRecord`)."""

    propagation: Propagation
    start: torch.Tensor

    def explanation(self, filters: dict, keep=None, progress=None) -> Explanation:
        """Propagate ``start`` with ``filters`` and map the result to the case grid."""
        res = self.propagation.propagate(self.start, filters=filters, keep=keep, progress=progress)
        crop = self.prepared.crop
        rel = crop(res.relevance)[0].float().cpu().numpy()
        unf = rel if res.unfiltered is res.relevance else crop(res.unfiltered)[0].float().cpu().numpy()
        return self.explanation_of(rel, unf, filters, res.ledger, kept=res.kept)


@dataclass
class _MethodRun(RunRecord):
    """A run of another attribution method (:mod:`napari_lrp.methods`): its map on the case grid; only the
    'input' (heatmap) filter applies, since the layer filters act inside LRP's backward pass."""

    method: str
    options: dict
    attribution: np.ndarray
    start: float

    @property
    def propagation(self):
        from types import SimpleNamespace

        return SimpleNamespace(shapes={})

    def explanation(self, filters: dict, keep=None, progress=None) -> Explanation:
        layer_filters = [k for k in filters if k != "input"]
        if layer_filters:
            raise ValueError(f"{self.method} has no backward pass through the layers, so only the 'input' filter "
                             f"applies; got filters for {', '.join(map(str, layer_filters))} (layer filters are LRP's)")
        rel = filters["input"](self.attribution[None])[0] if "input" in filters else self.attribution
        ledger = Ledger(start=self.start, end=float(rel.sum(dtype=np.float64)))
        return self.explanation_of(rel, self.attribution, filters, ledger, method=self.method,
                                   method_options=dict(self.options))


@dataclass(frozen=True)
class PlacedRelevance:
    """Relevance at a layer's output placed over the case: ``relevance`` (C', Z', Y', X') float32 on the
    layer's own grid; ``scale`` and ``translate`` (mm, Z/Y/X) put its voxels on the case's world grid
    (larger voxels where the network has downsampled), as napari's layer scale and translate."""

    relevance: np.ndarray
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]


@dataclass
class Explanation:
    """Relevance of one case under one model.

    relevance: float32 (C, Z, Y, X) on the case grid, channels in ``modalities`` order (the model's);
    prediction: uint8 (Z, Y, X); logits: float32 (K, Z, Y, X); ledger: where relevance went;
    kept: {module name: relevance at its output, on the model grid (1, C', Z', Y', X') torch};
    unfiltered_relevance: relevance before the run's 'input' filter (C, Z, Y, X).

    A sampled run (``explain(..., mc_samples=T, dropout=p, tta="flips")``, :mod:`napari_lrp.uncertainty`)
    keeps the mean over its draws in ``relevance`` (and the mean prediction in ``prediction``, the mean
    logits in ``logits``) and fills: relevance_std (C, Z, Y, X) population sd over the draws;
    predictive_entropy and mutual_information (Z, Y, X) in nats; mean_probability (K, Z, Y, X);
    samples (T, C, Z, Y, X) every draw's relevance before the run's input filter; sampling (T, p, seed, ...).
    """

    relevance: np.ndarray
    prediction: np.ndarray
    logits: np.ndarray
    modalities: list[str]
    case: Case
    model: Model
    preset: str
    filters: dict[str, Filter]
    target: object
    target_class: int
    ledger: Ledger
    kept: dict = field(default_factory=dict)
    unfiltered_relevance: np.ndarray | None = None
    _run: _Run | None = field(default=None, repr=False)
    relevance_std: np.ndarray | None = None
    predictive_entropy: np.ndarray | None = None
    mutual_information: np.ndarray | None = None
    mean_probability: np.ndarray | None = None
    samples: np.ndarray | None = field(default=None, repr=False)
    sample_input_filter: Filter | None = field(default=None, repr=False)
    sampling: dict | None = None
    #: "lrp" or a name of napari_lrp.methods.METHODS, with its options
    method: str = "lrp"
    method_options: dict = field(default_factory=dict)
    #: a tiled run (explain(window=...)): window, overlap, blend, number of windows
    tiling: dict | None = None
    #: what explain() was asked beyond preset, filters and target: rules, strict, output_index, the draws
    #: (mc_samples, dropout, seed, tta, dropout_at, batch_size) and max_memory; written into the settings
    run_settings: dict = field(default_factory=dict)

    @property
    def relevance_cv(self) -> np.ndarray | None:
        """Coefficient of variation sd / |mean| per voxel and channel (0 where the mean is 0)."""
        if self.relevance_std is None:
            return None
        mean = np.abs(self.relevance)
        return np.divide(self.relevance_std, mean, out=np.zeros_like(mean), where=mean > 0)

    # ---- derived results without a new pass ---------------------------------------------------
    def refilter(self, filters: Mapping[str, Filter] | None, keep=None, progress=None) -> Explanation:
        """A new Explanation with other filters from the kept forward pass (no forward pass runs)."""
        return self._run.explanation(dict(filters or {}), keep, progress)

    @property
    def layer_rules(self) -> dict:
        """{layer name: Rule} as this run's kept pass has them now (empty for other methods)."""
        return dict(self._run.propagation.layer_rules) if isinstance(self._run, _Run) else {}

    def with_rules(self, rules: Mapping, filters: Mapping[str, Filter] | None = None,
                   incompatible: str = "raise") -> Explanation:
        """A new Explanation with other rules for some layers ({layer name | glob | type: Rule}), from the kept
        forward pass where the rules allow (epsilon to epsilon; gamma, alpha-beta, z-plus among themselves;
        see ``Propagation.replace_rules``); ``filters`` default this run's. The rules stay replaced in the
        kept pass (a later ``refilter`` uses them). A layer whose rule cannot change so raises ValueError, or
        with ``incompatible="keep"`` keeps its rule (e.g. the first layer's z-box)."""
        if not isinstance(self._run, _Run):
            raise ValueError("with_rules needs a single LRP run (not another method or a sampled run)")
        self._run.propagation.replace_rules(rules, incompatible)
        recorded = dict(getattr(self._run, "run_settings", {}))
        recorded["rules"] = {**recorded.get("rules", {}), **dict(rules)}
        self._run.run_settings = recorded
        return self._run.explanation(dict(self.filters if filters is None else filters))

    def heatmap(self, f: Filter | None) -> np.ndarray:
        """The relevance (C, Z, Y, X) under heatmap filter ``f``, which replaces the run's own 'input'
        filter (None: the run's relevance as it is); see :func:`napari_lrp.lrp.filters.heatmap`. No pass runs.
        A sampled run: the mean over the draws of each draw's relevance under ``f``."""
        if self.samples is not None and f is not None:
            return self.sample_heatmaps(f).astype(np.float64).mean(0).astype(np.float32)
        return heatmap(self.unfiltered_relevance, self.relevance, f)

    @property
    def input_image(self) -> np.ndarray:
        """The case channels in the model's order (C, Z, Y, X), as the relevance."""
        return self.case.image[self._run.prepared.channels]

    @property
    def network(self) -> nn.Module:
        """The module the relevance was propagated through (the model's network, or its resizing wrapper
        when the card fixes a spatial size): its module names are the names filters and ``kept`` use."""
        return self._run.prepared.network

    @property
    def input_grid_shape(self) -> tuple[int, int, int]:
        """Spatial shape (Z', Y', X') of the network's input: the case grid padded to the card's divisibility."""
        return tuple(int(v) for v in self._run.prepared.x.shape[2:])

    @property
    def kept_pass(self) -> Propagation | None:
        """The run's kept forward pass (a single LRP run; None for tiled or sampled runs and other methods)."""
        return self._run.propagation if isinstance(self._run, _Run) else None

    @property
    def model_start(self) -> torch.Tensor | None:
        """The start relevance on the model grid (1, K, Z', Y', X') of a single LRP run (None otherwise)."""
        return self._run.start if isinstance(self._run, _Run) else None

    @property
    def prepared_input(self) -> PreparedInput:
        """The model-grid input of the run (padding, channels; ``pad``/``crop`` between the grids)."""
        return self._run.prepared

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """{module name: output shape (N, C', Z', Y', X')} of the forward pass, for layer tables."""
        return dict(self._run.propagation.shapes)

    def kept_on_case_grid(self, name: str) -> PlacedRelevance:
        """Relevance at the output of module ``name`` (kept in the run: ``explain(..., keep=...)``) placed
        over the case grid (see :class:`PlacedRelevance`)."""
        if name not in self.kept:
            raise KeyError(f"no relevance kept at {name!r}; run explain(..., keep=[{name!r}]) or keep=True "
                           f"(kept: {', '.join(self.kept) or 'none'})")
        R = self.kept[name][0].float().cpu().numpy()
        prep = self._run.prepared
        grid = self.case.grid
        factor = np.array(self.input_grid_shape, dtype=float) / np.array(R.shape[-3:], dtype=float)
        pads = np.array([b for b, _a in prep.pads], dtype=float)
        scale = grid.spacing * factor
        translate = grid.translate - pads * grid.spacing + (factor - 1) / 2 * grid.spacing
        return PlacedRelevance(np.ascontiguousarray(R, dtype=np.float32), tuple(float(v) for v in scale),
                               tuple(float(v) for v in translate))

    # ---- settings and outputs -----------------------------------------------------------------
    def settings(self) -> dict:
        """The exact settings as JSON-able dict; ``explain(model, case, settings=...)`` reproduces the run."""
        import monai
        import nibabel

        target = self.target
        if isinstance(target, RegionTarget):
            target = target.name
        elif isinstance(target, np.ndarray):
            target = "mask"
        elif isinstance(target, tuple):
            target = list(target)
        return {
            "method": self.method,
            **({"method_options": {k: (v.tolist() if hasattr(v, "tolist") else v)
                                   for k, v in self.method_options.items()}} if self.method_options else {}),
            "preset": self.preset,
            "filters": [format_filter(k, f) for k, f in self.filters.items()],
            "target": target,
            "target_class": self.target_class,
            "model": {"path": self.model.path, "sha256": self.model.sha256, "name": self.model.card.name,
                      **({"nnunet": {"configuration": self.model.nnunet.configuration, "folds": self.model.nnunet.folds,
                                     "mirroring": self.model.nnunet.mirroring}} if self.model.nnunet else {})},
            "case": {"name": self.case.name, "files": list(self.case.files)},
            "rules": rules_to_specs(self.run_settings.get("rules")),
            "strict": bool(self.run_settings.get("strict", False)),
            "output_index": self.run_settings.get("output_index"),
            **({"max_memory": self.run_settings["max_memory"]} if self.run_settings.get("max_memory") else {}),
            "ledger": {"start": self.ledger.start, "end": self.ledger.end, "unaccounted": self.ledger.unaccounted,
                       "unhandled_operations": dict(self.ledger.unhandled)},
            **({"sampling": dict(self.sampling), "batch_size": self.run_settings.get("batch_size")}
               if self.sampling else {}),
            **({"tiling": dict(self.tiling)} if self.tiling else {}),
            "versions": {"napari_lrp": package_version(), "torch": torch.__version__, "monai": monai.__version__,
                         "nibabel": nibabel.__version__, "numpy": np.__version__},
        }

    def coefficients(self, tau_r: float = 0.5, tau_x: float = 0.1):
        """Inclusivity, signal distribution and mean power per channel and their mean (a DataFrame)."""
        return measure(self.relevance, self.input_image, self.case.ground_truth, self.modalities, tau_r, tau_x)

    def concepts(self, layer: str, progress=None):
        """The relevance at ``layer``'s output per channel for this run's target, with each channel's mean
        activation inside and outside the target region (:func:`napari_lrp.metrics.concepts.channel_relevance`);
        a tiled run (an nnU-Net folder, a bundle) sums it over its windows, one pass each."""
        if isinstance(self._run, TiledRun):
            return channel_table(self._run.layer_relevance_sums(layer, self.filters, progress))
        return channel_relevance(self, layer)

    def conditional(self, layer, channels=None, progress=None) -> np.ndarray:
        """The relevance (C, Z, Y, X) on the case grid with only ``channels`` of ``layer`` passed (CRP's
        conditional heatmap; a glob or ``{layer: channels}`` for condition sets over several layers), from the
        kept forward pass (:func:`napari_lrp.metrics.concepts.conditional_relevance`); a tiled run (an nnU-Net
        folder, a bundle) re-runs its windows and maps the result back to the case grid."""
        if isinstance(self._run, TiledRun):
            shapes = {n: int(s[1]) for n, s in self.layer_shapes.items() if len(s) == 5}
            conditions = layer_conditions(list(self.layer_shapes), shapes, layer, channels)
            return self._run.conditional(conditions, self.filters, progress)
        return conditional_relevance(self, layer, channels, progress)

    def concept_measures(self, layer: str, channels=None, tau_r: float = 0.5, tau_x: float = 0.1):
        """The inclusivities and mean power of each channel's conditional map at ``layer``, one row each."""
        return concept_measures(self, layer, channels, tau_r, tau_x)

    def components(self):
        """One row per lesion of the prediction (the run's class) and of the ground truth: size (voxels, ml),
        centre (RAS+ mm), Dice with the lesions of the other side it overlaps, detected / missed and true /
        false positive (:func:`napari_lrp.metrics.components.components_table`; 26-connected, numbered from
        the largest as ``target="component:K"`` and ``"gt-component:K"`` count them)."""
        return components_table(self.prediction == self.target_class, self.case.ground_truth,
                                self.case.grid.spacing, self.case.grid)

    def for_target(self, target) -> Explanation:
        """This run explaining another target (a mask, or a spec such as ``"component:2"``) of the same class,
        from the kept forward pass (a tiled run re-runs its windows); the run's filters apply."""
        run = self._run
        if not isinstance(run, (_Run, TiledRun)):
            raise ValueError("for_target needs a single LRP run or a tiled run (not another method or draws)")
        target, cls = resolve_target(target, self.model.card.classes, self.target_class,
                                     lambda: self.case.ground_truth, self.case.grid.spacing)
        if cls != self.target_class:
            raise ValueError(f"for_target keeps the run's class {self.target_class}; {target!r} names class {cls}")
        mask = region_mask(target, self.prediction, self.case.ground_truth if needs_ground_truth(target) else None,
                           cls)
        logits = torch.as_tensor(self.logits, dtype=torch.float64)[None]
        start_case = start_relevance(logits, mask, cls, getattr(target, "against", None))
        if isinstance(run, _Run):
            start = run.prepared.pad(start_case).to(run.start.dtype)
            new = dataclasses.replace(run, start=start, target=target)
        else:
            start, outside = run.prepared.start_to_model(start_case.to(run.blended.dtype), run.blended)
            new = dataclasses.replace(run, start=start, target=target, outside=outside,
                                      start_total=float(start_case.sum(dtype=torch.float64)))
        new.run_settings = dict(getattr(run, "run_settings", {}))
        return new.explanation(dict(self.filters))

    def lesions(self, tau_r: float = 0.5, tau_x: float = 0.1):
        """Lesion-wise measures, as the BraTS and ISLES challenges report lesion-wise metrics: one row per lesion
        of the prediction and of the ground truth (:meth:`components`) with the coefficients of its own map
        (the run explaining that lesion alone, ``component:K`` / ``gt-component:K``: input and ground-truth
        inclusivity, mu, mean power, mean over the channels) and the relevance it starts with."""
        table = self.components()
        rows = []
        for _i, r in table.iterrows():
            spec = f"{'component' if r.source == 'prediction' else 'gt-component'}:{int(r.component)}"
            lesion = self.for_target(spec)
            c = lesion.coefficients(tau_r, tau_x)
            mean = c[c.channel == "mean"].iloc[0]
            rows.append({"target": spec, "start_relevance": lesion.ledger.start,
                         **{k: float(mean[k]) for k in ("input_inclusivity", "groundtruth_inclusivity", "mu",
                                                         "mean_power")}})
        return pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1) if rows else table

    def target_region(self) -> np.ndarray | None:
        """The run's target region (Z, Y, X) bool on the case grid (None for the 'output' target)."""
        return region_mask(self.target, self.prediction, self.case.ground_truth if needs_ground_truth(self.target)
                           else None, self.target_class)

    def perturbation(self, order: str = "morf", relevance: np.ndarray | None = None, **options):
        """Region perturbation (:func:`napari_lrp.metrics.region_perturbation`) of this run: blocks of the
        model's input flipped in the order ``relevance`` (default this run's, (C, Z, Y, X) case grid) gives,
        scored by the target class's logit sum over the run's target region (the whole volume for 'output').
        order: 'morf', 'lerf' or 'random'; options: n_blocks, fill, steps, seed, batch. The forward passes
        run on the engine's convolution kernels, like the run's own."""
        from .metrics.perturbation import region_perturbation

        if self.model.pipeline is not None:
            raise ValueError(f"{self.model.path}: region perturbation runs on the model's input grid; for a model "
                             "with its own pre-processing and windows (nnU-Net folder, bundle) it is not available yet")
        prep = self._run.prepared
        rel = self.relevance if relevance is None else relevance
        R = prep.pad(torch.as_tensor(np.ascontiguousarray(rel), dtype=torch.float64)[None])[0]
        mask = self.target_region()
        if mask is None:
            mask = np.ones(self.prediction.shape, dtype=bool)
        mask_t = prep.pad(torch.as_tensor(np.ascontiguousarray(mask))[None, None].to(torch.float64))[0, 0] > 0
        with onednn_convolutions():  # the engine's convolution kernels (2-10x torch's im2col on the CPU)
            return region_perturbation(prep.network, prep.x, R, mask_t.cpu().numpy(), self.target_class, order,
                                       **options)

    def sample_heatmaps(self, f: Filter | None = None) -> np.ndarray | None:
        """Every draw's relevance (T, C, Z, Y, X) under heatmap filter ``f`` (None: the run's own input
        filter), as :meth:`heatmap` for the mean; None for a run without draws."""
        if self.samples is None:
            return None
        f = f if f is not None else self.sample_input_filter
        if f is None:
            return self.samples
        # the slider asks for the mean map and the spread of the same filter in a row: filter the draws once
        last = self.__dict__.get("_last_sample_maps")
        if last is None or last[0] != f:
            last = (f, np.stack([f(s[None])[0] for s in self.samples]))
            self.__dict__["_last_sample_maps"] = last
        return last[1]

    def coefficient_spread(self, f: Filter | None = None, tau_r: float = 0.5, tau_x: float = 0.1):
        """The coefficients of the mean map under heatmap filter ``f`` (None: the run's own input filter) and
        their spread over the draws: a DataFrame with the rows of :meth:`coefficients`, columns
        '<coefficient>' (of the mean map, :meth:`heatmap`) and '<coefficient>_sd' (population sd of the
        draws' coefficients); None for a run without draws."""
        maps = self.sample_heatmaps(f)
        if maps is None:
            return None
        image, truth = self.input_image, self.case.ground_truth
        mean_map = maps.astype(np.float64).mean(0).astype(np.float32)
        out = measure(mean_map, image, truth, self.modalities, tau_r, tau_x)
        tables = [measure(r, image, truth, self.modalities, tau_r, tau_x) for r in maps]
        numeric = list(out.select_dtypes("number").columns)
        values = np.stack([t[numeric].to_numpy(dtype=np.float64) for t in tables])
        for j, c in enumerate(numeric):
            out.insert(out.columns.get_loc(c) + 1, f"{c}_sd", values[:, :, j].std(0))
        return out

    def save(self, folder: str | os.PathLike, tau_r: float = 0.5, tau_x: float = 0.1) -> list[Path]:
        """Write every output of this run into ``folder`` as one unit and return the paths written.

        relevance_<modality>.nii.gz (one per channel), relevance_sum.nii.gz and prediction.nii.gz on the
        input file's grid (affine and header), coefficients.csv (:meth:`coefficients`) and settings.json
        (:meth:`settings`, with ``outputs``: exactly the files of this run). Everything is written into a
        temporary folder and moved into place as one unit: it replaces the outputs of the previous save into
        ``folder`` entirely (no file of another run stays beside these); files that no save wrote are never
        moved or deleted. If any write fails, ``folder`` is left exactly as it was and the error is raised.
        """
        target = check_outside_inputs(folder, [self.case.folder] if self.case.folder else [], "the case")
        names = [f"relevance_{m}.nii.gz" for m in self.modalities] + ["relevance_sum.nii.gz", "prediction.nii.gz",
                                                                      "coefficients.csv", "settings.json"]
        sampled = self.relevance_std is not None
        if sampled:
            names += [f"relevance_std_{m}.nii.gz" for m in self.modalities] + [
                "predictive_entropy.nii.gz", "mutual_information.nii.gz", "coefficient_spread.csv"]
        with replacing_folder(target, outputs_file="settings.json") as tmp:
            if sampled:  # mean relevance in relevance_*, the spread beside it
                for c, m in enumerate(self.modalities):
                    save_nifti(self.relevance_std[c], self.case, tmp / f"relevance_std_{m}.nii.gz")
                save_nifti(self.predictive_entropy, self.case, tmp / "predictive_entropy.nii.gz")
                save_nifti(self.mutual_information, self.case, tmp / "mutual_information.nii.gz")
                with replacing(tmp / "coefficient_spread.csv") as csv:
                    self.coefficient_spread(None, tau_r, tau_x).to_csv(csv, index=False)
            for c, m in enumerate(self.modalities):
                save_nifti(self.relevance[c], self.case, tmp / f"relevance_{m}.nii.gz")
            save_nifti(self.relevance.sum(0), self.case, tmp / "relevance_sum.nii.gz")
            save_nifti(self.prediction, self.case, tmp / "prediction.nii.gz")
            with replacing(tmp / "coefficients.csv") as csv:
                self.coefficients(tau_r, tau_x).to_csv(csv, index=False)
            save_settings(self, tmp / "settings.json", outputs=names)
        return [target / n for n in names]


def save_settings(exp: Explanation, path: str | os.PathLike, outputs: list[str] | None = None) -> Path:
    """Write the settings JSON atomically; ``outputs``: the files of the run it describes (written under
    'outputs', what the next save into the folder replaces)."""
    return write_text(path, json.dumps({**exp.settings(), **({"outputs": list(outputs)} if outputs else {})},
                                       indent=2))


def load_settings(path_or_dict) -> dict:
    """Keyword arguments for :func:`explain` from a settings JSON (file or dict)."""
    where = "settings" if isinstance(path_or_dict, dict) else str(path_or_dict)
    if isinstance(path_or_dict, dict):
        d = path_or_dict
    else:
        try:
            d = json.loads(Path(path_or_dict).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: settings are not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: settings must be a JSON object (as Explanation.settings() writes), not "
                         f"{type(d).__name__}")
    target = d.get("target", "region")
    if target == "mask":
        raise ValueError("these settings used a drawn mask as target; pass the mask as target=")
    if isinstance(target, list):
        target = tuple(target)
    out = {"preset": d.get("preset", "paper"), "filters": filters_from_specs(d.get("filters")),
           "target": target, "target_class": d.get("target_class"), "method": d.get("method", "lrp"),
           "method_options": d.get("method_options", {}), "rules": rules_from_specs(d.get("rules")),
           "strict": bool(d.get("strict", False)), "output_index": d.get("output_index"),
           "max_memory": d.get("max_memory")}
    sampling = d.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise ValueError(f"settings 'sampling' must be an object, not {sampling!r}")
    for key, default in (("mc_samples", 1), ("dropout", None), ("seed", 0), ("tta", None), ("dropout_at", "*")):
        out[key] = sampling.get(key, default)
    out["batch_size"] = d.get("batch_size")
    tiling = d.get("tiling") or {}
    if not isinstance(tiling, dict):
        raise ValueError(f"settings 'tiling' must be an object, not {tiling!r}")
    out["window"] = tuple(tiling["window"]) if tiling.get("window") else None
    out["overlap"] = tiling.get("overlap")
    out["blend"] = tiling.get("blend", "gaussian")
    return out


def _as_model(model, case: Case) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .models.loading import load_model

        return load_model(model)
    if isinstance(model, nn.Module):
        try:
            dev = next(model.parameters()).device
        except StopIteration:
            dev = torch.device("cpu")
        return Model(network=model, card=_default_card(model, case), device=dev)
    raise TypeError(f"model must be a napari_lrp Model, a torch module or a model path, not {type(model).__name__}")




def explain(model, case: Case, preset: str = "paper", filters: Mapping[str, Filter] | None = None,
            target="region", target_class: int | None = None, rules: Mapping | None = None, keep=None,
            progress: Callable[[int, int], None] | None = None, settings=None, strict: bool = False,
            output_index=None, mc_samples: int = 1, dropout: float | None = None, seed: int = 0,
            tta: str | None = None, dropout_at: str = "*", batch_size: int | None = None, method: str = "lrp",
            window=None, overlap: float | None = None, blend: str = "gaussian", max_memory: float | None = None,
            **method_options) -> Explanation:
    """Explain ``model``'s segmentation of ``case``.

    preset: a name of ``napari_lrp.lrp.PRESETS`` ('paper', 'epsilon-gamma-box', 'epsilon-plus-flat',
    'lrp0'); rules: {module name | glob | type: Rule} laid over the preset; filters: {'output' | 'input' |
    module name | glob: Filter}; target: 'region' (predicted region of the class), 'groundtruth', 'output',
    a mask (Z, Y, X) or a voxel (z, y, x); target_class: default the card's. settings: a settings JSON
    (path or dict) written by :func:`save_settings`, which fills the other arguments. One forward pass;
    ``refilter`` reuses it. An operation without a rule on the relevance path warns with its name
    (``ledger.unaccounted`` shows its cost); ``strict=True`` raises instead. ``output_index`` selects the
    segmentation output of a network that returns a list, tuple or dict (deep supervision, a VAE branch).

    Uncertainty (:mod:`napari_lrp.uncertainty`): ``mc_samples=T`` draws with the Dropout modules sampling
    (``dropout=p`` sets their rate, or inserts dropout after the activations named by ``dropout_at`` in a
    network without any), ``tta="flips"`` adds the 8 flips of the spatial axes; ``seed`` makes the draws
    reproducible, ``batch_size`` fixes the draws per batch. The result holds the mean relevance and the
    spread (``relevance_std``, ``predictive_entropy``, ``mutual_information``, ``coefficient_spread()``).

    method: "lrp" (default) or another attribution method of :data:`napari_lrp.methods.METHODS` (gradient,
    gradient_x_input, integrated_gradients, smoothgrad, guided_backprop, gradcam, occlusion) on the same
    target, with its options as keywords in Captum's words (``n_steps=``, ``baselines=``, ``layer=``, ...);
    the result is an Explanation all the same (only the 'input' filter applies to other methods).

    Tiling (:mod:`napari_lrp.tiling`): ``window=(Z, Y, X)`` runs sliding windows with ``overlap`` and a
    ``blend`` ('gaussian', 'constant', 'trimmed') in bounded memory; ``window="auto"`` picks the largest
    window whose LRP fits ``max_memory`` (bytes; default half the free memory), or the whole volume when it fits.
    ``overlap``: the fraction of a window shared with its neighbour; default 0.5 for a window you give, and
    0.125 when the window is "auto" or the memory plan tiles (every voxel is then computed about 1.3-1.5 times
    instead of up to 8 times at 0.5).

    Every argument that changes the relevance is written into :meth:`Explanation.settings` (rules, strict,
    output_index, the draws, the windows) and read back by ``settings=``, which replaces the arguments it
    holds: a run from its settings.json reproduces the relevance.
    """
    if settings is not None:
        try:
            return _explain_from_settings(model, case, settings, target_class, keep, progress, method_options)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if isinstance(exc, (ModelError, CaseError)) or "settings" in str(exc):
                raise
            where = "settings" if isinstance(settings, dict) else str(settings)
            try:
                again = type(exc)(f"{where}: these settings do not run: {exc}") if isinstance(exc, ValueError) \
                    else ValueError(f"{where}: these settings do not run: {type(exc).__name__}: {exc}")
            except TypeError:
                again = ValueError(f"{where}: these settings do not run: {exc}")
            raise again from exc
    return _explain_recorded(model, case, preset, filters, target, target_class, rules, keep, progress, strict,
                             output_index, mc_samples, dropout, seed, tta, dropout_at, batch_size, method, window,
                             overlap, blend, max_memory, False, **method_options)


def _explain_from_settings(model, case, settings, target_class, keep, progress, method_options):
    """:func:`explain` with every argument the settings hold read from them."""
    kw = load_settings(settings)
    window = kw["window"]
    return _explain_recorded(model, case, kw["preset"], kw["filters"], kw["target"],
                             kw["target_class"] if target_class is None else target_class, kw["rules"], keep,
                             progress, kw["strict"], kw["output_index"], kw["mc_samples"], kw["dropout"], kw["seed"],
                             kw["tta"], kw["dropout_at"], kw["batch_size"], kw["method"], window,
                             kw["overlap"] if window is not None else None,
                             kw["blend"] if window is not None else "gaussian", kw["max_memory"], True,
                             **{**kw["method_options"], **method_options})


def _explain_recorded(model, case, preset, filters, target, target_class, rules, keep, progress, strict,
                      output_index, mc_samples, dropout, seed, tta, dropout_at, batch_size, method, window, overlap,
                      blend, max_memory, from_settings: bool, **method_options) -> Explanation:
    """The run of :func:`explain`'s arguments, its settings recorded on the result."""
    check_tiling(window, overlap, blend)
    if max_memory is not None and (isinstance(max_memory, bool) or not float(max_memory) >= 1024):
        raise ValueError(f"max_memory is a budget in bytes (e.g. 4e9 for 4 GB), at least 1024; not {max_memory!r}")
    m = _as_model(model, case)
    if m.pipeline is not None and from_settings:
        window = None  # the model's own windows, which its settings recorded
    recorded = {"rules": dict(rules or {}), "strict": bool(strict), "output_index": output_index,
                "batch_size": batch_size, "max_memory": max_memory}
    try:
        exp = _explain_unrecorded(m, case, preset, filters, target, target_class, rules, keep, progress, strict,
                                  output_index, mc_samples, dropout, seed, tta, dropout_at, batch_size, method,
                                  window, overlap, blend, max_memory, **method_options)
    except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
        if _raised_outside(exc):  # inside torch, MONAI or the network's own code: the model cannot run the case
            raise ModelError(f"{m.path}: the network failed on case {case.name} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check the model's configuration "
                             "against the case (channels, sizes)") from exc
        raise
    _check_finite(exp, m, case)
    if exp._run is not None:
        exp._run.run_settings = recorded
    exp.run_settings = dict(recorded)
    return exp


def _check_finite(exp: Explanation, m: Model, case: Case) -> None:
    """A finite but wrong map is the worst outcome; a NaN map is the next: refuse one, naming the likely cause."""
    if not np.isfinite(exp.logits).all():
        peak = float(np.abs(case.image).max()) if case.image.size else 0.0
        raise ModelError(f"{m.path}: the network's output on case {case.name} holds NaN or Inf (the case's largest "
                         f"|intensity| is {peak:.3g}: values near the float32 limit overflow); nothing is explained")
    if not np.isfinite(exp.relevance).all():
        bad = int((~np.isfinite(exp.relevance)).sum())
        raise ValueError(f"case {case.name}: {bad} relevance values are NaN or Inf (an overflow in a rule with "
                         "intensities or weights near the float32 limit); rescale the case or choose another preset")


def _raised_outside(exc: BaseException) -> bool:
    """Whether ``exc`` was raised outside napari-lrp's own code (its innermost frame in torch, MONAI, ...)."""
    import traceback

    if isinstance(exc, (ModelError, CaseError, Cancelled)):
        return False
    if isinstance(exc, RuntimeError):  # torch's operations raise RuntimeError; napari-lrp raises its own kinds
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}napari_lrp{os.sep}" not in frames[-1].filename


def _explain_unrecorded(model, case: Case, preset: str, filters, target, target_class, rules, keep, progress,
                        strict, output_index, mc_samples, dropout, seed, tta, dropout_at, batch_size, method,
                        window, overlap, blend, max_memory, **method_options) -> Explanation:
    """:func:`explain` after its settings are read: the run of the kind the arguments ask for."""
    if method == "lrp" and method_options:
        raise TypeError(f"explain() got unexpected keyword arguments {', '.join(method_options)} (options are for "
                        "method= other than 'lrp')")
    m = _as_model(model, case)
    cls = m.card.target_class if target_class is None else int(target_class)
    target, cls = resolve_target(target, m.card.classes, cls, lambda: case.ground_truth, case.grid.spacing)
    sampling = Sampling(mc_samples, dropout, seed, tta, dropout_at, batch_size)
    if m.pipeline is not None:
        return _explain_pipeline(m, case, method, sampling, window, preset, rules, target, cls, strict,
                                 output_index, filters, keep, progress)
    prep = prepare_input(case.image, case.modalities, m.card, m.network, m.device, source=case.name)
    if method != "lrp":
        if sampling.active:
            raise ValueError("mc_samples, dropout and tta are for LRP runs (method='lrp')")
        if rules:
            raise ValueError(f"rules= are LRP's; method={method!r} has no rules (got rules for "
                             f"{', '.join(map(str, rules))})")
        return _explain_method(m, case, prep, method, method_options, preset, target, cls, output_index,
                               filters, progress)
    chosen = isinstance(window, str)  # "auto", or the memory plan below: the overlap is ours to choose
    if window is None and method == "lrp" and not sampling.active and (
            max_memory is not None or prep.x[0, 0].numel() > PLAN_VOXELS):
        window = _memory_plan(m, case, prep, preset, rules, output_index, max_memory)
        chosen = True
    if overlap is None:
        overlap = AUTO_OVERLAP if chosen else 0.5
    if window is not None:
        if sampling.active:
            raise ValueError("tiling (window=) and draws (mc_samples, tta) do not combine yet; use one of them")
        tiled = run_tiled(m, case, prep, window, overlap, blend, preset, rules, target, cls, strict, output_index,
                          max_memory, progress)
        if tiled is not None:
            return tiled.explanation(dict(filters or {}), keep, progress)
    if sampling.active:
        sampled = run_sampled(m, case, prep, sampling, preset, rules, target, cls, strict, output_index)
        return sampled.explanation(dict(filters or {}), keep, progress)
    prop = Propagation(prep.network, prep.x, rules={**(rules or {})}, bounds=prep.bounds, preset=preset,
                       strict=strict, output_index=output_index)
    logits = prep.crop(prop.output)
    prediction, mask = target_of(logits, m.card.output_activation, target, cls, lambda: case.ground_truth, case.name)
    start = prep.pad(start_relevance(logits, mask, cls, getattr(target, "against", None)))
    run = _Run(propagation=prop, prepared=prep, start=start, case=case, model=m, preset=preset, target=target,
               target_class=cls, logits=logits[0].detach().float().cpu().numpy(), prediction=prediction)
    return run.explanation(dict(filters or {}), keep, progress)


def _pipeline_input(m: Model, case: Case):
    param = next(m.network.parameters(), None)
    dtype = torch.float32 if param is None else param.dtype
    return m.pipeline.prepare(case, m.card.modalities, m.network, m.device, dtype, source=case.name)


def _pipeline_windows(m: Model, prep) -> tuple:
    """(window, overlap, blend) of a model with its own pipeline (nnU-Net's patch size, a bundle's inferer; a
    bundle's SimpleInferer: the whole model grid in one window)."""
    p = m.pipeline
    window = p.window or tuple(int(v) for v in prep.x.shape[2:])
    return window, p.overlap, p.blend if p.window else "constant"


def _explain_pipeline(m: Model, case: Case, method, sampling, window, preset, rules, target, cls, strict,
                      output_index, filters, keep, progress):
    """A run of a model with its own pipeline (an nnU-Net results folder, a MONAI bundle with preprocessing):
    its pre-processing, its sliding windows, relevance mapped back to the case grid."""
    if method != "lrp" or sampling.active:
        raise ValueError(f"{m.path}: this model is explained with LRP on its own pre-processing and sliding "
                         f"windows; method={method!r}, mc_samples and tta do not run on them yet (load a card "
                         "of the network for those)")
    prep = _pipeline_input(m, case)
    own = _pipeline_windows(m, prep)
    if window not in (None, "auto") and tuple(int(v) for v in window) != tuple(own[0]):
        warnings.warn(f"{m.path}: the model runs on its own windows {tuple(own[0])}; window={window} is ignored",
                      stacklevel=3)
    tiled = run_tiled(m, case, prep, own[0], own[1], own[2], preset, rules, target, cls, strict, output_index,
                      progress=progress)  # the prediction's windows, then the relevance's
    return tiled.explanation(dict(filters or {}), keep, progress)


#: the overlap of windows the run chooses itself (window="auto" or the memory plan): little recomputation
AUTO_OVERLAP = 0.125

#: whole-volume runs above this many model-grid voxels are planned (memory estimated) before they start
PLAN_VOXELS = 2**22


def _memory_plan(m: Model, case: Case, prep: PreparedInput, preset: str, rules, output_index, max_memory):
    """The memory plan of a whole-volume run: its peak estimated from a small probe's activation sizes; over
    the budget (``max_memory`` bytes, default half the free memory) the run is tiled with the largest window
    that fits, with a warning naming the estimate, the budget and the window; None when it fits."""
    from .tiling import _bytes_per_voxel, auto_window, budget

    limit = budget(max_memory)
    divisible = int(getattr(m.card.input, "divisible", 1) or 1)
    per = _bytes_per_voxel(prep.network, prep.x, divisible, rules, preset, prep.bounds, output_index)
    need = per * prep.x[0, 0].numel()
    if need <= limit:
        return None
    window = auto_window(prep.network, prep.x, divisible, limit, rules, preset, prep.bounds, output_index,
                         per_voxel=per)  # the probe runs once
    warnings.warn(f"{case.name}: a whole-volume LRP run needs about {need / 2**30:.1f} GiB, over the budget of "
                  f"{limit / 2**30:.1f} GiB (max_memory= or half the free memory); tiling with window {window} "
                  "(pass window= to choose, or a larger max_memory)", stacklevel=3)
    return window


def _explain_method(m: Model, case: Case, prep: PreparedInput, method: str, options: dict, preset: str, target,
                    cls: int, output_index, filters, progress) -> Explanation:
    from .methods import run_method

    param = next(prep.network.parameters(), None)
    x = prep.x if param is None else prep.x.to(device=param.device, dtype=param.dtype)
    with torch.no_grad(), onednn_convolutions():
        out = select_output(prep.network(x), output_index, type(prep.network).__name__)
    logits = prep.crop(out)
    prediction, mask = target_of(logits, m.card.output_activation, target, cls, lambda: case.ground_truth, case.name)
    weight = torch.ones_like(logits) if mask is None else torch.zeros_like(logits)
    if mask is not None:
        weight[:, cls] = torch.as_tensor(np.ascontiguousarray(mask), device=logits.device, dtype=logits.dtype)
        if getattr(target, "against", None) is not None:  # a contrast: the other class's logit counts against
            weight[:, target.against] = -weight[:, cls]
    weight = prep.pad(weight)
    attribution = run_method(method, prep.network, x, weight, options, output_index, progress)
    rel = prep.crop(attribution)[0].float().cpu().numpy()
    run = _MethodRun(prepared=prep, case=case, model=m, preset=preset, target=target, target_class=cls,
                     logits=logits[0].float().cpu().numpy(), prediction=prediction, method=method,
                     options=dict(options), attribution=np.ascontiguousarray(rel, dtype=np.float32),
                     start=float((weight * out).sum(dtype=torch.float64)))
    return run.explanation(dict(filters or {}))


def predict_case(model, case: Case, output_index=None) -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """One forward pass: (prediction uint8 (Z, Y, X), logits (K, Z, Y, X), {module name: output shape}).

    Convolutions run on the engine's kernels (``kernels.onednn_convolutions``), so the prediction is the
    one :func:`explain` computes (a plain torch forward can differ by float32 rounding)."""
    m = _as_model(model, case)
    if m.pipeline is not None:  # the model's own pre-processing and windows, back to the case
        from .tiling import tiled_prediction

        prep = _pipeline_input(m, case)
        blended, _den = tiled_prediction(prep.network, prep.x, *_pipeline_windows(m, prep), output_index)
        logits = prep.outputs_to_case(blended)
        pred = predict(logits, m.card.output_activation)[0].cpu().numpy()
        return pred, logits[0].float().cpu().numpy(), {}
    prep = prepare_input(case.image, case.modalities, m.card, m.network, m.device, source=case.name)
    shapes: dict[str, tuple] = {}

    def record(name):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))

        return hook

    handles = [mod.register_forward_hook(record(name)) for name, mod in m.network.named_modules() if name]
    try:
        with torch.no_grad(), onednn_convolutions():
            out = prep.network(prep.x)
            logits = prep.crop(select_output(out, output_index, type(m.network).__name__))
    finally:
        for h in handles:
            h.remove()
    pred = predict(logits, m.card.output_activation)[0].cpu().numpy()
    return pred, logits[0].float().cpu().numpy(), shapes
