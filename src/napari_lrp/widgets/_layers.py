"""Putting cases and explanations into napari layers (main thread only); shared by the widgets and ``nl.show``.

Every layer napari-lrp adds carries two metadata keys: ``napari_lrp_role`` (image, label, prediction,
relevance, inspector) and ``napari_lrp_case`` (the case it belongs to, :func:`case_key`). The viewer shows
one case: layers of another case (and the prediction and relevance made from it) are removed when a case is
shown, also when a second case arrives through File > Open Sample or a drop. Layer kinds are checked with
``isinstance``, so napari's public proxy of the viewer (what the Plugins menu hands a widget) behaves as the
viewer itself. Every layer has the same units (mm).
"""

from __future__ import annotations

import re

import numpy as np

from ..layerdata import (
    ABS_NAME,
    CASE,
    CASE_ROLES,
    CONCEPT_NAME,
    DERIVED_ROLES,
    ERROR_LAYERS,
    PREDICTION_NAME,
    ROLE,
    SUM_NAME,
    UNCERTAINTY_LAYERS,
    case_layer_data,
    comparison_name,
    relevance_name,
)
from ..pipeline.attribution import METHODS
from ._overlays import OBLIQUE_ANGLES, apply_orientation, show_colour_bar, watch_colour_bars
from ._session import case_key, session_for

UNITS = ("mm", "mm", "mm")
#: the unit of each spread layer of a sampled run (the layers: ``layerdata.UNCERTAINTY_LAYERS``)
UNCERTAINTY_UNITS = {"R sd (sum)": "logit", "predictive entropy": "nats", "mutual information": "nats"}


def method_unit(method: str) -> str:
    """The unit of a method's map ('logit' for LRP, the registry's ``Method.unit`` otherwise)."""
    return METHODS[method].unit if method in METHODS else "logit"


def relevance_colormap():
    """Diverging blue-white-red whose middle (R = 0 under symmetric limits) is transparent, so the
    anatomy stays visible under the overlay; opacity grows with |R|."""
    from napari.utils.colormaps import Colormap

    colors = np.array([[0.0, 0.0, 1.0, 1.0], [0.35, 0.45, 1.0, 0.75], [1.0, 1.0, 1.0, 0.0],
                       [1.0, 0.4, 0.35, 0.75], [1.0, 0.0, 0.0, 1.0]])
    return Colormap(colors=colors, controls=[0.0, 0.3, 0.5, 0.7, 1.0], name="lrp bwr")


#: the ground truth's outline in voxels: thin, so a small lesion's relevance stays visible (0 fills it)
GROUND_TRUTH_CONTOUR = 1


def is_outlined(layer) -> bool:
    """Whether :func:`outline` has drawn the Labels layer (its direct colour map; napari's default is cyclic),
    whatever contour the user has set since."""
    from napari.utils.colormaps import DirectLabelColormap

    return isinstance(layer.colormap, DirectLabelColormap)


def outline(layer, color: str, thickness: int = 1) -> None:
    """Show a binary Labels layer as a coloured outline ``thickness`` voxels wide, so the relevance underneath
    stays visible (the ground truth is drawn one voxel wide above the prediction's; where they coincide, the
    ground truth's colour shows; napari's contour control sets 0 to fill it)."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.contour = thickness
    layer.colormap = DirectLabelColormap(color_dict={None: color, 0: "transparent"})


#: the default colour limit: this percentile of |R| over non-zero voxels (the sample's lesion keeps its
#: structure; 99.5 saturated it into a uniform disk)
DEFAULT_PERCENTILE = 99.9


def symmetric_limit(R: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """Half-width of symmetric contrast limits: the given percentile of |R| over non-zero voxels."""
    a = np.abs(R[R != 0])
    if a.size == 0:
        return 1.0
    k = min(int(round(percentile / 100 * (a.size - 1))), a.size - 1)
    m = float(np.partition(a, k)[k])  # nearest rank, in linear time
    return m if m > 0 else float(a.max())


def is_kind(layer, kind: str) -> bool:
    from napari.layers import Image, Labels

    return isinstance(layer, Image if kind == "image" else Labels)


# ---- per-viewer deferred updates of hidden layers ---------------------------------------------------
def _resolved(update: dict) -> dict:
    """Values given as callables (contrast limits) are computed only when the update is applied."""
    return {k: (v() if callable(v) else v) for k, v in update.items()}


def _apply_pending(viewer, layer) -> None:
    update = session_for(viewer).layers.pending.pop(id(layer), None)
    if update is not None:
        update = _resolved(update)
        layer.data = update.pop("data")
        for key, value in update.items():
            setattr(layer, key, value)


def _same_metadata(old, new) -> bool:
    return old.keys() == new.keys() and all(old[k] is new[k] or (type(old[k]) is type(new[k]) and
                                                                 not hasattr(new[k], "shape") and old[k] == new[k])
                                            for k in new)


def upsert(viewer, name: str, data: np.ndarray, kind: str, lazy: bool = False, **kwargs):
    """Update the layer ``name`` in place (same kind and shape) or add it; returns the layer.

    lazy=True defers the update of a hidden layer until it is shown (keeps the slider fast); keyword
    values may be callables, evaluated when the update is applied. New layers get mm units.
    """
    state = session_for(viewer).layers
    if name in viewer.layers:
        layer = viewer.layers[name]
        if is_kind(layer, kind) and layer.data.shape == data.shape:
            if lazy and id(layer) not in state.watched:
                state.watched.add(id(layer))
                layer.events.visible.connect(lambda e, ly=layer: _apply_pending(viewer, ly) if ly.visible else None)
            update = {"data": data, **{k: kwargs[k] for k in ("contrast_limits", "metadata") if k in kwargs}}
            if "metadata" in update and _same_metadata(layer.metadata, update["metadata"]):
                del update["metadata"]
            state.pending[id(layer)] = update
            if not (lazy and not layer.visible):
                _apply_pending(viewer, layer)
            return layer
        viewer.layers.remove(layer)
    add = viewer.add_image if kind == "image" else viewer.add_labels
    kwargs.setdefault("units", UNITS)
    return add(data, name=name, **_resolved(kwargs))


# ---- one case on screen -------------------------------------------------------------------------------
def case_key_on_screen(viewer) -> str | None:
    """The key of the case shown in the viewer (its newest modality layer's), or None when none is shown."""
    keys = [ly.metadata.get(CASE) for ly in viewer.layers if ly.metadata.get(ROLE) == "image"
            and "modality" in ly.metadata]
    return keys[-1] if keys else None


def _other_case_layers(viewer, key: str) -> list:
    return [ly for ly in viewer.layers if ly.metadata.get(ROLE) in CASE_ROLES + DERIVED_ROLES
            and ly.metadata.get(CASE) != key]


def _base_name(name: str) -> str:
    return re.sub(r" \[\d+\]$", "", name)


def keep_one_case(viewer) -> None:
    """After layers of a new case arrived (sample menu, drop, reader): remove the layers of every other
    case and what was computed from them, give the new layers their plain names, apply the orientation."""
    state = session_for(viewer).layers
    keys = [ly.metadata.get(CASE) for ly in viewer.layers if ly.metadata.get(ROLE) in CASE_ROLES]
    if not keys:
        return
    newest = keys[-1]
    for ly in _other_case_layers(viewer, newest):
        viewer.layers.remove(ly)
    for ly in viewer.layers:
        base = _base_name(ly.name)
        if ly.metadata.get(CASE) == newest and base != ly.name and base not in viewer.layers:
            ly.name = base
        if ly.metadata.get(ROLE) == "label" and not is_outlined(ly):  # once: the user may fill it after
            outline(ly, "cyan", GROUND_TRUTH_CONTOUR)
    if newest != state.case_key:
        state.case_key = newest
        state.drawn = None
        session_for(viewer).screen_case_changed(newest)
    apply_orientation(viewer)


def guard_one_case(viewer) -> None:
    """Watch the viewer's layer list (once): when case layers are inserted, keep only the newest case (and
    outline its ground truth) once the insertions are done (deferred to the event loop, after napari's own
    handlers)."""
    state = session_for(viewer).layers
    if state.guarded:
        return
    state.guarded = True
    watch_colour_bars(viewer)
    from qtpy.QtCore import QTimer

    def inserted(event):
        if event.value.metadata.get(ROLE) in CASE_ROLES:
            QTimer.singleShot(0, lambda: keep_one_case(viewer))

    viewer.layers.events.inserted.connect(inserted)


def show_case(viewer, case) -> list:
    """Show ``case`` as the one case: its modality Image layers and its ground truth (outlined); layers of
    any other case and the prediction and relevance made from them are removed."""
    key = case_key(case)
    state = session_for(viewer).layers
    for ly in _other_case_layers(viewer, key):
        viewer.layers.remove(ly)
    out = []
    for data, meta, kind in case_layer_data(case):
        name = meta["name"]
        if name in viewer.layers:
            layer = viewer.layers[name]
            if is_kind(layer, kind) and layer.data.shape == data.shape and layer.metadata.get(CASE) == key:
                out.append(layer)
                continue
            viewer.layers.remove(layer)
        layer = viewer.add_image(data, **meta) if kind == "image" else viewer.add_labels(data, **meta)
        if kind == "labels":
            outline(layer, "cyan", GROUND_TRUTH_CONTOUR)
        out.append(layer)
    if state.case_key != key:
        state.drawn = None
    state.case_key = key
    apply_orientation(viewer)
    return out


def _derived_meta(case, role: str, kw: dict | None = None, **extra) -> dict:
    kw = case.grid.layer_kwargs() if kw is None else kw
    return dict(kw["metadata"], **{ROLE: role, CASE: case_key(case)}, **extra)


def show_prediction(viewer, prediction: np.ndarray, case):
    kw = case.grid.layer_kwargs()
    new = PREDICTION_NAME not in viewer.layers
    layer = upsert(viewer, PREDICTION_NAME, prediction, "labels", scale=kw["scale"], translate=kw["translate"],
                    units=kw["units"], metadata=_derived_meta(case, "prediction", kw), opacity=0.9)
    if new or layer.contour != 1:
        outline(layer, "yellow")
    return layer


def _relevance_common(case) -> dict:
    kw = case.grid.layer_kwargs()
    return {"opacity": 0.7, "blending": "translucent", "colormap": relevance_colormap(), "scale": kw["scale"],
            "translate": kw["translate"], "units": kw["units"]}


def _main_relevance_layer(viewer):
    return next((ly for ly in viewer.layers if ly.metadata.get(ROLE) == "relevance"
                 and ly.metadata.get("relevance_main")), None)


def show_relevance(viewer, relevance: np.ndarray, modalities: list[str], case, lazy: bool = False,
                   percentile: float = DEFAULT_PERCENTILE) -> list:
    """The relevance as few layers: one 2D layer showing the channel sum or one modality (the viewer's
    ``LayerState.shown``; named 'R sum' or 'R <modality>'; bwr, symmetric limits at ``percentile`` of |R|,
    translucent, with its colour bar), one layer per modality only when asked for (``per_modality``), and |R|
    for 3D only once the 3D view was opened. lazy=True: hidden layers are updated when they are shown.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    relevance : numpy.ndarray
        (C, Z, Y, X), one channel per modality.
    modalities : list of str
        The channels' names.
    case : Case
        The case the relevance belongs to.
    lazy : bool
        Defer updates of hidden layers.
    percentile : float
        The colour limit's percentile of |R|.

    Returns
    -------
    list of napari.layers.Image
        The relevance layers now in the viewer.
    """
    state = session_for(viewer).layers
    state.drawn = (relevance, list(modalities), case, percentile)
    before = {ly.name for ly in viewer.layers}
    kw = case.grid.layer_kwargs()
    total = relevance.sum(axis=0)
    layers = []

    def limits(R):
        m = symmetric_limit(R, percentile)
        return (-m, m)

    for c, mod in enumerate(modalities if state.per_modality else ()):
        name = relevance_name(mod)
        meta = _derived_meta(case, "relevance", kw, relevance_of=mod, quantity=f"R {mod} [logit]")
        extra = {} if name in viewer.layers else {"visible": False, **_relevance_common(case)}
        layers.append(upsert(viewer, name, relevance[c], "image", lazy=lazy,
                             contrast_limits=lambda R=relevance[c]: limits(R), metadata=meta, **extra))
    shown = state.shown if state.shown in modalities and not state.per_modality else "sum"
    data = total if shown == "sum" else relevance[list(modalities).index(shown)]
    name = SUM_NAME if shown == "sum" else relevance_name(shown)
    main = _main_relevance_layer(viewer)
    if main is not None and main.name != name and name not in viewer.layers:
        main.name = name
    exists = name in viewer.layers
    meta = _derived_meta(case, "relevance", kw, relevance_of=shown, relevance_main=True, quantity=f"{name} [logit]")
    layer = upsert(viewer, name, data, "image", contrast_limits=limits(data), metadata=meta,
                   **({} if exists else _relevance_common(case)))
    layers.insert(0, layer)
    if ABS_NAME in viewer.layers or viewer.dims.ndisplay == 3:
        layers.append(show_relevance_3d(viewer, total, case, percentile, lazy))
    if any(ly.name not in before for ly in layers):
        outlines_on_top(viewer)
    if not exists:
        viewer.layers.selection.active = layer  # its controls (contrast, opacity) in the layer panel
    show_colour_bar(viewer)
    return layers


def show_relevance_3d(viewer, total: np.ndarray, case, percentile: float = DEFAULT_PERCENTILE, lazy: bool = False):
    """|R| of the channel sum as a maximum-intensity volume for the 3D view (magma, additive), added on the
    first visit to 3D and updated in place after.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    total : numpy.ndarray
        The channel sum of the relevance, (Z, Y, X).
    case : Case
        The case it belongs to.
    percentile : float
        The upper colour limit's percentile of |R|.
    lazy : bool
        Defer the update while the layer is hidden.

    Returns
    -------
    napari.layers.Image
    """
    kw = case.grid.layer_kwargs()
    exists = ABS_NAME in viewer.layers
    extra = {} if exists else {"visible": viewer.dims.ndisplay == 3, "blending": "additive", "colormap": "magma",
                               "rendering": "mip", "scale": kw["scale"], "translate": kw["translate"],
                               "units": kw["units"]}
    a = np.abs(total)
    meta = _derived_meta(case, "relevance", kw, relevance_of="abs sum", quantity="|R| sum [logit]")
    return upsert(viewer, ABS_NAME, a, "image", lazy=lazy, contrast_limits=lambda: (0, symmetric_limit(a, percentile)),
                  metadata=meta, **extra)


def show_relevance_as(viewer, shown: str | None = None, per_modality: bool | None = None) -> list:
    """Change what the relevance layers show (the dock's selector): ``shown`` 'sum' or a modality in the one 2D
    layer; ``per_modality`` adds (True) or removes (False) one layer per modality. Redraws the last relevance.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    shown : str, optional
        'sum' or a modality's name.
    per_modality : bool, optional
        One layer per modality as well.

    Returns
    -------
    list of napari.layers.Image
        The relevance layers now in the viewer (empty when nothing was drawn yet).
    """
    state = session_for(viewer).layers
    if shown is not None:
        state.shown = shown
    if per_modality is not None:
        state.per_modality = per_modality
    if not state.per_modality:
        for ly in [ly for ly in viewer.layers if ly.metadata.get(ROLE) == "relevance"
                   and not ly.metadata.get("relevance_main") and ly.name != ABS_NAME]:
            viewer.layers.remove(ly)
    drawn = _drawn_on_screen(state)
    if drawn is None:
        return []
    relevance, modalities, case, percentile = drawn
    return show_relevance(viewer, relevance, modalities, case, percentile=percentile)


def _drawn_on_screen(state):
    """The relevance last drawn (``LayerState.drawn``) when it belongs to the case on screen, else None."""
    drawn = state.drawn
    return drawn if drawn is not None and case_key(drawn[2]) == state.case_key else None


def show_uncertainty(viewer, explanation, relevance_sum_sd: np.ndarray | None = None) -> list:
    """The spread of a sampled run as layers with their own colour maps and colour bars: the sd over the
    draws of the summed relevance (``relevance_sum_sd``, default from the run's own filters), predictive
    entropy and mutual information (nats). A run without draws removes them (they would be stale)."""
    if explanation.relevance_std is None:
        for name in UNCERTAINTY_LAYERS:
            if name in viewer.layers:
                viewer.layers.remove(name)
        return []
    case = explanation.case
    kw = case.grid.layer_kwargs()
    if relevance_sum_sd is None:
        relevance_sum_sd = explanation.sample_heatmaps(None).sum(axis=1).std(axis=0)
    data = dict(zip(UNCERTAINTY_LAYERS, (relevance_sum_sd, explanation.predictive_entropy,
                                         explanation.mutual_information)))
    layers = []
    for name, cmap in UNCERTAINTY_LAYERS.items():
        d = np.asarray(data[name], dtype=np.float32)
        hi = float(np.percentile(d, DEFAULT_PERCENTILE)) if d.size else 0.0
        hi = hi if hi > 0 else float(d.max()) if d.size and d.max() > 0 else 1.0
        exists = name in viewer.layers
        extra = {} if exists else {"visible": False, "opacity": 0.8, "blending": "additive", "colormap": cmap,
                                   "scale": kw["scale"], "translate": kw["translate"], "units": kw["units"]}
        layer = upsert(viewer, name, d, "image", contrast_limits=(0.0, hi),
                        metadata=_derived_meta(case, "uncertainty", kw, uncertainty_of=name,
                                               quantity=f"{name} [{UNCERTAINTY_UNITS[name]}]"), **extra)
        layers.append(layer)
    outlines_on_top(viewer)
    show_colour_bar(viewer)
    return layers


def show_errors(viewer, exp) -> object | None:
    """The region of an error target (the voxels missed, or added) as an outline of its own colour, when the run
    explains one; any earlier error outline is removed otherwise.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    exp : Explanation
        The run just shown.

    Returns
    -------
    napari.layers.Labels or None
        The outline layer, or None when the run's target is no error region.
    """
    spec = str(getattr(exp.target, "name", exp.target) if not isinstance(exp.target, np.ndarray) else "mask")
    kind = spec.partition(":")[0]
    keep = ERROR_LAYERS[kind][0] if kind in ERROR_LAYERS else None
    for name, _colour in ERROR_LAYERS.values():
        if name != keep and name in viewer.layers:
            viewer.layers.remove(name)
    if keep is None:
        return None
    kw = exp.case.grid.layer_kwargs()
    region = exp.target_region().astype(np.uint8)
    layer = upsert(viewer, keep, region, "labels", scale=kw["scale"], translate=kw["translate"], units=kw["units"],
                   metadata=_derived_meta(exp.case, "errors", kw, target=spec), opacity=1.0)
    outline(layer, ERROR_LAYERS[kind][1], 2)
    outlines_on_top(viewer)
    return layer


def show_concept(viewer, exp, relevance: np.ndarray, what: str, percentile: float = DEFAULT_PERCENTILE):
    """The channel sum of a conditional heatmap (C, Z, Y, X) of ``exp`` as the layer 'R · concept', with the R
    layers' colour map and symmetric limits; ``what`` (layer and channels) is in its metadata and status."""
    kw = exp.case.grid.layer_kwargs()
    total = relevance.sum(axis=0)
    m = symmetric_limit(total, percentile)
    exists = CONCEPT_NAME in viewer.layers and viewer.layers[CONCEPT_NAME].data.shape == total.shape
    if CONCEPT_NAME in viewer.layers and not exists:
        viewer.layers.remove(CONCEPT_NAME)
    extra = {} if exists else {"opacity": 0.7, "blending": "translucent", "colormap": relevance_colormap(),
                               "scale": kw["scale"], "translate": kw["translate"], "units": kw["units"]}
    layer = upsert(viewer, CONCEPT_NAME, total, "image", contrast_limits=(-m, m),
                    metadata=_derived_meta(exp.case, "concept", kw, concept=what,
                                           quantity=f"conditional R, {what} [logit]"), **extra)
    layer.visible = True
    outlines_on_top(viewer)
    show_colour_bar(viewer)
    return layer


def show_comparison(viewer, results: dict, percentile: float = DEFAULT_PERCENTILE) -> list:
    """One layer per method ({spec: Explanation}): the channel sum of its map, named 'R sum · <spec>', with
    the R layers' colour map and symmetric limits at ``percentile`` of |R|; earlier comparison layers of
    methods not in ``results`` are removed."""
    names = {comparison_name(spec) for spec in results}
    for ly in [ly for ly in viewer.layers if ly.metadata.get(ROLE) == "comparison" and ly.name not in names]:
        viewer.layers.remove(ly)
    layers = []
    for spec, exp in results.items():
        kw = exp.case.grid.layer_kwargs()
        total = exp.relevance.sum(axis=0)
        m = symmetric_limit(total, percentile)
        name = comparison_name(spec)
        exists = name in viewer.layers
        extra = {} if exists else {"visible": False, "opacity": 0.7, "blending": "translucent",
                                   "colormap": relevance_colormap(), "scale": kw["scale"],
                                   "translate": kw["translate"], "units": kw["units"]}
        layer = upsert(viewer, name, total, "image", contrast_limits=(-m, m),
                        metadata=_derived_meta(exp.case, "comparison", kw, method=spec,
                                               quantity=f"{spec}, channel sum [{method_unit(exp.method)}]"),
                        **extra)
        layers.append(layer)
    if layers:
        layers[0].visible = True
        outlines_on_top(viewer)
    show_colour_bar(viewer)
    return layers


def outlines_on_top(viewer) -> None:
    """The prediction and ground-truth outlines above the relevance overlays, so both stay visible."""
    for role in ("prediction", "label", "errors"):
        for ly in [ly for ly in viewer.layers if ly.metadata.get(ROLE) == role]:
            viewer.layers.move(viewer.layers.index(ly), len(viewer.layers))


def show_explanation(viewer, explanation, relevance: np.ndarray | None = None, add_case: bool = True,
                     lazy: bool = False, with_relevance: bool = True, per_modality: bool | None = None) -> list:
    """The layers the widgets add: anatomy and ground truth, prediction, relevance (optionally filtered;
    lazy=True updates hidden relevance layers when they are shown; ``per_modality`` True adds one relevance
    layer per modality, False removes them, None keeps the viewer's choice)."""
    layers = show_case(viewer, explanation.case) if add_case else []
    if per_modality is not None:
        show_relevance_as(viewer, per_modality=per_modality)
    layers.append(show_prediction(viewer, explanation.model.card.label_map(explanation.prediction), explanation.case))
    if with_relevance:
        R = explanation.relevance if relevance is None else relevance
        layers += show_relevance(viewer, R, explanation.modalities, explanation.case, lazy=lazy)
    return layers


def show_3d(viewer, on: bool = True) -> None:
    """One step to a readable 3D view: |R| as a maximum-intensity volume, the anatomy faint, outlines and
    the 2D overlays hidden; ``on=False`` goes back to 2D."""
    if not on:
        viewer.dims.ndisplay = 2  # before the outlines' contours return (napari draws none in 3D)
    drawn = _drawn_on_screen(session_for(viewer).layers)
    if on and ABS_NAME not in viewer.layers and drawn is not None:
        relevance, _mods, case, percentile = drawn
        show_relevance_3d(viewer, relevance.sum(axis=0), case, percentile)
    for ly in viewer.layers:
        role = ly.metadata.get(ROLE)
        if ly.name == ABS_NAME:
            ly.visible = on
        elif role in ("label", "prediction"):
            ly.visible = not on
            ly.contour = 0 if on else (GROUND_TRUTH_CONTOUR if role == "label" else 1)  # napari: none in 3D
        elif role == "relevance" and ly.metadata.get("relevance_main"):
            ly.visible = not on
        elif role == "image" and ly is _first_image(viewer):
            ly.opacity = 0.25 if on else 1.0
            ly.visible = True
    if on:
        viewer.dims.ndisplay = 3
        viewer.camera.angles = OBLIQUE_ANGLES
    viewer.reset_view(reset_camera_angle=False)  # napari's default would undo the oblique preset
    show_colour_bar(viewer)


def _first_image(viewer):
    return next((ly for ly in viewer.layers if ly.metadata.get(ROLE) == "image"), None)
