"""Relevance amplitude filters F_alpha: Pass, Clamp, Amplify, Identity.

A filter is a callable on a relevance tensor R of shape (N, C, *spatial), torch or numpy:
normalise r = R / N (scope 'sample': N = max |R| per sample; 'channel': per sample and channel;
signs 'joint', or 'separate': positive and negative parts each by their own maximum), apply the
filter function to r, and scale back: R' = N * r'. Where N = 0, R is returned unchanged.

This module is the one home of the filter vocabulary: the kinds (:data:`FILTER_KINDS`), construction
from (kind, a1, a2, scope, signs) (:func:`make_filter`), spec strings (:func:`parse_filter`,
:func:`format_filter`, :func:`filters_from_specs`), the authors' sweep grids (:func:`default_grid`) and
the meaning of the heatmap filter (:func:`heatmap`).

The heatmap filter (the Inclusivity widget's slider, ``sweep(placement="input")``, the saved files):
a filter on the final heatmap *replaces* the run's own 'input' filter, i.e. it acts on the relevance
before the run's input filter; no heatmap filter (None or Identity) shows the run's relevance as it is.
So moving the slider never stacks a second filter on the first, and the saved settings (the run's
filters with the heatmap filter as the 'input' filter) reproduce exactly what is shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

__all__ = ["FILTER_KINDS", "FILTER_SPEC_HELP", "Amplify", "Clamp", "Filter", "Identity", "Pass", "default_grid",
           "describe_filter", "filters_from_specs", "format_filter", "heatmap", "heatmap_filter", "make_filter",
           "parse_filter"]


@dataclass(frozen=True)
class Filter:
    """Base class; subclasses implement :meth:`apply` on normalised relevance r (|r| <= 1)."""

    scope: str = "sample"
    signs: str = "joint"
    #: the filter's kind as specs and menus name it
    kind: ClassVar[str] = ""
    #: the filter in words, its fields formatted in (``describe``)
    words: ClassVar[str] = "heatmap: a filter"

    def __post_init__(self):
        if self.scope not in ("sample", "channel"):
            raise ValueError(f"filter scope must be 'sample' or 'channel', not {self.scope!r}")
        if self.signs not in ("joint", "separate"):
            raise ValueError(f"filter signs must be 'joint' or 'separate', not {self.signs!r}")

    def apply(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The filter on normalised relevance.

        Parameters
        ----------
        r : torch.Tensor
            Relevance divided by its maximum |relevance| (|r| <= 1).

        Returns
        -------
        torch.Tensor
            The filtered relevance, like ``r``.
        """
        raise NotImplementedError

    @property
    def parameters(self) -> tuple[float, ...]:
        """The two numbers :func:`make_filter` takes for this filter ((a1, a2) or (alpha, A); none for Identity)."""
        return ()

    def describe(self) -> str:
        """The filter on a heatmap in words (for status lines).

        Returns
        -------
        str
        """
        return self.words.format(**{k: getattr(self, k) for k in ("a1", "a2", "alpha", "A") if hasattr(self, k)})

    def apply_scaled(self, R: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
        """The same as ``N * apply(R / N)``, with the thresholds scaled by N instead (fewer passes).

        Parameters
        ----------
        R : torch.Tensor
            Relevance (N, C, *spatial).
        N : torch.Tensor
            Its maximum |relevance|, broadcastable to R (per sample or per channel).

        Returns
        -------
        torch.Tensor
            The filtered relevance, like ``R``.
        """
        safe = torch.where(N > 0, N, torch.ones_like(N))
        out = self.apply(R / safe) * safe
        return torch.where(N > 0, out, R)

    def _norm(self, R: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1 if self.scope == "sample" else 2, R.ndim))
        if not dims:
            return R.abs()
        return R.amax(dim=dims, keepdim=True)

    def __call__(self, R):
        """Filter relevance R (N, C, *spatial); returns the same type (torch or numpy) and shape."""
        if isinstance(R, np.ndarray):
            return self(torch.from_numpy(np.ascontiguousarray(R))).numpy()
        if R.ndim < 2:
            raise ValueError(f"a filter needs relevance of shape (N, C, *spatial), got {tuple(R.shape)}")
        if self.signs == "joint":
            dims = tuple(range(1 if self.scope == "sample" else 2, R.ndim))
            N = torch.maximum(R.amax(dim=dims, keepdim=True), -R.amin(dim=dims, keepdim=True))
            return self.apply_scaled(R, N)
        pos = R.clamp(min=0)
        neg = R.clamp(max=0)
        return self.apply_scaled(pos, self._norm(pos)) + self.apply_scaled(neg, self._norm(-neg))


@dataclass(frozen=True)
class Identity(Filter):
    """No change."""

    kind: ClassVar[str] = "identity"
    words: ClassVar[str] = "heatmap: the run's relevance as it is"

    def __call__(self, R):
        return R

    def apply(self, r):
        return r


@dataclass(frozen=True)
class _Band(Filter):
    """A filter with a band [a1, a2] of normalised magnitudes."""

    a1: float = 0.0
    a2: float = 1.0

    @property
    def parameters(self) -> tuple[float, float]:
        """(a1, a2): the band."""
        return (self.a1, self.a2)

    def __init__(self, a1: float = 0.0, a2: float = 1.0, scope: str = "sample", signs: str = "joint"):
        a1, a2 = float(a1), float(a2)
        if not (math.isfinite(a1) and math.isfinite(a2) and 0.0 <= a1 <= a2):
            raise ValueError(f"{type(self).__name__.lower()}({a1:g}, {a2:g}): the band needs finite bounds with "
                             "0 <= a1 <= a2 (magnitudes relative to the maximum |relevance|)")
        object.__setattr__(self, "a1", a1)
        object.__setattr__(self, "a2", a2)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "signs", signs)
        self.__post_init__()


@dataclass(frozen=True, init=False)
class Pass(_Band):
    """pass(a1, a2): keep r where a1 <= |r| <= a2, else 0. The paper's alpha-pass is Pass(0, alpha)."""

    kind: ClassVar[str] = "pass"
    words: ClassVar[str] = "heatmap: only relevance up to {a2:g} of the maximum kept"

    def apply(self, r):
        a = r.abs()
        return torch.where((a >= self.a1) & (a <= self.a2), r, torch.zeros_like(r))

    def apply_scaled(self, R, N):
        a = R.abs()
        keep = (a >= self.a1 * N) & (a <= self.a2 * N)
        return R * keep


@dataclass(frozen=True, init=False)
class Clamp(_Band):
    """clamp(a1, a2): r' = sign(r) * min(max(|r|, a1), a2) for r != 0; 0 stays 0. alpha-clamp = Clamp(0, alpha)."""

    kind: ClassVar[str] = "clamp"
    words: ClassVar[str] = "heatmap: relevance clamped at {a2:g} of the maximum"

    def apply(self, r):
        return torch.sign(r) * r.abs().clamp(min=self.a1, max=self.a2)

    def apply_scaled(self, R, N):
        # sign(0) = 0 keeps zeros; with N = 0 the relevance is all zero and stays so
        return R.abs().clamp_(min=self.a1 * N, max=self.a2 * N).mul_(torch.sign(R))


@dataclass(frozen=True)
class Amplify(Filter):
    """amplify(alpha, A): r' = A * r where |r| >= alpha, r elsewhere (the follow-up used A = 2)."""

    alpha: float = 0.5
    A: float = 2.0
    kind: ClassVar[str] = "amplify"
    words: ClassVar[str] = "heatmap: relevance above {alpha:g} of the maximum doubled"

    @property
    def parameters(self) -> tuple[float, float]:
        """(alpha, A): the threshold and the factor."""
        return (self.alpha, self.A)

    def __init__(self, alpha: float = 0.5, A: float = 2.0, scope: str = "sample", signs: str = "joint"):
        if not (math.isfinite(float(alpha)) and math.isfinite(float(A)) and float(alpha) >= 0):
            raise ValueError(f"amplify({float(alpha):g}, {float(A):g}): alpha (a magnitude >= 0) and A (the factor) "
                             "must be finite")
        object.__setattr__(self, "alpha", float(alpha))
        object.__setattr__(self, "A", float(A))
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "signs", signs)
        self.__post_init__()

    def apply(self, r):
        return torch.where(r.abs() >= self.alpha, r * self.A, r)

    def apply_scaled(self, R, N):
        if not bool((N > 0).all()):
            return super().apply_scaled(R, N)
        return torch.where(R.abs() >= self.alpha * N, R * self.A, R)


_KINDS = {"pass": Pass, "clamp": Clamp, "amplify": Amplify, "identity": Identity, "none": Identity}
#: the filter kinds in menu order ('none' is no filter); pass/clamp take (a1, a2), amplify (alpha, A)
FILTER_KINDS = ("none", "pass", "clamp", "amplify")


def make_filter(kind: str, a1: float = 0.0, a2: float = 1.0, scope: str = "sample",
                signs: str = "joint") -> Filter | None:
    """A filter from its kind and two parameters.

    Parameters
    ----------
    kind : str
        'pass', 'clamp', 'amplify', 'none' or 'identity'.
    a1, a2 : float
        pass / clamp: the band [a1, a2] of normalised magnitudes; amplify: alpha = a1 and the factor A = a2.
    scope : str
        'sample' (one maximum over the case) or 'channel' (one per modality).
    signs : str
        'joint' (positive and negative relevance share one maximum) or 'separate'.

    Returns
    -------
    Filter or None
        None for 'none' and 'identity'.
    """
    key = kind.lower()
    if key not in _KINDS:
        raise ValueError(f"unknown filter kind {kind!r}; choose one of {', '.join(FILTER_KINDS)}")
    cls = _KINDS[key]
    return None if cls is Identity else cls(a1, a2, scope=scope, signs=signs)


#: the authors' sweep grids: (a1, a2) for pass and clamp, (alpha, A) for amplify
PASS_GRID = [(0, .05), (0, .1), (0, .2), (0, .4), (0, .6), (.05, 1), (.1, 1), (.2, 1), (.4, 1), (.6, 1)]
CLAMP_GRID = [(0, .05), (0, .1), (0, .2), (0, .4), (0, .6)]
AMPLIFY_GRID = [(0.5, 2), (0.7, 2)]
_GRIDS = {"pass": PASS_GRID, "clamp": CLAMP_GRID, "amplify": AMPLIFY_GRID}


def heatmap_filter(kind: str, alpha: float) -> Filter | None:
    """The one-slider filter on a final heatmap: clamp(0, alpha), pass(0, alpha), amplify(alpha, 2) or none.

    Parameters
    ----------
    kind : str
        'clamp', 'pass', 'amplify' or 'none'.
    alpha : float
        The slider, a fraction of the maximum |relevance|.

    Returns
    -------
    Filter or None
        None for 'none'; it replaces a run's own 'input' filter (see :func:`heatmap`).
    """
    if kind == "amplify":
        return make_filter(kind, alpha, 2.0)
    return make_filter(kind, 0.0, alpha)


def describe_filter(f: Filter | None) -> str:
    """A heatmap filter in words, for status lines.

    Parameters
    ----------
    f : Filter or None
        The filter (None: no heatmap filter).

    Returns
    -------
    str
    """
    return "no heatmap filter: the run's relevance as it is" if f is None else f.describe()


def default_grid(kinds=("pass", "clamp", "amplify"), scope: str = "sample", signs: str = "joint") -> list[Filter]:
    """The authors' grids: pass (10), clamp (5), amplify (2) settings, in that order.

    Parameters
    ----------
    kinds : sequence of str
        Which kinds' grids.
    scope, signs : str
        As for :func:`make_filter`.

    Returns
    -------
    list of Filter
    """
    return [make_filter(k, a, b, scope, signs) for k in ("pass", "clamp", "amplify") if k in kinds
            for a, b in _GRIDS[k]]


def heatmap(unfiltered, filtered, f: Filter | None):
    """The heatmap under a heatmap filter that replaces the run's own input filter.

    Parameters
    ----------
    unfiltered : numpy.ndarray or torch.Tensor
        The relevance before the run's input filter, one sample (C, *spatial).
    filtered : numpy.ndarray or torch.Tensor
        The run's own relevance (after its input filter).
    f : Filter or None
        The heatmap filter; None or Identity gives ``filtered``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        (C, *spatial), as given.
    """
    if f is None or isinstance(f, Identity):
        return filtered
    return f(unfiltered[None])[0]

FILTER_SPEC_HELP = (
    "A filter spec is KIND:P1:P2[:scope][:signs][@PLACE]: KIND is pass, clamp or amplify (pass:A1:A2, "
    "clamp:A1:A2, amplify:ALPHA:A) or identity; scope is sample (default) or channel; signs joint "
    "(default) or separate; PLACE is output, input (default), a module name or a glob such as 'enc*'. "
    "Example: clamp:0:0.2@input, pass:0:0.6:channel@*block*."
)


def parse_filter(spec: str) -> tuple[str, Filter]:
    """Parse a filter spec (see ``FILTER_SPEC_HELP``), e.g. 'clamp:0:0.2@input'.

    Parameters
    ----------
    spec : str
        KIND:A1:A2, optionally followed by :channel and :separate, then @PLACEMENT.

    Returns
    -------
    tuple
        (placement, Filter).
    """
    text = spec.strip()
    place = "input"
    if "@" in text:
        text, place = text.split("@", 1)
    parts = [p for p in re.split(r"[:,]", text) if p != ""]
    if not parts or parts[0].lower() not in _KINDS:
        raise ValueError(f"bad filter spec {spec!r}: unknown kind. {FILTER_SPEC_HELP}")
    cls = _KINDS[parts[0].lower()]
    nums, opts = [], {}
    for p in parts[1:]:
        if p in ("sample", "channel"):
            opts["scope"] = p
        elif p in ("joint", "separate"):
            opts["signs"] = p
        else:
            try:
                nums.append(float(p))
            except ValueError:
                raise ValueError(f"bad filter spec {spec!r}: {p!r} is not a number. {FILTER_SPEC_HELP}") from None
    if cls is Identity:
        return place, Identity(**opts)
    if len(nums) != 2:
        raise ValueError(f"bad filter spec {spec!r}: {parts[0]} takes two numbers. {FILTER_SPEC_HELP}")
    return place, cls(*nums, **opts)


def format_filter(place: str, f: Filter) -> str:
    """The spec string that :func:`parse_filter` reads back to the same (placement, filter).

    Parameters
    ----------
    place : str
        'output', 'input', a module name or a glob.
    f : Filter
        The filter.

    Returns
    -------
    str
    """
    body = ":".join([f.kind, *(repr(v) for v in f.parameters)])
    if f.scope != "sample":
        body += f":{f.scope}"
    if f.signs != "joint":
        body += f":{f.signs}"
    return f"{body}@{place}"


def filters_from_specs(specs) -> dict[str, Filter]:
    """{placement: Filter} from specs.

    Parameters
    ----------
    specs : list of str, dict or None
        Spec strings ('clamp:0:0.2@input'), or a dict whose values are Filters or spec bodies ('clamp:0:0.2').

    Returns
    -------
    dict[str, Filter]
    """
    if specs is None:
        return {}
    if isinstance(specs, Mapping):
        return {k: parse_filter(f"{v}@{k}")[1] if isinstance(v, str) else v for k, v in specs.items()}
    return dict(parse_filter(s) for s in specs)
