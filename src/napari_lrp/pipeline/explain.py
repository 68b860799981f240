"""``explain``: a model and a case in, relevance on the case grid out; ``predict_case``: the forward pass alone.

The arguments choose the kind of run (``pipeline.runs``): one LRP pass over the model grid, another
attribution method (``pipeline.attribution``), sliding windows (``pipeline.tiling``; a model with its own
pipeline always runs on its windows) or draws (``pipeline.sampling``). Each kind receives one
:class:`~napari_lrp.pipeline.runs.RunSpec`; the settings that change the relevance are recorded on the result.
"""

from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..io.case import Case
from ..io.nifti import CaseError
from ..lrp.engine import Cancelled, select_output
from ..lrp.filters import Filter
from ..lrp.kernels import onednn_convolutions
from ..lrp.targets import predict
from ..metrics.components import resolve_target
from ..models.card import Model, ModelCard, ModelError
from ..models.loading import load_model
from ..models.network_guard import module_window_bytes
from ..models.pipeline import pipeline_input, pipeline_windows
from ..models.preprocess import prepare_input
from .attribution import run_attribution
from .result import Explanation, load_settings
from .runs import Run, RunSpec, record_shapes, run_lrp
from .sampling import Sampling, run_sampled
from .tiling import AUTO_OVERLAP, PLAN_VOXELS, budget, check_tiling, memory_plan, run_tiled, tiled_prediction

__all__ = ["explain", "explain_again", "predict_case"]


def _default_card(network: nn.Module, case: Case) -> ModelCard:
    return ModelCard(name=type(network).__name__, architecture={"class": type(network).__name__, "kwargs": {}},
                     modalities=list(case.modalities),
                     input={"spatial_size": None, "intensity": "none", "divisible": 1})


def as_model(model, case: Case) -> Model:
    """``model`` as a :class:`~napari_lrp.models.Model`.

    Parameters
    ----------
    model : Model, torch.nn.Module, str or os.PathLike
        A loaded model, a bare network (given a card with the case's modalities) or a model path.
    case : Case
        The case the model will explain (names the channels of a bare network).

    Returns
    -------
    Model
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
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

    One forward pass; ``Explanation.refilter`` reuses it. An operation without a rule on the relevance path
    warns with its name (``ledger.unaccounted`` shows its cost); ``strict=True`` raises instead. Every
    argument that changes the relevance is written into :meth:`Explanation.settings` and read back by
    ``settings=``, which replaces the arguments it holds: a run from its settings.json reproduces the relevance.

    Parameters
    ----------
    model : Model, torch.nn.Module or path
        A loaded model, a bare network or a model path (card.json, an nnU-Net results folder, a bundle).
    case : Case
        The case: channels (C, Z, Y, X) matched to the model's modalities by name.
    preset : str
        A name of ``napari_lrp.lrp.PRESETS`` ('paper', 'epsilon-gamma-box', 'epsilon-plus-flat', 'lrp0', ...).
    filters : Mapping[str, Filter], optional
        {'output' | 'input' | module name | glob: Filter}.
    target : str, mask or voxel
        'region' (the predicted region of the class), 'groundtruth', 'output', a spec such as
        'component:2', 'false-negative', 'border:3' or 'contrast:A-B', a mask (Z, Y, X) or a voxel (z, y, x).
    target_class : int, optional
        Output channel explained; default the card's.
    rules : Mapping, optional
        {module name | glob | type: Rule} laid over the preset.
    keep : bool or list of str, optional
        Layers whose relevance the result keeps (True: every layer).
    progress : callable(done, total), optional
        Called as the passes advance.
    settings : path or dict, optional
        A settings JSON written by :func:`~napari_lrp.pipeline.result.save_settings`; fills the other arguments.
    strict : bool
        Raise on an operation without a rule instead of warning.
    output_index : int or str, optional
        The segmentation output of a network that returns a list, tuple or dict.
    mc_samples, dropout, seed, tta, dropout_at, batch_size
        Draws (``pipeline.sampling``): ``mc_samples=T`` draws with the Dropout modules sampling (``dropout``
        sets their rate, or inserts dropout after the activations named by ``dropout_at``), ``tta="flips"``
        adds the 8 flips of the spatial axes; ``seed`` makes them reproducible, ``batch_size`` fixes the
        draws per batch.
    method : str
        "lrp" or another attribution method of ``pipeline.attribution.METHODS``, with its options as keywords
        in Captum's words (only the 'input' filter applies to other methods).
    window : (Z, Y, X), "auto" or None
        Sliding windows (``pipeline.tiling``); "auto" picks the largest window whose LRP fits ``max_memory``.
    overlap : float, optional
        Fraction of a window shared with its neighbour; default 0.5 for a window you give, 0.125 when the run
        chooses the window.
    blend : str
        'gaussian', 'constant' or 'trimmed'.
    max_memory : float, optional
        Budget in bytes for a whole-volume or "auto" run (default half the free memory; for "auto" at most
        2 GiB, ``pipeline.tiling.AUTO_BUDGET``).
    **method_options
        Options of ``method``.

    Returns
    -------
    Explanation
        Relevance (C, Z, Y, X) on the case grid and everything derived from the run.
    """
    if settings is None:
        return _explain_recorded(model, case, keep, progress, False, preset=preset, filters=filters, target=target,
                                 target_class=target_class, rules=rules, strict=strict, output_index=output_index,
                                 mc_samples=mc_samples, dropout=dropout, seed=seed, tta=tta, dropout_at=dropout_at,
                                 batch_size=batch_size, method=method, window=window, overlap=overlap, blend=blend,
                                 max_memory=max_memory, method_options=method_options)
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


def explain_again(exp: Explanation, case: Case | None = None, model=None, target=None,
                  target_class: int | None = None, progress: Callable[[int, int], None] | None = None,
                  **changes) -> Explanation:
    """A run with another explanation's settings, on another case, model, target or class.

    What an evaluation needs: the same method, preset, filters, rules, draws and windows on a noisy copy of
    the case, a re-initialised model or another class.

    Parameters
    ----------
    exp : Explanation
        The run whose settings are repeated.
    case : Case, optional
        Another case (default the run's).
    model : Model, optional
        Another model (default the run's).
    target : str, mask or voxel, optional
        Another target (default the run's; a drawn mask is passed again).
    target_class : int, optional
        Another class (default the run's).
    progress : callable(done, total), optional
        As for :func:`explain`.
    **changes
        Further arguments of :func:`explain` that replace the run's (e.g. ``tta="flips"``, ``mc_samples=8``).

    Returns
    -------
    Explanation
    """
    recorded = exp.settings()
    if target is None and isinstance(exp.target, np.ndarray):
        target = exp.target
    if target is not None:
        recorded["target"] = "region"  # replaced below: the settings cannot hold a mask
    kw = load_settings(recorded)
    if target is not None:
        kw["target"] = target
    kw["target_class"] = exp.target_class if target_class is None else target_class
    unknown = sorted(set(changes) - set(kw))
    if unknown:
        raise TypeError(f"explain_again: {', '.join(unknown)} is not an argument of explain that a run records; "
                        f"choose from {', '.join(sorted(kw))}")
    kw.update(changes)
    if kw["window"] is None:
        kw["overlap"], kw["blend"] = None, "gaussian"
    return _explain_recorded(exp.model if model is None else model, exp.case if case is None else case, None,
                             progress, True, **kw)


def _explain_from_settings(model, case, settings, target_class, keep, progress, method_options):
    """:func:`explain` with every argument the settings hold read from them."""
    kw = load_settings(settings)
    if target_class is not None:
        kw["target_class"] = target_class
    if kw["window"] is None:
        kw["overlap"], kw["blend"] = None, "gaussian"
    kw["method_options"] = {**kw["method_options"], **method_options}
    return _explain_recorded(model, case, keep, progress, True, **kw)


def _explain_recorded(model, case, keep, progress, from_settings: bool, **kw) -> Explanation:
    """The run of :func:`explain`'s arguments ``kw``, its settings recorded on the result."""
    check_tiling(kw["window"], kw["overlap"], kw["blend"])
    max_memory = kw["max_memory"]
    if max_memory is not None and (isinstance(max_memory, bool) or not float(max_memory) >= 1024):
        raise ValueError(f"max_memory is a budget in bytes (e.g. 4e9 for 4 GB), at least 1024; not {max_memory!r}")
    m = as_model(model, case)
    if m.pipeline is not None and from_settings:
        kw["window"] = None  # the model's own windows, which its settings recorded
    recorded = {"rules": dict(kw["rules"] or {}), "strict": bool(kw["strict"]), "output_index": kw["output_index"],
                "batch_size": kw["batch_size"], "max_memory": max_memory}
    try:
        run = _run_of(m, case, progress, **kw)
        run.run_settings = recorded
        exp = run.explanation(dict(kw["filters"] or {}), keep, progress)
    except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
        if _raised_outside(exc):  # inside torch, MONAI or the network's own code: the model cannot run the case
            raise ModelError(f"{m.path}: the network failed on case {case.name} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check the model's configuration "
                             "against the case (channels, sizes)") from exc
        raise
    _check_finite(exp, m, case)
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
    if isinstance(exc, (ModelError, CaseError, Cancelled)):
        return False
    if isinstance(exc, RuntimeError):  # torch's operations raise RuntimeError; napari-lrp raises its own kinds
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}napari_lrp{os.sep}" not in frames[-1].filename


def _spec(m: Model, case: Case, kw: dict) -> RunSpec:
    """The run's :class:`RunSpec`: the target resolved against the model's classes and the case."""
    cls = m.card.target_class if kw["target_class"] is None else int(kw["target_class"])
    target, cls = resolve_target(kw["target"], m.card.classes, cls, lambda c: m.card.class_ground_truth(case, c),
                                 case.grid.spacing)
    return RunSpec(preset=kw["preset"], rules=dict(kw["rules"] or {}), target=target, target_class=cls,
                   strict=kw["strict"], output_index=kw["output_index"])


def _run_of(m: Model, case: Case, progress, **kw) -> Run:
    """The run of the kind :func:`explain`'s arguments ask for, its forward passes done."""
    method, options = kw["method"], kw["method_options"]
    if method == "lrp" and options:
        raise TypeError(f"explain() got unexpected keyword arguments {', '.join(options)} (options are for "
                        "method= other than 'lrp')")
    spec = _spec(m, case, kw)
    sampling = Sampling(kw["mc_samples"], kw["dropout"], kw["seed"], kw["tta"], kw["dropout_at"], kw["batch_size"])
    if m.pipeline is not None:
        return _pipeline_run(m, case, spec, method, sampling, kw["window"], progress, kw["max_memory"])
    prep = prepare_input(case.image, case.modalities, m.card, m.network, m.device, source=case.name)
    if method != "lrp":
        if sampling.active:
            raise ValueError("mc_samples, dropout and tta are for LRP runs (method='lrp')")
        if spec.rules:
            raise ValueError(f"rules= are LRP's; method={method!r} has no rules (got rules for "
                             f"{', '.join(map(str, spec.rules))})")
        return run_attribution(m, case, prep, spec, method, options, progress)
    window, overlap, max_memory = kw["window"], kw["overlap"], kw["max_memory"]
    chosen = isinstance(window, str)  # "auto", or the memory plan below: the overlap is ours to choose
    if window is None and not sampling.active and (max_memory is not None or prep.x[0, 0].numel() > PLAN_VOXELS):
        window = memory_plan(m, case, prep, spec, max_memory)
        chosen = True
    if overlap is None:
        overlap = AUTO_OVERLAP if chosen else 0.5
    if window is not None:
        if sampling.active:
            raise ValueError("tiling (window=) and draws (mc_samples, tta) do not combine yet; use one of them")
        tiled = run_tiled(m, case, prep, spec, window, overlap, kw["blend"], max_memory, progress)
        if tiled is not None:
            return tiled
    if sampling.active:
        return run_sampled(m, case, prep, sampling, spec)
    return run_lrp(m, case, prep, spec)


def _pipeline_run(m: Model, case: Case, spec: RunSpec, method: str, sampling: Sampling, window, progress,
                  max_memory=None) -> Run:
    """A run of a model with its own pipeline (an nnU-Net results folder, a MONAI bundle with preprocessing):
    its pre-processing, its sliding windows, relevance mapped back to the case grid. Its windows are the
    model's own, so a window's LRP over the budget (``max_memory``, or half the free memory for a whole-volume
    pipeline, whose window is the case) is refused before it starts."""
    if method != "lrp" or sampling.active:
        raise ValueError(f"{m.path}: this model is explained with LRP on its own pre-processing and sliding "
                         f"windows; method={method!r}, mc_samples and tta do not run on them yet (load a card "
                         "of the network for those)")
    prep = pipeline_input(m, case)
    own = pipeline_windows(m, prep)
    if max_memory is not None or getattr(m.pipeline, "window", True) is None:
        need = module_window_bytes(prep.network, (1, int(prep.x.shape[1]), *own[0]))
        limit = budget(max_memory, device=prep.x.device)
        if need is not None and need > limit:
            given = f"max_memory {max_memory / 1e9:.2f} GB" if max_memory is not None else \
                f"half the free memory, {limit / 1e9:.2f} GB"
            raise ModelError(f"{m.path}: the LRP of one window of the model's own {tuple(own[0])} needs about "
                             f"{need / 1e9:.2f} GB, over the budget ({given}); the model's pipeline fixes its "
                             "windows, so raise max_memory, crop the case, or run on a machine with more memory")
    if window not in (None, "auto") and tuple(int(v) for v in window) != tuple(own[0]):
        warnings.warn(f"{m.path}: the model runs on its own windows {tuple(own[0])}; window={window} is ignored",
                      stacklevel=3)
    return run_tiled(m, case, prep, spec, own[0], own[1], own[2], progress=progress)


def predict_case(model, case: Case, output_index=None) -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """One forward pass of ``model`` over ``case``, on the engine's convolution kernels.

    The prediction is the one :func:`explain` computes (a plain torch forward can differ by float32 rounding).

    Parameters
    ----------
    model : Model, torch.nn.Module or path
        As for :func:`explain`.
    case : Case
        The case.
    output_index : int or str, optional
        The segmentation output of a network with several.

    Returns
    -------
    prediction : numpy.ndarray
        (Z, Y, X) uint8 on the case grid.
    logits : numpy.ndarray
        (K, Z, Y, X) float32 on the case grid.
    shapes : dict[str, tuple]
        {module name: output shape} (empty for a model with its own pipeline).
    """
    m = as_model(model, case)
    if m.pipeline is not None:  # the model's own pre-processing and windows, back to the case
        prep = pipeline_input(m, case)
        blended, _den = tiled_prediction(prep.network, prep.x, *pipeline_windows(m, prep), output_index)
        logits = prep.outputs_to_case(blended)
        m.check_outputs(int(logits.shape[1]))
        pred = prep.label_on_case(blended)
        if pred is None:
            pred = predict(logits, m.card.output_activation)[0].cpu().numpy()
        return pred, logits[0].float().cpu().numpy(), {}
    prep = prepare_input(case.image, case.modalities, m.card, m.network, m.device, source=case.name)
    shapes: dict[str, tuple] = {}
    with record_shapes(m.network, shapes), torch.no_grad(), onednn_convolutions():
        out = prep.network(prep.x)
    logits = prep.crop(select_output(out, output_index, type(m.network).__name__))
    m.check_outputs(int(logits.shape[1]))
    pred = predict(logits, m.card.output_activation)[0].cpu().numpy()
    return pred, logits[0].float().cpu().numpy(), shapes
