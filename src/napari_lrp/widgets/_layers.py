"""Putting explanations into napari layers (main thread only); shared by the widgets and ``nl.show``."""

from __future__ import annotations

import numpy as np


def _relevance_colormap():
    """Diverging blue-white-red whose middle (R = 0 under symmetric limits) is transparent, so the
    anatomy stays visible under the overlay; opacity grows with |R|."""
    from napari.utils.colormaps import Colormap

    colors = np.array([[0.0, 0.0, 1.0, 1.0], [0.35, 0.45, 1.0, 0.75], [1.0, 1.0, 1.0, 0.0],
                       [1.0, 0.4, 0.35, 0.75], [1.0, 0.0, 0.0, 1.0]])
    return Colormap(colors=colors, controls=[0.0, 0.3, 0.5, 0.7, 1.0], name="lrp bwr")


def outline(layer, color: str) -> None:
    """Show a binary Labels layer as a coloured outline, so the relevance underneath stays visible."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.contour = 1
    layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})

SUM_NAME = "R sum"
ABS_NAME = "|R| sum (3D)"
PREDICTION_NAME = "prediction"


def relevance_name(modality: str) -> str:
    return f"R {modality}"


def symmetric_limit(R: np.ndarray) -> float:
    """Half-width of symmetric contrast limits: the 99.5th percentile of |R| over non-zero voxels."""
    a = np.abs(R[R != 0])
    if a.size == 0:
        return 1.0
    k = min(int(round(0.995 * (a.size - 1))), a.size - 1)
    m = float(np.partition(a, k)[k])  # the 99.5th percentile (nearest rank), in linear time
    return m if m > 0 else float(a.max())


def _symmetric(R: np.ndarray) -> tuple[float, float]:
    m = symmetric_limit(R)
    return (-m, m)


_PENDING: dict[int, dict] = {}
_WATCHED: set[int] = set()  # layers whose visibility applies their pending update


def _resolved(update: dict) -> dict:
    """Values given as callables (contrast limits) are computed only when the update is applied."""
    return {k: (v() if callable(v) else v) for k, v in update.items()}


def _apply_pending(layer) -> None:
    update = _PENDING.pop(id(layer), None)
    if update is not None:
        update = _resolved(update)
        layer.data = update.pop("data")
        for key, value in update.items():
            setattr(layer, key, value)


def _upsert(viewer, name: str, data: np.ndarray, kind: str, lazy: bool = False, **kwargs):
    """Update the layer ``name`` in place (same kind and shape) or add it; returns the layer.

    lazy=True defers the update of a hidden layer until it is shown (keeps the slider fast); keyword
    values may be callables, evaluated when the update is applied.
    """
    if name in viewer.layers:
        layer = viewer.layers[name]
        if type(layer).__name__.lower() == kind and layer.data.shape == data.shape:
            if lazy and id(layer) not in _WATCHED:
                _WATCHED.add(id(layer))
                layer.events.visible.connect(lambda e, ly=layer: _apply_pending(ly) if ly.visible else None)
            _PENDING[id(layer)] = {"data": data, **{k: kwargs[k] for k in ("contrast_limits", "metadata")
                                                    if k in kwargs}}
            if not (lazy and not layer.visible):
                _apply_pending(layer)
            return layer
        viewer.layers.remove(layer)
    add = viewer.add_image if kind == "image" else viewer.add_labels
    return add(data, name=name, **_resolved(kwargs))


def show_case(viewer, case) -> list:
    """Add the case's modality Image layers and its label (skipping layers that already hold it)."""
    from .._npe2 import case_layer_data

    out = []
    if not len(viewer.layers):
        viewer.camera.orientation2d = ("up", "right")  # anterior up, patient's right on the right
    for data, meta, kind in case_layer_data(case):
        name = meta["name"]
        if name in viewer.layers and viewer.layers[name].data.shape == data.shape:
            out.append(viewer.layers[name])
            continue
        layer = _upsert(viewer, name, data, kind, **{k: v for k, v in meta.items() if k != "name"})
        if kind == "labels":
            outline(layer, "cyan")
        out.append(layer)
    return out


def show_prediction(viewer, prediction: np.ndarray, case):
    kw = case.grid.layer_kwargs()
    new = PREDICTION_NAME not in viewer.layers
    layer = _upsert(viewer, PREDICTION_NAME, prediction, "labels", scale=kw["scale"], translate=kw["translate"],
                    units=kw["units"], metadata=kw["metadata"], opacity=0.9)
    if new:
        outline(layer, "yellow")
    return layer


def show_relevance(viewer, relevance: np.ndarray, modalities: list[str], case, lazy: bool = False) -> list:
    """One layer per modality plus the channel sum (bwr, symmetric limits, translucent) and |R| for 3D.

    lazy=True: hidden relevance layers are updated when they are shown (the heatmap slider uses it).
    """
    kw = case.grid.layer_kwargs()
    common = {"scale": kw["scale"], "translate": kw["translate"], "units": kw["units"]}
    layers = []
    total = relevance.sum(axis=0)
    for c, mod in enumerate(modalities):
        meta = dict(kw["metadata"], relevance_of=mod)
        exists = relevance_name(mod) in viewer.layers
        extra = {} if exists else {"visible": False, "opacity": 0.7, "blending": "translucent",
                                   "colormap": _relevance_colormap(), **common}
        layers.append(_upsert(viewer, relevance_name(mod), relevance[c], "image", lazy=lazy,
                              contrast_limits=lambda R=relevance[c]: _symmetric(R), metadata=meta, **extra))
    exists = SUM_NAME in viewer.layers
    extra = {} if exists else {"opacity": 0.7, "blending": "translucent", "colormap": _relevance_colormap(), **common}
    layers.append(_upsert(viewer, SUM_NAME, total, "image", contrast_limits=_symmetric(total),
                          metadata=dict(kw["metadata"], relevance_of="sum"), **extra))
    exists = ABS_NAME in viewer.layers
    extra = {} if exists else {"visible": viewer.dims.ndisplay == 3, "blending": "additive", "colormap": "magma",
                               "rendering": "mip", **common}
    a = np.abs(total)
    layers.append(_upsert(viewer, ABS_NAME, a, "image", lazy=lazy, contrast_limits=lambda: (0, symmetric_limit(a)),
                          metadata=dict(kw["metadata"], relevance_of="abs sum"), **extra))
    return layers


def show_explanation(viewer, explanation, relevance: np.ndarray | None = None, add_case: bool = True) -> list:
    """The layers the widgets add: anatomy and ground truth, prediction, relevance (optionally filtered)."""
    layers = show_case(viewer, explanation.case) if add_case else []
    layers.append(show_prediction(viewer, explanation.prediction, explanation.case))
    R = explanation.relevance if relevance is None else relevance
    layers += show_relevance(viewer, R, explanation.modalities, explanation.case)
    return layers
