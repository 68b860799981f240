"""Uncertainty-aware relevance: Monte Carlo dropout (Gal and Ghahramani 2016) and test-time flips
(nnU-Net's mirroring), run as T draws batched through the engine.

Each draw is one forward pass (dropout sampling, or the input flipped along some spatial axes) and one
relevance pass with the run's method and filters; flipped draws are flipped back before anything is
averaged. The result is an :class:`~napari_lrp.pipeline.result.Explanation` whose ``relevance`` is the mean
over the draws, with the spread in named fields: ``relevance_std`` (per voxel, over draws,
population sd), ``predictive_entropy`` H[mean p] and ``mutual_information`` H[mean p] - mean H[p] (the
epistemic part), in nats, per voxel of the case grid. The kept forward passes make a new filter setting
one relevance pass per batch and no forward pass.

Batches: the draws are stacked along the batch axis (a dropout mask is drawn per sample, Instance/Group
norms act per sample, BatchNorm in eval uses its running statistics), so a batch of B draws equals B single
draws. On an accelerator B is the most draws whose kept forward passes fit half the free memory, estimated
from the first draw's activation sizes; on the CPU B = 1 (batches bring nothing there); ``batch_size``
overrides both. All T passes must fit in the free memory together, or the run refuses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..io.case import Case
from ..lrp.engine import Propagation
from ..lrp.ledger import Ledger
from ..lrp.names import matches
from ..lrp.targets import class_view, is_multilabel, needs_ground_truth, predict, region_mask, start_relevance
from ..lrp.types import ACTIVATION_TYPES, DROPOUT_TYPES
from ..models.card import Model
from ..models.devices import available_bytes
from ..models.preprocess import PreparedInput
from .runs import RunRecord, RunSpec

__all__ = ["FLIPS", "SampledRun", "Sampling", "entropy", "probabilities", "run_sampled", "DrawnDropout"]

#: every combination of flips along the spatial axes (Z, Y, X) = (0, 1, 2), the identity first
FLIPS: tuple[tuple[int, ...], ...] = tuple(c for k in range(4) for c in itertools.combinations(range(3), k))


@dataclass(frozen=True)
class Sampling:
    """How the draws are made. mc_samples: draws per flip (T for MC dropout); dropout: the rate of the
    network's Dropout modules during the draws (None: their own), or, for a network without Dropout
    modules, the rate of the dropout inserted after every activation module whose name matches
    ``dropout_at`` (an approximation: the network was not trained with it); seed: draws are reproducible;
    tta: None or "flips" (the 8 flips of the 3 spatial axes, each with ``mc_samples`` draws);
    batch_size: draws per batch (None: from the memory estimate)."""

    mc_samples: int = 1
    dropout: float | None = None
    seed: int = 0
    tta: str | None = None
    dropout_at: str = "*"
    batch_size: int | None = None

    def __post_init__(self):
        if int(self.mc_samples) != self.mc_samples or self.mc_samples < 1:
            raise ValueError(f"mc_samples must be a whole number >= 1, not {self.mc_samples!r}")
        if self.dropout is not None and not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be a rate in [0, 1) or None, not {self.dropout!r}")
        if self.tta not in (None, "flips"):
            raise ValueError(f"tta must be None or 'flips', not {self.tta!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, not {self.batch_size!r}")

    @property
    def active(self) -> bool:
        """Whether the run draws at all (several samples, a dropout rate or flips)."""
        return self.mc_samples > 1 or self.dropout is not None or self.tta is not None

    @property
    def stochastic(self) -> bool:
        """Whether dropout samples during the draws (p = 0 draws the deterministic network)."""
        return self.dropout > 0 if self.dropout is not None else self.mc_samples > 1

    def draws(self) -> list[tuple[int, ...]]:
        """The spatial flip axes of every draw, in order (draw i uses seed ``seed + i``).

        Returns
        -------
        list of tuple of int
        """
        flips = FLIPS if self.tta == "flips" else ((),)
        return [f for f in flips for _ in range(int(self.mc_samples))]

    def settings(self) -> dict:
        """What the run's settings record of the draws.

        Returns
        -------
        dict
            mc_samples, dropout, seed, tta, dropout_at and the number of draws.
        """
        return {"mc_samples": int(self.mc_samples), "dropout": self.dropout, "seed": int(self.seed),
                "tta": self.tta, "dropout_at": self.dropout_at, "draws": len(self.draws())}


class DrawnDropout:
    """Dropout masks drawn per draw, whatever the batching: while active (a context manager), every
    Dropout module of the network (rate ``sampling.dropout`` if given, else its own), or for a network
    without Dropout modules every activation module named by ``dropout_at`` (rate ``sampling.dropout``),
    multiplies its output by a mask / (1 - p) drawn from a generator seeded by (seed, draw, call), for the
    draws in :attr:`draws` (one per batch sample, set before each batch). Dropout1d/2d/3d drop whole
    channels, the others single values. The modules themselves stay in eval. MC draws with neither
    Dropout modules nor ``dropout`` refuse, naming the options."""

    def __init__(self, network: nn.Module, sampling: Sampling):
        self.network, self.sampling = network, sampling
        self.draws: list[int] = []
        self._calls = 0
        self._handles: list = []
        drops = [m for m in network.modules() if isinstance(m, DROPOUT_TYPES)]
        p = sampling.dropout
        if sampling.stochastic and not drops and p is None:
            raise ValueError(f"{type(network).__name__} has no Dropout modules, so mc_samples={sampling.mc_samples} "
                             "draws would all be the same network: pass dropout=p to insert dropout after its "
                             "activations (an approximation), or use tta='flips'")
        if any(isinstance(m, nn.AlphaDropout) for m in drops) and sampling.stochastic:
            raise ValueError("AlphaDropout is not multiplicative; MC dropout supports Dropout and Dropout1d/2d/3d")
        if drops:
            self.sites = [(m, float(m.p if p is None else p), isinstance(m, (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)))
                          for m in drops]
        elif p:
            acts = [m for name, m in network.named_modules()
                    if isinstance(m, ACTIVATION_TYPES) and matches(name, sampling.dropout_at)]
            if not acts:
                raise ValueError(f"no activation module of {type(network).__name__} matches "
                                 f"dropout_at={sampling.dropout_at!r}; dropout has nowhere to go")
            self.sites = [(m, float(p), False) for m in acts]
        else:
            self.sites = []

    def __enter__(self) -> DrawnDropout:
        if self.sampling.stochastic:
            self._handles = [m.register_forward_hook(self._hook(rate, channels)) for m, rate, channels in self.sites
                             if rate > 0]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def start_batch(self, draws: list[int]) -> None:
        """The next forward pass computes these draws (one per sample of the batch).

        Parameters
        ----------
        draws : list of int
            The draws' numbers (their seeds are ``seed + i``).
        """
        self.draws, self._calls = list(draws), 0

    def _hook(self, rate: float, channels: bool):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor) or out.shape[0] != len(self.draws):
                return None
            self._calls += 1
            shape = tuple(out.shape[1:2]) + (1,) * (out.ndim - 2) if channels else tuple(out.shape[1:])
            masks = []
            for draw in self.draws:
                g = torch.Generator(device=out.device)
                g.manual_seed(int(np.random.SeedSequence([int(self.sampling.seed), draw, self._calls])
                                  .generate_state(1)[0]))
                masks.append(torch.rand(shape, generator=g, device=out.device) >= rate)
            mask = torch.stack(masks).to(out.dtype).div_(1.0 - rate)
            return out * mask

        return hook


def entropy(p: torch.Tensor, dim: int = 0, independent: bool = False) -> torch.Tensor:
    """-sum p log p along one axis (nats), with 0 log 0 = 0.

    Parameters
    ----------
    p : torch.Tensor
        Probabilities.
    dim : int
        The axis of the classes.
    independent : bool
        The channels are independent regions (several sigmoid outputs): the sum of each region's Bernoulli
        entropy -p log p - (1 - p) log(1 - p).

    Returns
    -------
    torch.Tensor
    """
    if independent:
        p = torch.stack([p, 1 - p])
        return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(0).sum(dim)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim)


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Class probabilities from logits.

    Parameters
    ----------
    logits : torch.Tensor
        (K, ...).
    activation : str
        'softmax', or 'sigmoid' for one channel (p, 1 - p) stacked as (background, foreground).

    Returns
    -------
    torch.Tensor
        (K, ...) or (2, ...) for one sigmoid channel.
    """
    if logits.shape[0] == 1:
        p = torch.sigmoid(logits[0])
        return torch.stack([1 - p, p])
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=0)


def _flip(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Flip the last three (spatial) axes named in ``axes`` (0 = Z, 1 = Y, 2 = X)."""
    return t.flip([a - 3 for a in axes]) if axes else t


def _pass_bytes(prop: Propagation) -> int:
    """Estimate of one draw's kept forward pass: three tensors (input, output, rule state) per module output."""
    item = prop.output.element_size()
    n = sum(math.prod(s[1:]) for s in prop.shapes.values() if s)
    return 3 * n * item + 3 * prop.x[0].numel() * item


@dataclass
class _Batch:
    propagation: Propagation
    flips: list[tuple[int, ...]]
    start: torch.Tensor | None = None


@dataclass
class SampledRun(RunRecord):
    """The draws of one sampled run, kept for re-filtering (``runs.LRPRun`` for T draws)."""

    batches: list[_Batch]
    sampling: Sampling
    mean_probability: np.ndarray
    predictive_entropy: np.ndarray
    mutual_information: np.ndarray
    kept_shapes: dict = field(default_factory=dict)

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """The first batch's module names and output shapes (for layer tables)."""
        return dict(self.batches[0].propagation.shapes)

    def explanation(self, filters: dict, keep=None, progress=None):
        total = sum(b.propagation.n_rules for b in self.batches)
        done = 0

        def batch_progress(d, _t):
            if progress is not None:
                progress(done + d, total)

        crop = self.prepared.crop
        unfiltered, kept, ledgers = [], {}, []
        n_draws = sum(len(b.flips) for b in self.batches)
        # mean and spread accumulate where the network ran, in float64 (Welford's update: no stack of draws,
        # no cancellation), so a GPU run ships two volumes to the host instead of every draw twice
        mean = m2 = mean_unfiltered = None
        n = 0
        for batch in self.batches:
            res = batch.propagation.propagate(batch.start, filters=filters, keep=keep, progress=batch_progress)
            done += batch.propagation.n_rules
            ledgers.append(res.ledger)
            for i, axes in enumerate(batch.flips):
                rel = crop(_flip(res.relevance[i:i + 1], axes))[0].double()
                unf = rel if res.unfiltered is res.relevance else crop(_flip(res.unfiltered[i:i + 1], axes))[0].double()
                n += 1
                if mean is None:
                    mean, m2, mean_unfiltered = rel.clone(), torch.zeros_like(rel), unf.clone()
                else:
                    delta = rel - mean
                    mean += delta / n
                    m2 += delta * (rel - mean)
                    mean_unfiltered += (unf - mean_unfiltered) / n
                unfiltered.append(unf.float().cpu().numpy())
            for name, R in res.kept.items():
                s = sum(_flip(R[i:i + 1], axes).double() for i, axes in enumerate(batch.flips)) / n_draws
                kept[name] = s if name not in kept else kept[name] + s
        samples = np.stack(unfiltered)
        std = (m2 / n).sqrt()
        return self.explanation_of(
            mean.cpu().numpy(), mean_unfiltered.cpu().numpy(), filters, _merge(ledgers),
            kept={k: v.float() for k, v in kept.items()}, relevance_std=std.float().cpu().numpy(),
            predictive_entropy=self.predictive_entropy, mutual_information=self.mutual_information,
            mean_probability=self.mean_probability, samples=samples, sample_input_filter=filters.get("input"),
            sampling=self.sampling.settings())


def _merge(ledgers: list[Ledger]) -> Ledger:
    """One ledger for all batches: sums of start, end and every entry (per batch, in order)."""
    out = Ledger(start=sum(ld.start for ld in ledgers), end=sum(ld.end for ld in ledgers))
    for ld in ledgers:
        out.entries.extend(ld.entries)
        for k, v in ld.unhandled.items():
            out.unhandled[k] = max(out.unhandled.get(k, 0), v)
    return out


def run_sampled(m: Model, case: Case, prep: PreparedInput, sampling: Sampling, spec: RunSpec,
                progress: Callable[[int, int], None] | None = None) -> SampledRun:
    """The forward passes of every draw (batched, kept), the predictive statistics and the start relevance
    of each draw for ``spec``'s target on the mean prediction.

    Parameters
    ----------
    m, case, prep : Model, Case, PreparedInput
        The model, the case and its model-grid input.
    sampling : Sampling
        The draws (how many, dropout, flips, seed, batch size).
    spec : RunSpec
        Preset, rules, target, class, strict and output index, shared by every draw.
    progress : callable(done, total), optional
        Called per batch of forward passes.

    Returns
    -------
    SampledRun
    """
    target, target_class = spec.target, spec.target_class
    draws = sampling.draws()
    net = prep.network
    batches: list[_Batch] = []
    crop = prep.crop
    sum_p = sum_h = sum_logits = None
    activation = m.card.output_activation
    with DrawnDropout(net, sampling) as dropout:
        i = 0
        size = 1  # the first draw alone, to estimate the memory of one
        while i < len(draws):
            flips = draws[i:i + size]
            x = torch.cat([_flip(prep.x, axes) for axes in flips])
            dropout.start_batch(list(range(i, i + len(flips))))
            prop = spec.propagation(net, x, prep.bounds)
            batches.append(_Batch(prop, list(flips)))
            for b, axes in enumerate(flips):
                logits = crop(_flip(prop.output[b:b + 1], axes))[0].double()
                m.check_outputs(int(logits.shape[0]))
                p = probabilities(logits, activation)
                h = entropy(p, independent=is_multilabel(activation, logits.shape[0]))
                sum_p = p if sum_p is None else sum_p + p
                sum_h = h if sum_h is None else sum_h + h
                sum_logits = logits if sum_logits is None else sum_logits + logits
            i += len(flips)
            if progress is not None:
                progress(i, len(draws))
            if len(batches) == 1:
                per = _pass_bytes(prop)
                free = available_bytes(prop.output.device)
                if per * (len(draws) - 1) > free:
                    raise MemoryError(
                        f"{len(draws)} draws keep {len(draws)} forward passes of about {per / 2**30:.2f} GiB each "
                        f"({per * len(draws) / 2**30:.1f} GiB) but {free / 2**30:.1f} GiB is free: lower mc_samples "
                        "or use fewer flips")
                fit = max(1, min(len(draws) - 1, int(free * 0.5 // max(per, 1))))
                # on the CPU a batch costs what its draws cost one by one (measured: 8 draws of the sample
                # case 4.9 s alone, 5.7-6.6 s in batches of 4-7), so batches are for accelerators
                size = sampling.batch_size or (fit if prop.output.device.type != "cpu" else 1)
    n = len(draws)
    mean_p = sum_p / n
    h_mean = entropy(mean_p, independent=is_multilabel(activation, sum_logits.shape[0]))
    mi = (h_mean - sum_h / n).clamp(min=0)
    mean_logits = (sum_logits / n)[None]
    if not 0 <= target_class < mean_logits.shape[1]:
        raise ValueError(f"target class {target_class} does not exist; the model has {mean_logits.shape[1]} output "
                         "channels")
    # the mean prediction: argmax of the mean probabilities (one sigmoid channel: mean p > 1/2; independent
    # sigmoid regions: each region's mean p > 1/2, one bit per region as predict() writes it)
    multilabel = is_multilabel(activation, mean_logits.shape[1])
    if multilabel:
        prediction = predict(torch.logit(mean_p.clamp(1e-12, 1 - 1e-12))[None], activation)[0].cpu().numpy()
    else:
        cls_map = (mean_p[1] > 0.5) if mean_logits.shape[1] == 1 else mean_p.argmax(0)
        prediction = cls_map.to(torch.uint8).cpu().numpy()
    truth = m.card.class_ground_truth(case, target_class) if needs_ground_truth(target) else None
    mask = region_mask(target, class_view(prediction, target_class, multilabel), truth, target_class)
    for batch in batches:
        starts = []
        for b, axes in enumerate(batch.flips):
            logits = crop(_flip(batch.propagation.output[b:b + 1], axes))
            start = start_relevance(logits, mask, target_class, getattr(target, "against", None))
            starts.append(_flip(prep.pad(start), axes))
        batch.start = torch.cat(starts)
    return SampledRun(batches=batches, prepared=prep, case=case, model=m, spec=spec, sampling=sampling,
                      logits=mean_logits[0].float().cpu().numpy(), prediction=prediction,
                      mean_probability=mean_p.float().cpu().numpy(),
                      predictive_entropy=h_mean.float().cpu().numpy(), mutual_information=mi.float().cpu().numpy())

