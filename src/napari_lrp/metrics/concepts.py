"""Concept relevance (CRP, Achtibat et al., Nature Machine Intelligence 2023) for 3D segmentation: which
channels of a layer carry the evidence for the run's target, and where each one's evidence lies.

* :func:`channel_relevance`: the relevance arriving at a layer's output split by channel (sum, positive and
  negative parts, share of the layer's total), with the channel's mean activation inside and outside the
  target region; read from the run's kept relevance (one backward pass gives every channel of every kept
  layer; a layer not kept costs one backward pass, no forward pass).
* :func:`conditional_relevance`: the relevance on the case grid with only some channels' relevance passed at a
  layer (or at several layers, from the output down, as zennit-crp's condition sets), propagated from that
  layer down only (relevance bypassing it is not included: zennit-crp's ``exclude_parallel``); computed from
  the kept forward pass. For a layer every path from the output to the input crosses (e.g. the first encoder
  block, the last decoder block), the conditional maps of all its channels add up to the full map.
* :func:`concept_measures`: the inclusivity coefficients and mean power of each channel's conditional map, to
  sort channels by what they look at (lesion or anatomy).

Tiled runs and models with their own pipeline (nnU-Net folders, bundles) keep no forward pass: their channel
relevance and conditional maps re-run the windows (one forward and relevance pass per window; a tiled run's
mean activations are over every window's layer voxels inside and outside the target), and the maps come back
on the case grid. Sampled runs and other methods are refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..lrp.names import expand, is_glob
from .table import measure

__all__ = ["channel_relevance", "channel_table", "concept_measures", "conditional_relevance", "layer_conditions"]


def _propagation(exp):
    prop = exp.kept_pass
    if prop is None or exp.method != "lrp":
        raise ValueError("concept relevance needs a single LRP run with its forward pass kept (not a tiled or "
                         "sampled run, another method, or a model with its own pipeline such as an nnU-Net folder)")
    return prop


def _layer_relevance(exp, layer: str) -> torch.Tensor:
    """The run's relevance at ``layer``'s output (1, C', ...): kept, or one backward pass with its filters."""
    if layer in exp.kept:
        return exp.kept[layer]
    prop = _propagation(exp)
    res = prop.propagate(exp.model_start, filters={k: v for k, v in exp.filters.items() if k != "input"},
                         keep=[layer])
    if layer not in res.kept:
        raise ValueError(f"no relevance reaches {layer!r} (it is not on the relevance path)")
    return res.kept[layer]


def _region_on(exp, shape) -> np.ndarray | None:
    """The target region (case grid) on a layer's spatial grid: the model grid's region, area-averaged to the
    layer's voxels, at least half inside."""
    region = exp.target_region()
    if region is None:
        return None
    prep = exp.prepared_input
    m = prep.pad(torch.as_tensor(np.ascontiguousarray(region), dtype=torch.float64)[None, None])
    return region_on_layer(m, shape).cpu().numpy()


def region_on_layer(region: torch.Tensor, shape) -> torch.Tensor:
    """A region on the model grid (1, 1, Z, Y, X) on a layer's spatial grid: area-averaged to the layer's
    voxels, a voxel inside when at least half of it is.

    Parameters
    ----------
    region : torch.Tensor
        (1, 1, Z, Y, X) float, 1 inside.
    shape : sequence of int
        The layer's spatial shape (z, y, x).

    Returns
    -------
    torch.Tensor
        (z, y, x) bool.
    """
    return F.adaptive_avg_pool3d(region, tuple(int(s) for s in shape))[0, 0] >= 0.5


def channel_relevance(exp, layer: str) -> pd.DataFrame:
    """Per channel of ``layer``: the relevance at its output for the run's target.

    Parameters
    ----------
    exp : Explanation
        A single LRP run.
    layer : str
        A module name (``exp.layer_shapes``).

    Returns
    -------
    DataFrame
        channel, relevance (sum over the channel's voxels), positive, negative (the sums of its positive and
        negative parts), share (relevance / the layer's total), abs_share (sum |R| of the channel / sum |R| of
        the layer: zennit-crp's ``abs_norm``), activation_in / activation_out (the channel's mean output
        activation over the layer voxels inside / outside the target region; NaN for the 'output' target),
        sorted by channel.
    """
    prop = _propagation(exp)
    R = _layer_relevance(exp, layer)[0].double()
    flat = R.reshape(R.shape[0], -1)
    total, total_abs = float(flat.sum()), float(flat.abs().sum())
    act = prop.outputs[layer][0].detach().double().reshape(R.shape[0], -1) if layer in prop.outputs else None
    inside = _region_on(exp, R.shape[1:])
    rows = []
    for c in range(R.shape[0]):
        r = flat[c]
        row = {"channel": c, "relevance": float(r.sum()), "positive": float(r.clamp(min=0).sum()),
               "negative": float(r.clamp(max=0).sum()),
               "share": float(r.sum()) / total if total else float("nan"),
               "abs_share": float(r.abs().sum()) / total_abs if total_abs else float("nan"),
               "activation_in": float("nan"), "activation_out": float("nan")}
        if act is not None and inside is not None:
            a = act[c].cpu().numpy()
            m = inside.ravel()
            row["activation_in"] = float(a[m].mean()) if m.any() else float("nan")
            row["activation_out"] = float(a[~m].mean()) if (~m).any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def layer_conditions(order: list[str], channels_of: dict[str, int], layer, channels=None) -> list:
    """[(layer, channel mask (C',) bool)] from the latest layer in forward order to the earliest.

    Parameters
    ----------
    order : list of str
        The network's layers in forward order.
    channels_of : dict
        {layer: number of output channels} of the layers a condition may name.
    layer : str or dict
        A module name, a glob, or {layer or glob: channels}.
    channels : int, sequence of int or None
        The channels passed when ``layer`` is a name or glob (None: all).

    Returns
    -------
    list of (str, torch.Tensor)
        (layer, channel mask (C',) bool), from the latest layer in forward order to the earliest.
    """
    spec = dict(layer) if isinstance(layer, dict) else {layer: channels}
    found: dict[str, object] = {}
    for key, chans in spec.items():
        names = sorted(expand([key], order)) if is_glob(key) else [key]
        names = [n for n in names if n in channels_of]
        if not names:
            raise ValueError(f"{key!r} names no layer of this run with an output (layers: "
                             f"{', '.join(list(channels_of)[:10])} ...)")
        for n in names:
            found[n] = chans
    out = []
    for name in sorted(found, key=order.index, reverse=True):
        n_ch = int(channels_of[name])
        chans = found[name]
        mask = torch.zeros(n_ch, dtype=torch.bool)
        picked = range(n_ch) if chans is None else [chans] if isinstance(chans, (int, np.integer)) else list(chans)
        for c in picked:
            if not 0 <= int(c) < n_ch:
                raise ValueError(f"{name} has {n_ch} channels; channel {c} does not exist")
            mask[int(c)] = True
        out.append((name, mask))
    return out


def _conditions(exp, layer, channels) -> list[tuple[str, torch.Tensor]]:
    prop = _propagation(exp)
    return layer_conditions(list(prop.called), {n: int(t.shape[1]) for n, t in prop.outputs.items()}, layer,
                            channels)


def channel_table(sums: dict[str, np.ndarray]) -> pd.DataFrame:
    """The table of :func:`channel_relevance` from per-channel sums (a tiled run's, over its windows).

    Parameters
    ----------
    sums : dict[str, numpy.ndarray]
        'relevance', 'positive', 'negative', 'magnitude': (C',) sums over the layer's voxels; optionally
        'activation_in', 'activation_out' (activation sums inside / outside the target region) and 'voxels_in',
        'voxels_out' (how many layer voxels they summed).

    Returns
    -------
    pandas.DataFrame
        As :func:`channel_relevance`; the mean activations are NaN without the sums (or with no voxel inside or
        outside).
    """
    rel, mag = np.asarray(sums["relevance"]), np.asarray(sums["magnitude"])
    total, total_abs = float(rel.sum()), float(mag.sum())
    means = {}
    for where in ("in", "out"):
        act, count = sums.get(f"activation_{where}"), sums.get(f"voxels_{where}")
        means[where] = np.nan if act is None else np.divide(np.asarray(act, dtype=np.float64),
                                                           np.asarray(count, dtype=np.float64),
                                                           out=np.full(rel.size, np.nan),
                                                           where=np.asarray(count) > 0)
    return pd.DataFrame({"channel": np.arange(rel.size), "relevance": rel, "positive": sums["positive"],
                         "negative": sums["negative"], "share": rel / total if total else np.nan,
                         "abs_share": mag / total_abs if total_abs else np.nan,
                         "activation_in": means["in"], "activation_out": means["out"]})


def conditional_relevance(exp, layer, channels=None, progress=None) -> np.ndarray:
    """The relevance (C, Z, Y, X) float32 on the case grid with only ``channels`` of ``layer`` passed.

    Parameters
    ----------
    exp : Explanation
        A single LRP run.
    layer : str or dict
        A module name, a glob (every layer it matches takes ``channels``), or ``{layer or glob: channels}`` for a
        condition set over several layers (masked one after the other from the output down).
    channels : int, sequence of int or None
        The channels passed (None: all of them).
    progress : callable, optional
        progress(done, total), as for a run.

    Returns
    -------
    ndarray
        float32 (C, Z, Y, X), channels in the model's order; the run's layer filters act below the layer and
        its 'input' filter on the result, as in a whole run.
    """
    prop = _propagation(exp)
    conditions = _conditions(exp, layer, channels)
    start = _layer_relevance(exp, conditions[0][0])
    res = prop.propagate_from(conditions, start, filters={k: v for k, v in exp.filters.items() if k != "output"},
                              progress=progress)
    return np.ascontiguousarray(exp.prepared_input.crop(res.relevance)[0].float().cpu().numpy())


def concept_measures(exp, layer: str, channels=None, tau_r: float = 0.5, tau_x: float = 0.1) -> pd.DataFrame:
    """The coefficients of each channel's conditional map at one layer, one row each.

    Parameters
    ----------
    exp : Explanation
        The run.
    layer : str
        A module name.
    channels : sequence of int, optional
        Default every channel of the layer.
    tau_r, tau_x : float
        The inclusivities' thresholds.

    Returns
    -------
    pandas.DataFrame
        The 'mean' row of :func:`napari_lrp.metrics.measure` per channel: input and ground-truth inclusivity,
        mu, mean power.
    """
    shape = exp.layer_shapes.get(layer)
    n = int(shape[1]) if shape is not None and len(shape) == 5 else 0
    rows = []
    for c in (range(n) if channels is None else channels):
        rel = exp.conditional(layer, int(c))
        t = measure(rel, exp.input_image, exp.case.ground_truth, exp.modalities, tau_r, tau_x)
        row = t[t.channel == "mean"].iloc[0].to_dict() if "channel" in t else t.iloc[-1].to_dict()
        row["channel"] = int(c)
        rows.append(row)
    return pd.DataFrame(rows)
