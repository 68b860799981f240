"""The result of a run: :class:`Explanation` (relevance on the case grid, its outputs and settings).

An Explanation owns its outputs (``save``) and its settings (``settings``; ``load_settings`` reads them
back for ``explain(settings=)``); what needs the run that made it (a new filter setting, other rules,
another target, concepts) it asks of that run through the ``pipeline.runs.Run`` protocol, so this module
imports no kind of run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..io.atomic import check_outside_inputs, replacing, replacing_folder, write_text
from ..io.case import Case, save_nifti
from ..lrp.engine import Propagation
from ..lrp.filters import Filter, filters_from_specs, format_filter, heatmap
from ..lrp.kernels import onednn_convolutions
from ..lrp.ledger import Ledger
from ..lrp.rule_specs import rules_from_specs, rules_to_specs
from ..lrp.targets import (
    RegionTarget,
    class_view,
    is_multilabel,
    needs_ground_truth,
    region_mask,
    start_relevance,
)
from ..metrics.components import components_table, resolve_target
from ..metrics.concepts import (
    concept_measures,
)
from ..metrics.faithfulness import faithfulness_correlation
from ..metrics.perturbation import region_perturbation
from ..metrics.table import measure
from ..models.card import Model
from ..models.preprocess import PreparedInput

__all__ = ["Explanation", "PlacedRelevance", "load_settings", "package_version", "save_settings"]


def package_version() -> str:
    """The installed napari-lrp version (from the distribution's metadata).

    Returns
    -------
    str
        The version, or '0+unknown' for a source tree on sys.path without an install.
    """
    try:
        return _dist_version("napari-lrp")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "0+unknown"


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
    _run: Any = field(default=None, repr=False)  # the pipeline.runs.Run that made it
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
        """A new Explanation with other filters, from the kept forward pass (no forward pass runs).

        Parameters
        ----------
        filters : Mapping[str, Filter] or None
            {'output' | 'input' | module name | glob: Filter}; None: no filter.
        keep : bool or list of str, optional
            Layers whose relevance the result keeps.
        progress : callable(done, total), optional
            Called as the relevance pass advances.

        Returns
        -------
        Explanation
        """
        return self._run.explanation(dict(filters or {}), keep, progress)

    @property
    def layer_rules(self) -> dict:
        """{layer name: Rule} as this run's kept pass has them now (empty for other methods)."""
        return self._run.layer_rules

    def with_rules(self, rules: Mapping, filters: Mapping[str, Filter] | None = None,
                   incompatible: str = "raise") -> Explanation:
        """A new Explanation with other rules for some layers, from the kept forward pass where the rules allow.

        Epsilon changes to epsilon; gamma, alpha-beta and z-plus among themselves (``Propagation.replace_rules``).
        The rules stay replaced in the kept pass (a later ``refilter`` uses them) and are recorded in the settings.

        Parameters
        ----------
        rules : Mapping
            {layer name | glob | type: Rule}.
        filters : Mapping[str, Filter], optional
            Default this run's.
        incompatible : str
            'raise' (a layer whose rule cannot change so raises ValueError) or 'keep' (it keeps its rule, e.g.
            the first layer's z-box).

        Returns
        -------
        Explanation
        """
        self._run.replace_rules(rules, incompatible)
        return self._run.explanation(dict(self.filters if filters is None else filters))

    def heatmap(self, f: Filter | None) -> np.ndarray:
        """The relevance under a heatmap filter that replaces the run's own 'input' filter (no pass runs).

        Parameters
        ----------
        f : Filter or None
            The filter (None: the run's relevance as it is); see :func:`napari_lrp.lrp.filters.heatmap`.

        Returns
        -------
        numpy.ndarray
            (C, Z, Y, X) float32 on the case grid; for a run with draws, the mean over the draws of each draw's
            relevance under ``f``.
        """
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
        return self._run.kept_pass

    @property
    def model_start(self) -> torch.Tensor | None:
        """The start relevance on the model grid (1, K, Z', Y', X') of a single LRP run (None otherwise)."""
        return self._run.model_start

    @property
    def prepared_input(self) -> PreparedInput:
        """The model-grid input of the run (padding, channels; ``pad``/``crop`` between the grids)."""
        return self._run.prepared

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """{module name: output shape (N, C', Z', Y', X')} of the forward pass, for layer tables."""
        return dict(self._run.layer_shapes)

    def kept_on_case_grid(self, name: str) -> PlacedRelevance:
        """Relevance at the output of one module, placed over the case grid.

        Parameters
        ----------
        name : str
            A module kept in the run (``explain(..., keep=[name])`` or ``keep=True``).

        Returns
        -------
        PlacedRelevance
            The layer's relevance (C', Z', Y', X') with the scale and translate that put it on the case.
        """
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
        """The exact settings of the run, which ``explain(model, case, settings=...)`` reproduces.

        Returns
        -------
        dict
            JSON-able: method, preset, filters, target, class, model (path, sha256, its pipeline's settings),
            case, rules, strict, output index, memory budget, ledger, draws, windows and package versions.
        """
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
                      **(self.model.pipeline.settings() if self.model.pipeline is not None else {})},
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

    @property
    def run_name(self) -> str:
        """A folder name for this run's outputs: what explained what, and a digest of every setting, so the same
        run saved again lands in the same folder and another run in another.

        Returns
        -------
        str
            For example 'paper_region_class1_3fa2b1c0' (method or preset, target, class, 8 hex digits).
        """
        import hashlib
        import re

        settings = self.settings()
        recorded = {k: v for k, v in settings.items() if k not in ("ledger", "versions", "case")}
        digest = hashlib.sha1(json.dumps(recorded, sort_keys=True, default=str).encode()).hexdigest()[:8]
        what = self.preset if self.method == "lrp" else self.method
        target = re.sub(r"[^A-Za-z0-9.-]+", "-", str(settings["target"])).strip("-") or "target"
        return f"{what}_{target}_class{self.target_class}_{digest}"

    def coefficients(self, tau_r: float = 0.5, tau_x: float = 0.1):
        """Inclusivities, signal distribution and mean power per channel and their mean.

        Parameters
        ----------
        tau_r, tau_x : float
            A voxel counts as strongly relevant when |R| >= tau_r times the channel's maximum, and as image
            signal when |x| > tau_x times the channel's maximum.

        Returns
        -------
        pandas.DataFrame
            One row per channel and a 'mean' row (:func:`napari_lrp.metrics.table.measure`).
        """
        return measure(self.relevance, self.input_image, self.ground_truth, self.modalities, tau_r, tau_x)

    def concepts(self, layer: str, progress=None):
        """The relevance at one layer's output per channel for this run's target (concept relevance).

        A tiled run (an nnU-Net folder, a bundle) sums it over its windows, one pass each.

        Parameters
        ----------
        layer : str
            A module name (``layer_shapes``).
        progress : callable(done, total), optional
            Called per window of a tiled run.

        Returns
        -------
        pandas.DataFrame
            One row per channel: relevance, positive, negative, share, abs_share and the channel's mean
            activation inside and outside the target region
            (:func:`napari_lrp.metrics.concepts.channel_relevance`).
        """
        return self._run.concepts(self, layer, progress)

    def conditional(self, layer, channels=None, progress=None) -> np.ndarray:
        """The relevance with only some channels of a layer passed (CRP's conditional heatmap).

        From the kept forward pass; a tiled run (an nnU-Net folder, a bundle) re-runs its windows.

        Parameters
        ----------
        layer : str, glob or dict
            A module name, a glob, or ``{layer: channels}`` for condition sets over several layers.
        channels : int or list of int, optional
            The channels passed (all when None).
        progress : callable(done, total), optional
            Called per window of a tiled run.

        Returns
        -------
        numpy.ndarray
            (C, Z, Y, X) float32 on the case grid.
        """
        return self._run.conditional(self, layer, channels, progress)

    def concept_measures(self, layer: str, channels=None, tau_r: float = 0.5, tau_x: float = 0.1):
        """The inclusivities and mean power of each channel's conditional map at one layer.

        Parameters
        ----------
        layer : str
            A module name.
        channels : list of int, optional
            The channels measured (all when None).
        tau_r, tau_x : float
            The thresholds of the inclusivities (see :meth:`coefficients`).

        Returns
        -------
        pandas.DataFrame
            One row per channel.
        """
        return concept_measures(self, layer, channels, tau_r, tau_x)

    def components(self):
        """The lesions of the prediction (the run's class) and of the ground truth, one row each.

        26-connected components numbered from the largest, as ``target="component:K"`` and
        ``"gt-component:K"`` count them (:func:`napari_lrp.metrics.components.components_table`).

        Returns
        -------
        pandas.DataFrame
            Size (voxels, ml), centre (RAS+ mm), Dice with the lesions of the other side it overlaps, detected /
            missed and true / false positive.
        """
        return components_table(self.predicted_region(), self.ground_truth, self.case.grid.spacing, self.case.grid)

    def for_target(self, target) -> Explanation:
        """This run explaining another target of the same class, from the kept forward pass.

        A tiled run re-runs its windows; the run's filters apply.

        Parameters
        ----------
        target : str or numpy.ndarray
            A spec such as ``"component:2"`` or ``"false-negative"``, or a mask (Z, Y, X).

        Returns
        -------
        Explanation
        """
        card = self.model.card
        target, cls = resolve_target(target, card.classes, self.target_class,
                                     lambda c: card.class_ground_truth(self.case, c), self.case.grid.spacing)
        if cls != self.target_class:
            raise ValueError(f"for_target keeps the run's class {self.target_class}; {target!r} names class {cls}")
        mask = region_mask(target, self._class_view(), self.ground_truth if needs_ground_truth(target) else None,
                           cls)
        logits = torch.as_tensor(self.logits, dtype=torch.float64)[None]
        start_case = start_relevance(logits, mask, cls, getattr(target, "against", None))
        return self._run.retarget(target, start_case).explanation(dict(self.filters))

    def lesion_runs(self):
        """Every lesion of the prediction and of the ground truth (:meth:`components`) explained alone.

        Yields
        ------
        tuple
            (the lesion's row of :meth:`components`, its target spec ``component:K`` / ``gt-component:K``, its
            Explanation from the kept forward pass).
        """
        for _i, r in self.components().iterrows():
            spec = f"{'component' if r.source == 'prediction' else 'gt-component'}:{int(r.component)}"
            yield r, spec, self.for_target(spec)

    def lesions(self, tau_r: float = 0.5, tau_x: float = 0.1, faithfulness: bool = False,
                perturbation_options: dict | None = None):
        """Lesion-wise measures, as the BraTS and ISLES challenges report lesion-wise metrics.

        Every lesion of the prediction and of the ground truth (:meth:`components`) is explained alone
        (``component:K`` / ``gt-component:K``).

        Parameters
        ----------
        tau_r, tau_x : float
            The thresholds of the inclusivities (see :meth:`coefficients`).
        faithfulness : bool
            Add each lesion's MoRF and LeRF AUC: its own map's blocks flipped, scored on the lesion.
        perturbation_options : dict, optional
            As :meth:`perturbation` (n_blocks, steps, fill, ...; default 300 blocks, 6 steps).

        Returns
        -------
        pandas.DataFrame
            The rows of :meth:`components` with each lesion's start relevance and the mean coefficients of its
            own map (input and ground-truth inclusivity, mu, mean power), and morf_auc, lerf_auc when asked.
        """
        rows = []
        table = None
        for r, spec, lesion in self.lesion_runs():
            c = lesion.coefficients(tau_r, tau_x)
            mean = c[c.channel == "mean"].iloc[0]
            row = {"target": spec, "start_relevance": lesion.ledger.start,
                   **{k: float(mean[k]) for k in ("input_inclusivity", "groundtruth_inclusivity", "mu", "mean_power")}}
            if faithfulness:
                curves = lesion.faithfulness(**{"n_blocks": 300, "steps": 6, **(perturbation_options or {})})
                row["morf_auc"], row["lerf_auc"] = curves["morf"].auc, curves["lerf"].auc
            rows.append(row)
            table = r.to_frame().T if table is None else pd.concat([table, r.to_frame().T])
        if not rows:
            return self.components()
        return pd.concat([table.reset_index(drop=True).infer_objects(), pd.DataFrame(rows)], axis=1)

    def target_region(self) -> np.ndarray | None:
        """The run's target region on the case grid.

        Returns
        -------
        numpy.ndarray or None
            (Z, Y, X) bool; None for the 'output' target.
        """
        return region_mask(self.target, self._class_view(), self.ground_truth if needs_ground_truth(self.target)
                           else None, self.target_class)

    @property
    def multilabel(self) -> bool:
        """Whether the model's outputs are independent sigmoid regions (``prediction`` then holds one bit per
        region: region k is bit k)."""
        return is_multilabel(self.model.card.output_activation, int(self.logits.shape[0]))

    @property
    def ground_truth(self) -> np.ndarray | None:
        """The ground truth of the run's class (Z, Y, X) bool: its label values (the card's ``regions``) or the
        case's ground truth; None without a label."""
        return self.model.card.class_ground_truth(self.case, self.target_class)

    def predicted_region(self, target_class: int | None = None) -> np.ndarray:
        """The predicted region of a class (default the run's): argmax == class, or the region's bit.

        Parameters
        ----------
        target_class : int, optional
            The class or region.

        Returns
        -------
        numpy.ndarray
            (Z, Y, X) bool.
        """
        cls = self.target_class if target_class is None else int(target_class)
        return self._class_view(cls) == cls

    def _class_view(self, target_class: int | None = None) -> np.ndarray:
        cls = self.target_class if target_class is None else target_class
        return class_view(self.prediction, cls, self.multilabel)

    def _model_grid(self, relevance, what: str):
        """The prepared input, a map and the target region on the model's input grid (padded like the input)."""
        if self.model.pipeline is not None:
            raise ValueError(f"{self.model.path}: {what} runs on the model's input grid; for a model with its own "
                             "pre-processing and windows (nnU-Net folder, bundle) it is not available yet")
        prep = self._run.prepared
        rel = self.relevance if relevance is None else relevance
        R = prep.pad(torch.as_tensor(np.ascontiguousarray(rel), dtype=torch.float64)[None])[0]
        mask = self.target_region()
        if mask is None:
            mask = np.ones(self.prediction.shape, dtype=bool)
        mask_t = prep.pad(torch.as_tensor(np.ascontiguousarray(mask))[None, None].to(torch.float64))[0, 0] > 0
        return prep, R, mask_t.cpu().numpy()

    def perturbation(self, order: str = "morf", relevance: np.ndarray | None = None, **options):
        """Region perturbation of this run: blocks of the model's input flipped in relevance order.

        Scored by the target class's logit sum over the run's target region (the whole volume for 'output');
        the forward passes run on the engine's convolution kernels, like the run's own.

        Parameters
        ----------
        order : str
            'morf', 'lerf' or 'random'.
        relevance : numpy.ndarray, optional
            (C, Z, Y, X) on the case grid that orders the blocks; default this run's.
        **options
            n_blocks, fill, steps, seed, batch, cache (:func:`napari_lrp.metrics.region_perturbation`).

        Returns
        -------
        PerturbationCurve
            The scores after each step and their area (``auc``).
        """
        prep, R, mask = self._model_grid(relevance, "region perturbation")
        with onednn_convolutions():  # the engine's convolution kernels (2-10x torch's im2col on the CPU)
            return region_perturbation(prep.network, prep.x, R, mask, self.target_class, order, **options)

    def faithfulness(self, orders=("morf", "lerf"), relevance: np.ndarray | None = None,
                     progress: Callable[[int, int], None] | None = None, **options) -> dict:
        """Region perturbation curves of this run's map in several orders (MoRF, LeRF, random).

        A faithful map drops the target's score fast when its most relevant blocks are flipped first
        (low MoRF AUC) and slowly when its least relevant are (high LeRF AUC).

        Parameters
        ----------
        orders : sequence of str
            'morf', 'lerf', 'random', in the order they run.
        relevance : numpy.ndarray, optional
            (C, Z, Y, X) on the case grid; default this run's.
        progress : callable(done, total), optional
            Called after each order.
        **options
            Of :meth:`perturbation` (n_blocks, fill, steps, seed, batch; ``cache``: a dict shared between
            curves of the same run, so a set of flipped blocks is scored once).

        Returns
        -------
        dict[str, PerturbationCurve]
            One curve per order (``.auc`` its area).
        """
        curves = {}
        for i, order in enumerate(orders):
            curves[order] = self.perturbation(order, relevance=relevance, **options)
            if progress is not None:
                progress(i + 1, len(orders))
        return curves

    def faithfulness_correlation(self, relevance: np.ndarray | None = None, **options) -> float:
        """Faithfulness correlation of this run's map (Bhatt et al. 2020) on the model's input grid.

        Scored like :meth:`perturbation`: the target class's logit summed over the run's target region.

        Parameters
        ----------
        relevance : numpy.ndarray, optional
            (C, Z, Y, X) on the case grid; default this run's.
        **options
            n_runs, subset, block, n_blocks, fill, rng, batch, subsets
            (:func:`napari_lrp.metrics.faithfulness.faithfulness_correlation`).

        Returns
        -------
        float
            The Pearson correlation of the relevance of random block subsets and the score's drop.
        """
        prep, R, mask = self._model_grid(relevance, "faithfulness correlation")
        mask_t = torch.as_tensor(mask, device=prep.x.device)
        cls = self.target_class

        def score(xb):
            return (prep.network(xb)[:, cls] * mask_t).flatten(1).sum(1).double()

        with onednn_convolutions(), torch.no_grad():
            return faithfulness_correlation(score, prep.x, R, **options)

    def sample_heatmaps(self, f: Filter | None = None) -> np.ndarray | None:
        """Every draw's relevance under a heatmap filter, as :meth:`heatmap` gives the mean.

        Parameters
        ----------
        f : Filter, optional
            The filter (None: the run's own input filter).

        Returns
        -------
        numpy.ndarray or None
            (T, C, Z, Y, X); None for a run without draws.
        """
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
        """The coefficients of the mean map under a heatmap filter and their spread over the draws.

        Parameters
        ----------
        f : Filter, optional
            The filter (None: the run's own input filter).
        tau_r, tau_x : float
            The thresholds of the inclusivities (see :meth:`coefficients`).

        Returns
        -------
        pandas.DataFrame or None
            The rows of :meth:`coefficients` with columns '<coefficient>' (of the mean map) and '<coefficient>_sd'
            (population sd of the draws' coefficients); None for a run without draws.
        """
        maps = self.sample_heatmaps(f)
        if maps is None:
            return None
        image, truth = self.input_image, self.ground_truth
        mean_map = maps.astype(np.float64).mean(0).astype(np.float32)
        out = measure(mean_map, image, truth, self.modalities, tau_r, tau_x)
        tables = [measure(r, image, truth, self.modalities, tau_r, tau_x) for r in maps]
        numeric = list(out.select_dtypes("number").columns)
        values = np.stack([t[numeric].to_numpy(dtype=np.float64) for t in tables])
        for j, c in enumerate(numeric):
            out.insert(out.columns.get_loc(c) + 1, f"{c}_sd", values[:, :, j].std(0))
        return out

    def save(self, folder: str | os.PathLike, tau_r: float = 0.5, tau_x: float = 0.1) -> list[Path]:
        """Write every output of this run into a folder as one unit.

        relevance_<modality>.nii.gz (one per channel), relevance_sum.nii.gz and prediction.nii.gz on the input
        file's grid (affine and header), coefficients.csv and settings.json (with ``outputs``: exactly the files
        of this run); a run with draws adds the spread files. Everything is written into a temporary folder and
        moved into place: it replaces the outputs of the previous save into ``folder`` entirely; files that no
        save wrote are never moved or deleted. If any write fails, ``folder`` is left exactly as it was.

        Parameters
        ----------
        folder : str or os.PathLike
            The output folder (not inside the case's own folder).
        tau_r, tau_x : float
            The thresholds of the inclusivities (see :meth:`coefficients`).

        Returns
        -------
        list of Path
            The files written.
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
            save_nifti(self.model.card.label_map(self.prediction), self.case, tmp / "prediction.nii.gz")
            with replacing(tmp / "coefficients.csv") as csv:
                self.coefficients(tau_r, tau_x).to_csv(csv, index=False)
            save_settings(self, tmp / "settings.json", outputs=names)
        return [target / n for n in names]


def save_settings(exp: Explanation, path: str | os.PathLike, outputs: list[str] | None = None) -> Path:
    """Write a run's settings JSON atomically.

    Parameters
    ----------
    exp : Explanation
        The run.
    path : str or os.PathLike
        The JSON file.
    outputs : list of str, optional
        The files of the run it describes (written under 'outputs': what the next save into the folder replaces).

    Returns
    -------
    Path
        The file written.
    """
    return write_text(path, json.dumps({**exp.settings(), **({"outputs": list(outputs)} if outputs else {})},
                                       indent=2))


def load_settings(path_or_dict) -> dict:
    """Keyword arguments for :func:`~napari_lrp.pipeline.explain.explain` from a settings JSON.

    Parameters
    ----------
    path_or_dict : str, os.PathLike or dict
        A settings file written by :func:`save_settings`, or its content.

    Returns
    -------
    dict
        preset, filters, target, target_class, method, method_options, rules, strict, output_index,
        max_memory, the draws and the windows.
    """
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
