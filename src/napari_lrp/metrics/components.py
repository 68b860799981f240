"""Lesions one by one: connected components of a segmentation, and the targets researchers ask about.

Components are 26-connected (voxels sharing a face, an edge or a corner: ``scipy.ndimage.label`` with a
3x3x3 structure, as lesion-wise BraTS and ISLES metrics count lesions) and numbered 1, 2, ... from the
largest (ties by the first voxel in Z, Y, X order). A target spec names what is explained:

* ``class:NAME`` / ``region:NAME`` (or an index): the predicted voxels of that class;
* ``component:K``: the K-th predicted lesion of the target class; ``gt-component:K``: the K-th lesion of
  the ground truth;
* ``false-negative`` (ground truth not predicted: why was this missed) and ``false-positive`` (predicted,
  not in the ground truth), or ``false-negative:K`` / ``false-positive:K`` for one component of them;
* ``border:MM``: the voxels within MM millimetres of the predicted region's surface, on both sides: the
  distance (mm, the case's voxel spacing) from a voxel's centre, along the straight line to the nearest voxel
  centre on the other side, to where that line enters the other voxel (the surface between them) is at most
  MM; a voxel next to the surface is half a voxel from it;
* ``contrast:A-B``: evidence for class A rather than B over A's predicted region: the start relevance is
  y_A - y_B there (so the map is the A map minus the B map over the same voxels, LRP being linear in its
  start relevance).

The start relevance of every region target is the target class's logit over the region's voxels (other
voxels and classes 0), as for the predicted region. An empty region is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ..lrp.targets import RegionTarget

__all__ = ["CONNECTIVITY", "border_band", "components_table", "label_components", "resolve_target",
           "TARGET_KINDS"]

#: the neighbourhood of a voxel in a component (26: faces, edges and corners)
CONNECTIVITY = 26
TARGET_KINDS = ("class", "region", "component", "gt-component", "false-negative", "false-positive", "border",
                "contrast")


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 26-connected components of a mask, numbered from the largest.

    Parameters
    ----------
    mask : numpy.ndarray
        (Z, Y, X) bool.

    Returns
    -------
    tuple
        (labels (Z, Y, X) int32 numbered 1..count from the largest (ties: the component whose first voxel
        comes first in Z, Y, X order), count).
    """
    from scipy import ndimage

    raw, n = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return raw.astype(np.int32), 0
    sizes = np.bincount(raw.ravel())[1:]
    flat = raw.ravel()
    first = np.full(n, flat.size, dtype=np.int64)
    nz = np.flatnonzero(flat)
    np.minimum.at(first, flat[nz] - 1, nz)
    order = np.lexsort((first, -sizes))  # largest first, then by first voxel
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[order + 1] = np.arange(1, n + 1, dtype=np.int32)
    return relabel[raw], int(n)


def border_band(mask: np.ndarray, spacing: Sequence[float], width_mm: float) -> np.ndarray:
    """The voxels within a distance in mm of the surface of a mask (both sides).

    A voxel's distance to the surface: along the line from its centre to the nearest voxel centre on the other
    side (Euclidean, mm), the length up to where the line enters that voxel (exact for a surface between voxels
    along an axis: half a voxel for a neighbour, one and a half for the next).

    Parameters
    ----------
    mask : numpy.ndarray
        (Z, Y, X) bool.
    spacing : sequence of float
        Voxel size in mm (Z, Y, X).
    width_mm : float
        The band's half width in mm.

    Returns
    -------
    numpy.ndarray
        (Z, Y, X) bool.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape, dtype=bool)
    step = np.asarray([float(v) for v in spacing], dtype=np.float64).reshape(3, 1, 1, 1)
    _d_in, near_out = ndimage.distance_transform_edt(mask, sampling=step.ravel(), return_indices=True)
    _d_out, near_in = ndimage.distance_transform_edt(~mask, sampling=step.ravel(), return_indices=True)
    nearest = np.where(mask[None], near_out, near_in)  # (3, Z, Y, X): the nearest voxel on the other side
    offset = np.abs(nearest - np.indices(mask.shape)) * step  # mm per axis to its centre
    length = np.sqrt((offset ** 2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):  # axes the line does not move along: no constraint
        enter = np.where(offset > 0, 1.0 - (step / 2.0) / offset, -np.inf).max(axis=0)
    return enter * length <= float(width_mm)


def _centre_mm(grid, index_mean: np.ndarray) -> np.ndarray:
    return grid.napari_to_world(index_mean) if grid is not None else index_mean


def components_table(prediction: np.ndarray, truth: np.ndarray | None, spacing: Sequence[float],
                     grid=None) -> pd.DataFrame:
    """One row per lesion of the prediction and of the ground truth.

    Parameters
    ----------
    prediction, truth : ndarray of bool, (Z, Y, X)
        The predicted region of the class and the ground-truth region (None: no label).
    spacing : sequence of float
        Voxel size in mm (Z, Y, X).
    grid : Grid, optional
        The case grid; centres are then world positions (RAS+ mm), else voxel indices.

    Returns
    -------
    DataFrame
        columns: source ('prediction' | 'ground truth'), component (K of the target specs), voxels,
        volume_ml, centre_r/a/s (mm, RAS+; voxel index Z/Y/X without a grid), dice (of the component with the
        lesions of the other side it overlaps; NaN without a label), status ('detected' / 'missed' for
        ground-truth lesions, 'true positive' / 'false positive' for predicted ones; '' without a label).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    sides = [("prediction", np.asarray(prediction, bool), None if truth is None else np.asarray(truth, bool))]
    if truth is not None:
        sides.append(("ground truth", np.asarray(truth, bool), np.asarray(prediction, bool)))
    for source, mask, other in sides:
        labels, n = label_components(mask)
        other_labels = label_components(other)[0] if other is not None else None
        for k in range(1, n + 1):
            comp = labels == k
            idx = np.argwhere(comp)
            centre = _centre_mm(grid, idx.mean(axis=0))
            row = {"source": source, "component": k, "voxels": int(comp.sum()),
                   "volume_ml": float(comp.sum()) * voxel_ml, "dice": float("nan"), "status": ""}
            row.update(dict(zip(("centre_r", "centre_a", "centre_s") if grid is not None else
                                ("centre_z", "centre_y", "centre_x"), (float(v) for v in centre))))
            if other is not None:
                touched = np.unique(other_labels[comp])
                touched = touched[touched > 0]
                partner = np.isin(other_labels, touched)
                inter = float((comp & partner).sum())
                row["dice"] = 2 * inter / float(comp.sum() + partner.sum())
                hit = touched.size > 0
                row["status"] = ("true positive" if hit else "false positive") if source == "prediction" else \
                    ("detected" if hit else "missed")
            rows.append(row)
    return pd.DataFrame(rows)


def _class_index(name: str, classes: Sequence[str], spec: str) -> int:
    if name.strip().isdigit() and int(name) < len(classes):
        return int(name)
    for i, c in enumerate(classes):
        if c.lower() == name.strip().lower():
            return i
    raise ValueError(f"target {spec!r}: the model has no class {name!r} (classes: {', '.join(classes)})")


def _nonempty(region: Callable[[np.ndarray], np.ndarray], spec: str, what: str) -> Callable:
    def resolved(prediction: np.ndarray) -> np.ndarray:
        mask = np.asarray(region(prediction), dtype=bool)
        if not mask.any():
            raise ValueError(f"target {spec!r}: {what} is empty in this case, so there is nothing to explain")
        return mask
    return resolved


def _component(mask: np.ndarray, k: int, spec: str, what: str) -> np.ndarray:
    labels, n = label_components(mask)
    if not 1 <= k <= n:
        raise ValueError(f"target {spec!r}: {what} has {n} component(s) ({CONNECTIVITY}-connected, numbered "
                         f"from the largest); choose one of 1..{n}")
    return labels == k


def resolve_target(target, classes: Sequence[str], target_class: int, truth: Callable[[], np.ndarray | None],
                   spacing: Sequence[float]):
    """(target, target class) for :func:`napari_lrp.explain`: a spec of :data:`TARGET_KINDS` becomes a
    :class:`~napari_lrp.lrp.targets.RegionTarget` (its class, for 'class:'/'contrast:', the one it names);
    any other target is returned as it is.

    Parameters
    ----------
    target : str or other
        The target as given (see the module docstring for the specs).
    classes : sequence of str
        The model's class names (output channels).
    target_class : int
        The class explained unless the spec names one.
    truth : callable
        truth(class) gives the ground-truth region (Z, Y, X) bool of a class, or None; called only for the
        targets that need it.
    spacing : sequence of float
        Voxel size in mm (Z, Y, X).

    Returns
    -------
    tuple
        (the target: a ``RegionTarget`` for a spec, else as given; the class it explains).
    """
    if not isinstance(target, str) or ":" not in target and target not in ("false-negative", "false-positive"):
        return target, target_class
    kind, _, arg = target.partition(":")
    kind = kind.strip().lower()
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target {target!r}: use region, groundtruth, output, a mask, a voxel (z, y, x) "
                         f"or one of {', '.join(k + ':...' for k in TARGET_KINDS)}")
    cls = target_class

    def needs_truth(what: str) -> np.ndarray:
        t = truth(cls)
        if t is None:
            raise ValueError(f"target {target!r}: {what} needs a case with a ground-truth label")
        return np.asarray(t, dtype=bool)

    def index(text: str) -> int:
        if not text.strip().isdigit() or int(text) < 1:
            raise ValueError(f"target {target!r}: {text!r} is not a component number (1, 2, ...: the largest first)")
        return int(text)

    if kind in ("class", "region"):
        cls = _class_index(arg, classes, target)
        region = (lambda p, c=cls: p == c)
        what = f"the predicted region of {classes[cls]}"
    elif kind == "component":
        k = index(arg)
        region = (lambda p: _component(p == cls, k, target, "the prediction"))
        what = f"predicted lesion {k}"
    elif kind == "gt-component":
        k = index(arg)
        region = (lambda p: _component(needs_truth("a ground-truth lesion"), k, target, "the ground truth"))
        what = f"ground-truth lesion {k}"
    elif kind in ("false-negative", "false-positive"):
        def errors(p, fn=kind == "false-negative"):
            t = needs_truth(kind)
            return t & (p != cls) if fn else (p == cls) & ~t
        if arg:
            k = index(arg)
            region = (lambda p: _component(errors(p), k, target, f"the {kind} region"))
        else:
            region = errors
        what = f"the {kind} region" + (f" component {arg}" if arg else "")
    elif kind == "border":
        try:
            width = float(arg)
        except ValueError:
            width = float("nan")
        if not np.isfinite(width) or width <= 0:
            raise ValueError(f"target {target!r}: the band's width is millimetres above 0 (e.g. border:2)")
        region = (lambda p: border_band(p == cls, spacing, width))
        what = f"the {width:g} mm band around the predicted region"
    else:  # contrast:A-B
        names = arg.split("-")
        pairs = [("-".join(names[:i]), "-".join(names[i:])) for i in range(1, len(names))]
        found = []
        for a, b in pairs:
            try:
                found.append((_class_index(a, classes, target), _class_index(b, classes, target)))
            except ValueError:
                continue
        if len(found) != 1 or found[0][0] == found[0][1]:
            raise ValueError(f"target {target!r}: contrast:A-B names two different classes of {', '.join(classes)}")
        cls, against = found[0]
        return RegionTarget(target, _nonempty(lambda p, c=cls: p == c, target,
                                              f"the predicted region of {classes[cls]}"), against), cls
    return RegionTarget(target, _nonempty(region, target, what)), cls
