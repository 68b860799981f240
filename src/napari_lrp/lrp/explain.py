"""``explain``: a model and a case in, relevance on the case grid out (DESIGN sections 3 and 6)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io.atomic import write_text
from ..io.case import Case
from ..models.loading import Model, ModelCard
from ..models.preprocess import PreparedInput, prepare_input
from .engine import Ledger, Propagation
from .filters import Filter, format_filter, parse_filter
from .kernels import onednn_convolutions
from .targets import predict, region_mask, start_relevance

__all__ = ["Explanation", "explain", "predict_case", "load_settings", "save_settings", "filters_from_specs"]


def _default_card(network: nn.Module, case: Case) -> ModelCard:
    return ModelCard(name=type(network).__name__, architecture={"class": type(network).__name__, "kwargs": {}},
                     modalities=list(case.modalities),
                     input={"spatial_size": None, "intensity": "none", "divisible": 1})


def filters_from_specs(specs) -> dict[str, Filter]:
    """{placement: Filter} from a list of spec strings ('clamp:0:0.2@input'), a dict, or None."""
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        out = {}
        for k, v in specs.items():
            out[k] = parse_filter(f"{v}@{k}")[1] if isinstance(v, str) else v
        return out
    out = {}
    for s in specs:
        place, f = parse_filter(s)
        out[place] = f
    return out


@dataclass
class Explanation:
    """Relevance of one case under one model.

    relevance: float32 (C, Z, Y, X) on the case grid, channels in ``modalities`` order (the model's);
    prediction: uint8 (Z, Y, X); logits: float32 (K, Z, Y, X); ledger: where relevance went;
    kept: {module name: relevance at its output, on the model grid}.
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
    #: relevance before the 'input' filter (C, Z, Y, X); the heatmap slider of the widgets filters this
    unfiltered_relevance: np.ndarray | None = None
    _prop: Propagation | None = field(default=None, repr=False)
    _prepared: PreparedInput | None = field(default=None, repr=False)
    _start: torch.Tensor | None = field(default=None, repr=False)

    def refilter(self, filters: Mapping[str, Filter] | None, keep=None, progress=None) -> Explanation:
        """A new Explanation with other filters from the kept forward pass (no forward pass runs)."""
        return _propagated(self._prop, self._prepared, self._start, self.case, self.model, self.preset,
                           dict(filters or {}), self.target, self.target_class, self.logits, self.prediction,
                           keep, progress)

    @property
    def input_image(self) -> np.ndarray:
        """The case channels in the model's order (C, Z, Y, X), as the relevance."""
        return self.case.image[self._prepared.channels]

    def settings(self) -> dict:
        """The exact settings as JSON-able dict; ``explain(model, case, settings=...)`` reproduces the run."""
        import monai
        import nibabel

        from .. import __version__

        target = self.target
        if isinstance(target, np.ndarray):
            target = "mask"
        elif isinstance(target, tuple):
            target = list(target)
        return {
            "preset": self.preset,
            "filters": [format_filter(k, f) for k, f in self.filters.items()],
            "target": target,
            "target_class": self.target_class,
            "model": {"path": self.model.path, "sha256": self.model.sha256, "name": self.model.card.name},
            "case": {"name": self.case.name, "files": list(self.case.files)},
            "versions": {"napari_lrp": __version__, "torch": torch.__version__, "monai": monai.__version__,
                         "nibabel": nibabel.__version__, "numpy": np.__version__},
        }


def save_settings(exp: Explanation, path: str | os.PathLike) -> Path:
    """Write the settings JSON atomically."""
    return write_text(path, json.dumps(exp.settings(), indent=2))


def load_settings(path_or_dict) -> dict:
    """Keyword arguments for :func:`explain` from a settings JSON (file or dict)."""
    d = path_or_dict if isinstance(path_or_dict, dict) else json.loads(Path(path_or_dict).read_text())
    target = d.get("target", "region")
    if target == "mask":
        raise ValueError("these settings used a drawn mask as target; pass the mask as target=")
    if isinstance(target, list):
        target = tuple(target)
    return {"preset": d.get("preset", "paper"), "filters": filters_from_specs(d.get("filters")),
            "target": target, "target_class": d.get("target_class")}


def _as_model(model, case: Case) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        from ..models.loading import load_model

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
            progress: Callable[[int, int], None] | None = None, settings=None) -> Explanation:
    """Explain ``model``'s segmentation of ``case``.

    preset: 'paper', 'epsilon-gamma-box', 'epsilon-plus-flat' or 'lrp0'; rules: {module name | glob |
    type: Rule} laid over the preset; filters: {'output' | 'input' | module name | glob: Filter};
    target: 'region' (predicted region of the class), 'groundtruth', 'output', a mask (Z, Y, X) or a
    voxel (z, y, x); target_class: default the card's. settings: a settings JSON (path or dict) written
    by :func:`save_settings`, which fills the other arguments. One forward pass; ``refilter`` reuses it.
    """
    if settings is not None:
        kw = load_settings(settings)
        preset, filters, target = kw["preset"], kw["filters"], kw["target"]
        target_class = kw["target_class"] if target_class is None else target_class
    m = _as_model(model, case)
    cls = m.card.target_class if target_class is None else int(target_class)
    prep = prepare_input(case.image, case.modalities, m.card, m.network, m.device, source=case.name)
    prop = Propagation(prep.network, prep.x, rules={**(rules or {})}, bounds=prep.bounds, preset=preset)
    logits_full = prop.output
    logits = prep.crop(logits_full)
    if not 0 <= cls < logits.shape[1]:
        raise ValueError(f"target class {cls} does not exist; the model has {logits.shape[1]} output channels")
    prediction = predict(logits, m.card.output_activation)[0].cpu().numpy()
    mask = region_mask(target, prediction, case.label, cls)
    if mask is not None and not mask.any():
        warnings.warn(f"{case.name}: the target region is empty; the relevance is zero", stacklevel=2)
    start = prep.pad(start_relevance(logits, mask, cls))
    logits_np = logits[0].detach().float().cpu().numpy()
    return _propagated(prop, prep, start, case, m, preset, dict(filters or {}), target, cls, logits_np,
                       prediction, keep, progress)


def _propagated(prop, prep, start, case, m, preset, filters, target, cls, logits, prediction, keep, progress):
    res = prop.propagate(start, filters=filters, keep=keep, progress=progress)
    rel = prep.crop(res.relevance)[0].float().cpu().numpy()
    unf = rel if res.unfiltered is res.relevance else prep.crop(res.unfiltered)[0].float().cpu().numpy()
    return Explanation(unfiltered_relevance=np.ascontiguousarray(unf, dtype=np.float32),
                       relevance=np.ascontiguousarray(rel, dtype=np.float32), prediction=prediction, logits=logits,
                       modalities=list(m.card.modalities), case=case, model=m, preset=preset, filters=filters,
                       target=target, target_class=cls, ledger=res.ledger, kept=res.kept, _prop=prop,
                       _prepared=prep, _start=start)


def predict_case(model, case: Case) -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """One forward pass: (prediction uint8 (Z, Y, X), logits (K, Z, Y, X), {module name: output shape}).

    Convolutions run on the engine's kernels (``kernels.onednn_convolutions``), so the prediction is the
    one :func:`explain` computes (a plain torch forward can differ by float32 rounding)."""
    m = _as_model(model, case)
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
            logits = prep.crop(prep.network(prep.x))
    finally:
        for h in handles:
            h.remove()
    pred = predict(logits, m.card.output_activation)[0].cpu().numpy()
    return pred, logits[0].float().cpu().numpy(), shapes
