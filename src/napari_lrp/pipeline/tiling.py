"""Tiled relevance for any network: sliding windows, a blended prediction, relevance shared back.

``explain(..., window=(Z, Y, X) | "auto", overlap=0.5, blend="gaussian" | "constant" | "trimmed")``:
the network sees windows of the model-grid input (starts every window * (1 - overlap) voxels, the last
window flush with the end). The prediction is the blend y = sum_i w_i y_i / sum_i w_i. The start relevance R
of each output voxel is shared among the windows in proportion to their blended contributions,
R_i = R * (w_i y_i / sum_j w_j) / y, which sums to R exactly (the blend is linear), so conservation holds
across windows; each window's input relevance is added into the full volume. One window's forward and
relevance pass are alive at a time (released after use): peak memory is one window's LRP plus volume-sized
buffers (input, prediction, relevance).

Blends: "gaussian" (nnU-Net's importance map, sigma = window / 8); "constant"; "trimmed" (constant, but 0 in
a margin of overlap * window / 2 on every side that faces another window): with a network whose receptive
field radius fits in that margin, tiled relevance equals the whole-volume relevance exactly (tested).
Layer filters normalise per window (the input filter acts on the assembled map). A new filter setting
re-runs the windows (nothing is kept).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..io.case import Case
from ..lrp.engine import select_output
from ..lrp.kernels import onednn_convolutions
from ..lrp.ledger import Ledger
from ..lrp.rules import divide_stabilised
from ..lrp.targets import start_relevance, target_of
from ..metrics.concepts import channel_table, layer_conditions, region_on_layer
from ..models.card import Model
from ..models.devices import available_bytes
from ..models.nnunet import nnunet_gaussian, nnunet_steps
from ..models.preprocess import PreparedInput
from .result import Explanation
from .runs import RunRecord, RunSpec, record_shapes

__all__ = ["auto_window", "blend_weights", "BLENDS", "budget", "check_tiling", "MAX_WINDOWS", "run_tiled",
           "tiled_prediction", "TiledRun", "window_starts", "windows"]

BLENDS = ("gaussian", "constant", "trimmed", "nnunet", "monai-gaussian", "monai-constant")

#: sliding windows one run may take (each is a forward and a relevance pass)
MAX_WINDOWS = 4096


def check_tiling(window, overlap, blend: str) -> None:
    """Refuse a blend, overlap or window that is not one (before any work, also when no window is given).

    Parameters
    ----------
    window : tuple of int, str or None
        (Z, Y, X), 'auto' or None.
    overlap : float or None
        In [0, 1).
    blend : str
        A name of :data:`BLENDS`.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}")
    if overlap is not None and (isinstance(overlap, bool) or not 0.0 <= float(overlap) < 1.0):
        raise ValueError(f"overlap must be a fraction in [0, 1), not {overlap!r}")
    if window is not None and not isinstance(window, str):
        try:
            sizes = [int(v) for v in window]
        except (TypeError, ValueError):
            raise ValueError(f"window must be (Z, Y, X), 'auto' or None, not {window!r}") from None
        if len(sizes) != 3 or min(sizes) < 1 or any(int(v) != v for v in window):
            raise ValueError(f"window must be three whole sizes >= 1 (Z, Y, X), not {window!r}")


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Starts along one axis: every round(window * (1 - overlap)) voxels, the last flush with the end.

    Parameters
    ----------
    size : int
        The axis' length.
    window : int
        The window's length.
    overlap : float
        In [0, 1).

    Returns
    -------
    list of int
    """
    if window >= size:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def windows(shape, window, overlap: float, blend: str = "gaussian") -> list[tuple[slice, slice, slice]]:
    """Every window over a volume; blend 'nnunet' places them as nnU-Net's predictor does.

    Parameters
    ----------
    shape : tuple of int
        The volume's spatial shape.
    window : tuple of int
        (Z, Y, X).
    overlap : float
        In [0, 1) ('nnunet': ``compute_steps_for_sliding_window`` with step 1 - overlap).
    blend : str
        A name of :data:`BLENDS`.

    Returns
    -------
    list of tuple of slice
    """
    win = [min(int(w), int(s)) for w, s in zip(window, shape)]
    if blend == "nnunet":
        per_axis = [nnunet_steps(s, w, 1.0 - overlap) for s, w in zip(shape, win)]
    elif blend.startswith("monai-"):  # MONAI's sliding_window_inference: its scan interval and patch slices
        from monai.data.utils import dense_patch_slices
        from monai.inferers.utils import _get_scan_interval

        interval = _get_scan_interval(tuple(shape), tuple(win), 3, (overlap,) * 3)
        return [tuple(s) for s in dense_patch_slices(tuple(shape), tuple(win), interval)]
    else:
        per_axis = [window_starts(s, w, overlap) for s, w in zip(shape, win)]
    return [tuple(slice(a, a + w) for a, w in zip(starts, win)) for starts in itertools.product(*per_axis)]


def blend_weights(win: tuple[slice, slice, slice], shape, blend: str, overlap: float) -> torch.Tensor:
    """The blend weight of one window placed in a volume.

    Parameters
    ----------
    win : tuple of slice
        The window.
    shape : tuple of int
        The volume's spatial shape.
    blend : str
        A name of :data:`BLENDS`.
    overlap : float
        The windows' overlap (the 'trimmed' margin).

    Returns
    -------
    torch.Tensor
        (Z', Y', X') float64.
    """
    sizes = [s.stop - s.start for s in win]
    if blend == "constant":
        return torch.ones(sizes, dtype=torch.float64)
    if blend == "gaussian":
        axes = []
        for n in sizes:
            c, sigma = (n - 1) / 2.0, max(n / 8.0, 1e-6)
            axes.append(torch.exp(-((torch.arange(n, dtype=torch.float64) - c) ** 2) / (2 * sigma**2)))
        w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
        return w / w.max()
    if blend == "nnunet":
        return nnunet_gaussian(sizes)
    if blend.startswith("monai-"):
        from monai.data.utils import compute_importance_map

        return compute_importance_map(tuple(sizes), mode=blend[6:], sigma_scale=0.125).double()
    if blend == "trimmed":
        w = torch.ones(sizes, dtype=torch.float64)
        for axis, (s, n, total) in enumerate(zip(win, sizes, shape)):
            margin = int(math.floor(overlap * n / 2))
            if margin <= 0:
                continue
            idx = [slice(None)] * 3
            if s.start > 0:  # another window lies before this one
                idx[axis] = slice(0, margin)
                w[tuple(idx)] = 0
            if s.stop < total:
                idx[axis] = slice(n - margin, n)
                w[tuple(idx)] = 0
        return w
    raise ValueError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}")


def _bytes_per_voxel(net, x: torch.Tensor, divisible: int, spec: RunSpec, bounds) -> float:
    """Kept-forward bytes per input voxel, from one small probe window's activation sizes."""
    edge = max(divisible, 16 // divisible * divisible)
    sl = tuple(slice(0, min(edge, s)) for s in x.shape[2:])
    # a probe of the sizes: an operation without a rule is the run's to report, not the probe's
    prop = dataclasses.replace(spec, strict=False).propagation(net, x[(slice(None), slice(None)) + sl], bounds)
    item = prop.output.element_size()
    n = sum(math.prod(s[1:]) for s in prop.shapes.values() if s)
    voxels = math.prod(s.stop - s.start for s in sl)
    prop.release()
    # the kept forward (about three tensors per module output) and the relevance pass's temporaries
    return 4.0 * n * item / voxels


def auto_window(net, x: torch.Tensor, divisible: int, budget_bytes: float, spec: RunSpec | None = None,
                bounds=None, per_voxel: float | None = None) -> tuple[int, int, int] | None:
    """The largest cube-ish window whose LRP fits a memory budget.

    Parameters
    ----------
    net : torch.nn.Module
        The network.
    x : torch.Tensor
        The model-grid input (1, C, Z, Y, X).
    divisible : int
        Window sizes are multiples of it.
    budget_bytes : float
        The budget in bytes.
    spec : RunSpec, optional
        Preset, rules and output index of the run (default: the 'paper' preset).
    bounds : tuple, optional
        Input bounds for the z-box rule.
    per_voxel : float, optional
        The probe's bytes per voxel when the caller has it already.

    Returns
    -------
    tuple of int or None
        The window (Z, Y, X); None when the whole volume fits.
    """
    per = per_voxel or _bytes_per_voxel(net, x, divisible, spec or RunSpec(), bounds)
    shape = tuple(int(s) for s in x.shape[2:])
    if per * math.prod(shape) <= budget_bytes:
        return None
    edge = (budget_bytes / per) ** (1 / 3)
    win = []
    for s in shape:
        w = min(s, max(divisible, int(edge // divisible * divisible)))
        win.append(w)
    # a thin axis (fewer voxels than the edge) leaves room for the others
    spare = budget_bytes / per / math.prod(win)
    if spare > 1:
        grow = [i for i, s in enumerate(shape) if win[i] < s]
        for i in grow:
            win[i] = min(shape[i], max(divisible, int(win[i] * spare ** (1 / max(len(grow), 1)) // divisible
                                                      * divisible)))
    return tuple(win)


#: the budget of ``window="auto"`` when none is given (bytes): a BraTS-size case (4 x 240 x 240 x 155) then
#: peaks near 2 GB instead of taking half the free memory for one whole-volume pass
AUTO_BUDGET = 2 * 2**30


def budget(max_memory: float | None, auto: bool = False, device: torch.device | None = None) -> float:
    """The memory budget in bytes.

    Parameters
    ----------
    max_memory : float or None
        Bytes; None: half the free memory where the network runs (for ``window="auto"``: at most
        ``AUTO_BUDGET``).
    auto : bool
        For ``window="auto"``, which asks for windows that fit a modest budget.
    device : torch.device or None
        Where the network runs: a CUDA GPU's free memory bounds its windows, else the host's.

    Returns
    -------
    float
    """
    if max_memory:
        return float(max_memory)
    half = 0.5 * available_bytes(device)
    return min(half, AUTO_BUDGET) if auto else half


def _activation_sums(act: torch.Tensor, region: torch.Tensor) -> dict[str, torch.Tensor]:
    """A window's activation sums per channel inside and outside the region on the layer's grid (C', z, y, x)."""
    inside = region_on_layer(region, act.shape[1:]).to(act.dtype)
    flat, m = act.reshape(act.shape[0], -1), inside.reshape(-1)
    n_in = m.sum()
    return {"activation_in": flat @ m, "activation_out": flat.sum(1) - flat @ m,
            "voxels_in": n_in.expand(act.shape[0]), "voxels_out": (m.numel() - n_in).expand(act.shape[0])}


@dataclass
class TiledRun(RunRecord):
    """A tiled run's inputs (``runs.LRPRun`` for windows); ``explanation`` re-runs the windows."""

    window: tuple
    overlap: float
    blend: str
    start: torch.Tensor  # model grid (1, K, Z, Y, X)
    blended: torch.Tensor  # the blended prediction, model grid (1, K, Z, Y, X)
    denominator: torch.Tensor  # sum of the blend weights (Z, Y, X)
    shapes: dict
    start_total: float = 0.0  # the start relevance on the case grid, summed (float64)
    outside: float = 0.0  # start relevance the model grid cannot take (outside nnU-Net's crop box)

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """{module name: output shape} in one window."""
        return dict(self.shapes)

    def retarget(self, target, start_case: torch.Tensor) -> TiledRun:
        start, outside = self.prepared.start_to_model(start_case.to(self.blended.dtype), self.blended)
        return dataclasses.replace(self, start=start, spec=dataclasses.replace(self.spec, target=target),
                                   outside=outside, start_total=float(start_case.sum(dtype=torch.float64)),
                                   run_settings=dict(self.run_settings))

    def concepts(self, exp: Explanation, layer: str, progress=None) -> pd.DataFrame:
        region = exp.target_region()
        if region is not None:  # on the model grid, as the windows see it
            region = self.prepared.pad(torch.as_tensor(np.ascontiguousarray(region), dtype=torch.float64)[None, None])
        return channel_table(self.layer_relevance_sums(layer, exp.filters, progress, region=region))

    def conditional(self, exp: Explanation, layer, channels=None, progress=None) -> np.ndarray:
        shapes = {n: int(s[1]) for n, s in self.shapes.items() if len(s) == 5}
        conditions = layer_conditions(list(self.shapes), shapes, layer, channels)
        return self.conditional_of(conditions, exp.filters, progress)

    def _windows(self):
        """(index, count, window slices, its Propagation, its start relevance) for every window, one alive at a
        time (the caller releases it)."""
        prep, x = self.prepared, self.prepared.x
        shape = tuple(x.shape[2:])
        wins = windows(shape, self.window, self.overlap, self.blend)
        for i, win in enumerate(wins):
            sl = (slice(None), slice(None)) + win
            prop = self.spec.propagation(prep.network, x[sl], prep.bounds)
            w = blend_weights(win, shape, self.blend, self.overlap).to(prop.output.device)
            yi = prop.output.double()
            share = (w * yi) / self.denominator[win]  # the window's part of the blended prediction
            Ri = divide_stabilised(self.start[sl].double() * share, self.blended[sl], 0.0)
            yield i, len(wins), sl, prop, Ri.to(prop.output.dtype)

    def explanation(self, filters: dict, keep=None, progress=None):
        if keep not in (None, True, False) and len(list(keep)):
            raise ValueError(f"keep={list(keep)!r}: a tiled run releases each window after its pass, so it keeps no "
                             "layer's relevance; run without window= (or a larger max_memory) to keep layers")
        prep, x = self.prepared, self.prepared.x
        layer_filters = {k: v for k, v in filters.items() if k != "input"}
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        ledger = Ledger(start=self.start_total)
        model_start = float(self.start.sum(dtype=torch.float64))
        if prep.maps_grid:  # nnU-Net, bundles: the output's way back to the case, reversed
            ledger.record("output to model grid", "rule", "resample", self.start_total, model_start)
        n = 0
        for i, n, sl, prop, Ri in self._windows():
            res = prop.propagate(Ri, filters=layer_filters, retain=False)
            prop.release()
            total[sl] += res.relevance.double()
            ledger.entries.extend(res.ledger.entries)
            for k, v in res.ledger.unhandled.items():
                ledger.unhandled[k] = max(ledger.unhandled.get(k, 0), v)
            if progress is not None:
                progress(i + 1, n)
        case_total = prep.relevance_to_case(total)
        if prep.maps_grid:  # nnU-Net, bundles: the input's way back to the case
            ledger.record("input to case grid", "rule", "resample", float(total.sum()), float(case_total.sum()))
        unfiltered = case_total[0].float().cpu().numpy()
        rel = filters["input"](unfiltered[None])[0] if "input" in filters else unfiltered
        ledger.end = float(np.asarray(rel, dtype=np.float64).sum())
        return self.explanation_of(rel, unfiltered, filters, ledger,
                                   tiling={"window": list(self.window), "overlap": self.overlap, "blend": self.blend,
                                           "windows": n})

    def layer_relevance_sums(self, layer: str, filters: dict, progress=None, region=None) -> dict[str, np.ndarray]:
        """Per channel of a layer, the sums over every window of its relevance (and of its activation inside and
        outside a region); one pass per window.

        Parameters
        ----------
        layer : str
            A module name.
        filters : dict
            The run's filters ('input' and 'output' do not apply).
        progress : callable(done, total), optional
            Called per window.
        region : torch.Tensor, optional
            (1, 1, Z, Y, X) the target region on the model grid: the layer's activations are also summed inside
            (the window's region area-averaged to the layer's voxels, at least half inside) and outside it.

        Returns
        -------
        dict[str, numpy.ndarray]
            'relevance', 'positive', 'negative', 'magnitude': (C',) float64; with a region also 'activation_in',
            'activation_out' (sums) and 'voxels_in', 'voxels_out' (layer voxels counted, over every window).
        """
        layer_filters = {k: v for k, v in filters.items() if k not in ("input", "output")}
        sums = None
        for i, n, sl, prop, Ri in self._windows():
            act = prop.outputs.get(layer) if region is not None else None  # before the pass lets go of them
            R = prop.propagate(Ri, filters=layer_filters, keep=[layer], retain=False).kept.get(layer)
            if R is not None:
                R = R[0].double().reshape(R.shape[1], -1)
                part = {"relevance": R.sum(1), "positive": R.clamp(min=0).sum(1), "negative": R.clamp(max=0).sum(1),
                        "magnitude": R.abs().sum(1)}
                if act is not None:
                    part.update(_activation_sums(act[0].detach().double(), region[sl].to(act.device)))
                sums = part if sums is None else {k: sums[k] + v for k, v in part.items()}
            prop.release()
            if progress is not None:
                progress(i + 1, n)
        if sums is None:
            raise ValueError(f"no relevance reaches {layer!r} in any window")
        return {k: v.cpu().numpy() for k, v in sums.items()}

    def conditional_of(self, conditions: list, filters: dict, progress=None) -> np.ndarray:
        """The conditional relevance on the case grid, every window re-run.

        In every window the run's relevance at the first layer of ``conditions`` is masked and propagated from
        there down (``Propagation.propagate_from``), added up and mapped to the case.

        Parameters
        ----------
        conditions : list of (str, torch.Tensor)
            [(layer, channel mask)] from the latest layer to the earliest.
        filters : dict
            The run's filters.
        progress : callable(done, total), optional
            Called per window.

        Returns
        -------
        numpy.ndarray
            (C, Z, Y, X).
        """
        prep, x = self.prepared, self.prepared.x
        layer_filters = {k: v for k, v in filters.items() if k not in ("input", "output")}
        total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        first = conditions[0][0]
        for i, n, sl, prop, Ri in self._windows():
            R = prop.propagate(Ri, filters=layer_filters, keep=[first]).kept.get(first)
            if R is not None:
                total[sl] += prop.propagate_from(conditions, R, filters=layer_filters).relevance.double()
            prop.release()
            if progress is not None:
                progress(i + 1, n)
        out = prep.relevance_to_case(total)[0].float().cpu().numpy()
        return filters["input"](out[None])[0] if "input" in filters else out


def tiled_prediction(network, x: torch.Tensor, window, overlap: float, blend: str, output_index=None,
                     progress: Callable[[int, int], None] | None = None,
                     shapes: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The blended sliding-window prediction of a network over an input.

    Parameters
    ----------
    network : torch.nn.Module
        The network.
    x : torch.Tensor
        (1, C, Z, Y, X) model-grid input.
    window : tuple of int
        (Z, Y, X).
    overlap : float
        In [0, 1).
    blend : str
        A name of :data:`BLENDS`.
    output_index : int or str, optional
        The segmentation output of a network with several.
    progress : callable(done, total), optional
        Called per window.
    shapes : dict, optional
        Filled with {module name: output shape} of the first window.

    Returns
    -------
    tuple
        (prediction (1, K, Z, Y, X) float64, the sum of the blend weights (Z, Y, X)).
    """
    shape = tuple(x.shape[2:])
    wins = windows(shape, window, overlap, blend)
    num = den = None
    with torch.no_grad(), onednn_convolutions():
        for i, win in enumerate(wins):
            if i == 0 and shapes is not None:
                with record_shapes(network, shapes):
                    out = network(x[(slice(None), slice(None)) + win])
            else:
                out = network(x[(slice(None), slice(None)) + win])
            out = select_output(out, output_index, type(network).__name__)
            if num is None:
                num = torch.zeros(out.shape[:2] + shape, dtype=torch.float64, device=out.device)
                den = torch.zeros(shape, dtype=torch.float64, device=out.device)
            w = blend_weights(win, shape, blend, overlap).to(out.device)
            num[(slice(None), slice(None)) + win] += w * out.double()
            den[win] += w
            if progress is not None:
                progress(i + 1, len(wins))
    if bool((den == 0).any()):
        raise ValueError(f"blend {blend!r} leaves voxels without weight for window {tuple(window)} and overlap "
                         f"{overlap}")
    return num / den, den


def run_tiled(m: Model, case: Case, prep: PreparedInput, spec: RunSpec, window, overlap: float, blend: str,
              max_memory=None, progress: Callable[[int, int], None] | None = None) -> TiledRun | None:
    """The blended prediction over the windows and the start relevance of ``spec``'s target.

    Parameters
    ----------
    m, case, prep, spec : Model, Case, PreparedInput, RunSpec
        The model, the case, its model-grid input and the run's choices.
    window : (Z, Y, X) or "auto"
        Window size on the model grid; "auto": the largest that fits ``max_memory``.
    overlap : float
        In [0, 1).
    blend : str
        A name of ``BLENDS``.
    max_memory : float, optional
        Budget in bytes for "auto".
    progress : callable(done, total), optional
        Called per window of the prediction.

    Returns
    -------
    TiledRun or None
        None when ``window="auto"`` finds that the whole volume fits the budget (run it whole).
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), not {overlap!r}")
    x = prep.x
    divisible = int(getattr(m.card.input, "divisible", 1) or 1)
    if isinstance(window, str):
        if window != "auto":
            raise ValueError(f"window must be (Z, Y, X), 'auto' or None, not {window!r}")
        limit = budget(max_memory, auto=True, device=x.device)
        window = auto_window(prep.network, x, divisible, limit, spec, prep.bounds)
        if window is None:
            return None
    window = tuple(int(v) for v in window)
    if len(window) != 3 or min(window) < 1:
        raise ValueError(f"window must be three positive sizes (Z, Y, X), not {window!r}")
    n = len(windows(tuple(x.shape[2:]), window, overlap, blend))
    if n > MAX_WINDOWS:
        raise ValueError(f"window {window} with overlap {overlap} takes {n:,} windows over the model grid "
                         f"{tuple(x.shape[2:])} (more than {MAX_WINDOWS:,}, each a forward and a relevance pass); "
                         "choose a larger window or a smaller overlap")
    shapes: dict = {}  # the layers' output shapes in one window
    blended, den = tiled_prediction(prep.network, x, window, overlap, blend, spec.output_index, progress, shapes)
    logits = prep.outputs_to_case(blended).float()
    m.check_outputs(int(logits.shape[1]))
    prediction, mask = target_of(logits, m.card.output_activation, spec.target, spec.target_class,
                                 lambda: m.card.class_ground_truth(case, spec.target_class), case.name,
                                 prep.label_on_case(blended))
    start_case = start_relevance(logits, mask, spec.target_class, getattr(spec.target, "against", None))
    start, outside = prep.start_to_model(start_case, blended)
    return TiledRun(prepared=prep, case=case, model=m, spec=spec, window=window, overlap=float(overlap),
                    blend=blend, logits=logits[0].cpu().numpy(), prediction=prediction, start=start,
                    blended=blended, denominator=den, shapes=shapes,
                    start_total=float(start_case.sum(dtype=torch.float64)), outside=outside)


#: the overlap of windows the run chooses itself (window="auto" or the memory plan): little recomputation
AUTO_OVERLAP = 0.125

#: whole-volume runs above this many model-grid voxels are planned (memory estimated) before they start
PLAN_VOXELS = 2**22


def memory_plan(m: Model, case: Case, prep: PreparedInput, spec: RunSpec, max_memory) -> tuple | None:
    """The memory plan of a whole-volume run, its peak estimated from a small probe's activation sizes.

    Over the budget the run is tiled with the largest window that fits, with a warning naming the
    estimate, the budget and the window.

    Parameters
    ----------
    m : Model
        The model (its card's divisibility).
    case : Case
        The case (named in the warning).
    prep : PreparedInput
        The model-grid input.
    spec : RunSpec
        The run's choices (the rules change the kept tensors).
    max_memory : float or None
        Budget in bytes; None: half the free memory.

    Returns
    -------
    tuple of int or None
        The window (Z, Y, X); None when the whole volume fits.
    """
    limit = budget(max_memory, device=prep.x.device)
    divisible = int(getattr(m.card.input, "divisible", 1) or 1)
    per = _bytes_per_voxel(prep.network, prep.x, divisible, spec, prep.bounds)
    need = per * prep.x[0, 0].numel()
    if need <= limit:
        return None
    window = auto_window(prep.network, prep.x, divisible, limit, spec, prep.bounds, per_voxel=per)
    warnings.warn(f"{case.name}: a whole-volume LRP run needs about {need / 2**30:.1f} GiB, over the budget of "
                  f"{limit / 2**30:.1f} GiB (max_memory= or half the free memory on {prep.x.device}); tiling with "
                  f"window {window} (pass window= to choose, or a larger max_memory)", stacklevel=3)
    return window
