"""The kinds of run behind an :class:`~napari_lrp.pipeline.result.Explanation` and what they share.

One forward pass (:class:`LRPRun`), another attribution method (``attribution.MethodRun``), sliding windows
(``tiling.TiledRun``) and draws (``sampling.SampledRun``) each keep what a new filter setting needs and
implement the :class:`Run` protocol; :class:`RunSpec` carries the choices every kind shares (preset,
rules, target, target class, strict, output index).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from ..io.case import Case
from ..lrp.engine import Propagation
from ..lrp.targets import start_relevance, target_of
from ..metrics.concepts import channel_relevance, conditional_relevance
from ..models.card import Model
from ..models.preprocess import PreparedInput
from .result import Explanation

__all__ = ["LRPRun", "Run", "RunRecord", "RunSpec", "record_shapes", "run_lrp"]


@dataclass(frozen=True)
class RunSpec:
    """What every kind of run is asked, besides its own options.

    Parameters
    ----------
    preset : str
        A name of ``napari_lrp.lrp.PRESETS``.
    rules : Mapping
        {module name | glob | type: Rule} laid over the preset.
    target : object
        The resolved target (a name, a mask (Z, Y, X), a voxel or a ``RegionTarget``).
    target_class : int
        The output channel explained.
    strict : bool
        Raise on an operation without a rule on the relevance path (instead of a warning).
    output_index : object
        Which output of a network that returns several is the segmentation (None: the only one).
    """

    preset: str = "paper"
    rules: Mapping = field(default_factory=dict)
    target: object = "region"
    target_class: int = 1
    strict: bool = False
    output_index: object = None

    def propagation(self, network: torch.nn.Module, x: torch.Tensor, bounds=None) -> Propagation:
        """One kept forward pass of ``network`` over ``x`` (N, C, Z, Y, X) with this spec's rules.

        Parameters
        ----------
        network : torch.nn.Module
            The module relevance is propagated through.
        x : torch.Tensor
            The model-grid input (N, C, Z, Y, X).
        bounds : tuple or None
            (low, high) of the input for the z-box rule.

        Returns
        -------
        Propagation
            The forward pass, ready for ``propagate``.
        """
        return Propagation(network, x, rules=dict(self.rules or {}), bounds=bounds, preset=self.preset,
                           strict=self.strict, output_index=self.output_index)


@runtime_checkable
class Run(Protocol):
    """What an Explanation asks of the run that made it (every kind implements it)."""

    spec: RunSpec
    prepared: PreparedInput
    run_settings: dict

    def explanation(self, filters: dict, keep=None, progress=None) -> Explanation:
        """The Explanation of this run under ``filters``.

        Parameters
        ----------
        filters, keep, progress
            As for ``RunRecord.explanation``.

        Returns
        -------
        Explanation
        """

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """{module name: output shape (N, C', Z', Y', X')} of the forward pass."""

    @property
    def layer_rules(self) -> dict:
        """{layer name: Rule} of a single LRP pass (empty for other kinds)."""

    def replace_rules(self, rules: Mapping, incompatible: str = "raise") -> None:
        """Replace some layers' rules in the kept pass.

        Parameters
        ----------
        rules, incompatible
            As for ``RunRecord.replace_rules``.
        """


@dataclass
class RunRecord:
    """The fields every kind of run keeps, and the defaults of the :class:`Run` protocol.

    Parameters
    ----------
    prepared : PreparedInput
        The model-grid input.
    case : Case
        The case explained.
    model : Model
        The model explained.
    spec : RunSpec
        Preset, rules, target, class, strict and output index.
    logits : numpy.ndarray
        (K, Z, Y, X) float32 on the case grid.
    prediction : numpy.ndarray
        (Z, Y, X) uint8 on the case grid.
    """

    prepared: PreparedInput
    case: Case
    model: Model
    spec: RunSpec
    logits: np.ndarray
    prediction: np.ndarray
    #: what explain() was asked beyond preset, filters and target (written into the settings)
    run_settings: dict = field(default_factory=dict, kw_only=True)

    def explanation(self, filters: dict, keep=None, progress=None) -> Explanation:
        """The Explanation of this run under ``filters``; every kind implements it.

        Parameters
        ----------
        filters : dict
            {'output' | 'input' | module name | glob: Filter}.
        keep : bool or list of str, optional
            Layers whose relevance the result keeps.
        progress : callable(done, total), optional
            Called as the passes advance.

        Returns
        -------
        Explanation
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement explanation()")

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """No layers (another method); kinds with a forward pass override this."""
        return {}

    @property
    def layer_rules(self) -> dict:
        """No rules outside a single LRP pass."""
        return {}

    @property
    def kept_pass(self) -> Propagation | None:
        """The kept forward pass of a single LRP run (None for the other kinds)."""
        return None

    @property
    def model_start(self) -> torch.Tensor | None:
        """The start relevance on the model grid of a single LRP run (None for the other kinds)."""
        return None

    def replace_rules(self, rules: Mapping, incompatible: str = "raise") -> None:
        """Replace some layers' rules in the kept pass and record them in the settings.

        Only a single LRP run (``LRPRun``) keeps a pass whose rules can change; the other kinds refuse.

        Parameters
        ----------
        rules : Mapping
            {layer name | glob | type: Rule}.
        incompatible : str
            'raise' or 'keep' (see ``Explanation.with_rules``).

        Raises
        ------
        ValueError
            For every kind but ``LRPRun``.
        """
        raise ValueError("with_rules needs a single LRP run (not another method or a sampled run)")

    def retarget(self, target, start_case: torch.Tensor) -> RunRecord:
        """This run explaining another target of its class, from its forward pass.

        A single LRP run places the new start relevance on the model grid; a tiled run shares it among its
        windows; the other kinds refuse.

        Parameters
        ----------
        target : object
            The resolved target.
        start_case : torch.Tensor
            Its start relevance (1, K, Z, Y, X) on the case grid.

        Returns
        -------
        RunRecord
            A new run of the same kind sharing the kept forward pass.

        Raises
        ------
        ValueError
            For another method or draws.
        """
        raise ValueError("for_target needs a single LRP run or a tiled run (not another method or draws)")

    def concepts(self, exp: Explanation, layer: str, progress=None) -> pd.DataFrame:
        """The per-channel relevance table at one layer (see ``metrics.concepts.channel_relevance``).

        Parameters
        ----------
        exp : Explanation
            The run's Explanation (its filters and kept pass).
        layer : str
            A module name.
        progress : callable(done, total), optional
            Unused by a single pass.

        Returns
        -------
        pandas.DataFrame
        """
        return channel_relevance(exp, layer)

    def conditional(self, exp: Explanation, layer, channels=None, progress=None) -> np.ndarray:
        """The conditional relevance (see ``metrics.concepts.conditional_relevance``).

        Parameters
        ----------
        exp : Explanation
            The run's Explanation.
        layer : str, glob or dict
            The condition's layer(s).
        channels : int or list of int, optional
            The channels passed.
        progress : callable(done, total), optional
            Called as the pass advances.

        Returns
        -------
        numpy.ndarray
            (C, Z, Y, X) on the case grid.
        """
        return conditional_relevance(exp, layer, channels, progress)

    def explanation_of(self, relevance: np.ndarray, unfiltered: np.ndarray, filters: dict, ledger,
                       **extra) -> Explanation:
        """The Explanation of this run with its relevance and the run's fields.

        Parameters
        ----------
        relevance, unfiltered : numpy.ndarray
            (C, Z, Y, X) on the case grid, after and before the run's 'input' filter.
        filters : dict
            The run's filters.
        ledger : Ledger
            Where the relevance went.
        **extra
            Fields of the kind (kept layers, draws, tiling, method).

        Returns
        -------
        Explanation
        """
        return Explanation(unfiltered_relevance=np.ascontiguousarray(unfiltered, dtype=np.float32),
                           relevance=np.ascontiguousarray(relevance, dtype=np.float32), prediction=self.prediction,
                           logits=self.logits, modalities=list(self.model.card.modalities), case=self.case,
                           model=self.model, preset=self.spec.preset, filters=filters, target=self.spec.target,
                           target_class=self.spec.target_class, ledger=ledger, _run=self,
                           run_settings=dict(self.run_settings), **extra)


@dataclass
class LRPRun(RunRecord):
    """One kept forward pass and its start relevance (model grid): a refilter is one relevance pass."""

    propagation: Propagation
    start: torch.Tensor

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """{module name: output shape} of the kept pass."""
        return dict(self.propagation.shapes)

    @property
    def layer_rules(self) -> dict:
        """{layer name: Rule} as the kept pass has them now."""
        return dict(self.propagation.layer_rules)

    @property
    def kept_pass(self) -> Propagation:
        """The kept forward pass."""
        return self.propagation

    @property
    def model_start(self) -> torch.Tensor:
        """The start relevance on the model grid (1, K, Z', Y', X')."""
        return self.start

    def replace_rules(self, rules: Mapping, incompatible: str = "raise") -> None:
        self.propagation.replace_rules(rules, incompatible)
        recorded = dict(self.run_settings)
        recorded["rules"] = {**recorded.get("rules", {}), **dict(rules)}
        self.run_settings = recorded

    def retarget(self, target, start_case: torch.Tensor) -> LRPRun:
        start = self.prepared.pad(start_case).to(self.start.dtype)
        return dataclasses.replace(self, start=start, spec=dataclasses.replace(self.spec, target=target),
                                   run_settings=dict(self.run_settings))

    def explanation(self, filters: dict, keep=None, progress: Callable[[int, int], None] | None = None
                    ) -> Explanation:
        res = self.propagation.propagate(self.start, filters=filters, keep=keep, progress=progress)
        crop = self.prepared.crop
        rel = crop(res.relevance)[0].float().cpu().numpy()
        unf = rel if res.unfiltered is res.relevance else crop(res.unfiltered)[0].float().cpu().numpy()
        return self.explanation_of(rel, unf, filters, res.ledger, kept=res.kept)


def run_lrp(m: Model, case: Case, prep: PreparedInput, spec: RunSpec) -> LRPRun:
    """One kept forward pass of the whole model grid and the start relevance of ``spec``'s target.

    Parameters
    ----------
    m : Model
        The model (its card's output activation decides the prediction).
    case : Case
        The case (its ground truth for ground-truth targets).
    prep : PreparedInput
        The model-grid input.
    spec : RunSpec
        The run's choices.

    Returns
    -------
    LRPRun
    """
    prop = spec.propagation(prep.network, prep.x, prep.bounds)
    logits = prep.crop(prop.output)
    m.check_outputs(int(logits.shape[1]))
    prediction, mask = target_of(logits, m.card.output_activation, spec.target, spec.target_class,
                                 lambda: m.card.class_ground_truth(case, spec.target_class), case.name)
    start = prep.pad(start_relevance(logits, mask, spec.target_class, getattr(spec.target, "against", None)))
    return LRPRun(propagation=prop, prepared=prep, start=start, case=case, model=m, spec=spec,
                  logits=logits[0].detach().float().cpu().numpy(), prediction=prediction)


@contextlib.contextmanager
def record_shapes(network: torch.nn.Module, shapes: dict) -> Iterator[dict]:
    """Record ``{module name: output shape}`` of every named module's first tensor output into ``shapes``.

    Parameters
    ----------
    network : torch.nn.Module
        The network whose forward passes run inside the block.
    shapes : dict
        Filled with the shapes (the first call of each module wins).

    Yields
    ------
    dict
        ``shapes``.
    """
    def record(name):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))
        return hook

    handles = [mod.register_forward_hook(record(name)) for name, mod in network.named_modules() if name]
    try:
        yield shapes
    finally:
        for h in handles:
            h.remove()
