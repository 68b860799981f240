"""What napari-lrp's layers are, without napari: metadata keys, roles, names, and the case as layer data.

Every layer napari-lrp adds carries ``metadata[ROLE]`` (what it shows: a case's modality image or label,
or something derived from a run) and ``metadata[CASE]`` (the key of the case it belongs to). The reader
(``_npe2``), the widgets and scripts agree on them here; :func:`case_from_layers` reads the case back
from any layers that carry them (napari's, or anything with ``data``, ``metadata`` and ``name``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import Case

__all__ = ["ABS_NAME", "CASE", "CASE_ROLES", "CONCEPT_NAME", "DERIVED_ROLES", "ERROR_LAYERS", "GROUND_TRUTH_NAME",
           "PREDICTION_NAME", "ROLE", "SUM_NAME", "UNCERTAINTY_LAYERS", "case_from_layers", "case_layer_data",
           "comparison_name", "layer_kind", "relevance_name"]

#: metadata key: the layer's role (``CASE_ROLES`` or ``DERIVED_ROLES``)
ROLE = "napari_lrp_role"
#: metadata key: the key of the case the layer belongs to (``Case.key``)
CASE = "napari_lrp_case"
CASE_ROLES = ("image", "label")
DERIVED_ROLES = ("prediction", "relevance", "inspector", "uncertainty", "comparison", "concept", "errors")

SUM_NAME = "R sum"
ABS_NAME = "|R| sum (3D)"
PREDICTION_NAME = "prediction"
#: the layers of a sampled run (MC dropout, flips): name -> colour map; the mean relevance is in the R layers
#: colour maps that start at black, drawn additively, so zero uncertainty leaves the anatomy as it is
UNCERTAINTY_LAYERS = {"R sd (sum)": "magma", "predictive entropy": "green", "mutual information": "hot"}
#: the one layer the Concepts dock draws a conditional heatmap into (replaced in place)
CONCEPT_NAME = "R · concept"
#: the outline of an error target's region when a run explains it: target kind -> (layer name, colour)
ERROR_LAYERS = {"false-negative": ("false negatives", "orange"), "false-positive": ("false positives", "magenta")}
#: the name of the label layer; the file's own token (OT, seg, ...) stays in the layer's metadata
GROUND_TRUTH_NAME = "ground truth"


def case_layer_data(case: Case) -> list[tuple]:
    """The layers of a case as napari LayerData tuples.

    One grayscale Image per modality (the first visible, contrast from the 0.5 and 99.5 percentiles) and a
    Labels layer "ground truth" for the mask; every layer's metadata names its role and its case.

    Parameters
    ----------
    case : Case
        The case.

    Returns
    -------
    list of tuple
        (data, layer keyword arguments, 'image' or 'labels') per layer.
    """
    kw = case.grid.layer_kwargs()
    key = case.key
    out = []
    for c, name in enumerate(case.modalities):
        v = case.image[c]
        lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = float(v.min()), float(v.max()) + 1e-6
        meta = dict(kw["metadata"], modality=name, case=case.name, files=list(case.files), **{ROLE: "image", CASE: key})
        out.append((v, {"name": name, "colormap": "gray", "contrast_limits": [float(lo), float(hi)],
                        "scale": kw["scale"], "translate": kw["translate"], "units": kw["units"],
                        "blending": "additive" if c else "translucent", "visible": c == 0,
                        "metadata": meta}, "image"))
    if case.label is not None:
        token = Path(case.files[-1]).name if case.files else "label"
        meta = dict(kw["metadata"], case=case.name, label_file=token, **{ROLE: "label", CASE: key},
                    label_values=None if case.label_values is None else list(case.label_values))
        out.append((case.label, {"name": GROUND_TRUTH_NAME, "scale": kw["scale"], "translate": kw["translate"],
                                 "units": kw["units"], "opacity": 0.5, "metadata": meta}, "labels"))
    return out


def relevance_name(modality: str) -> str:
    """The name of the relevance layer of one modality.

    Parameters
    ----------
    modality : str
        The channel's name.

    Returns
    -------
    str
    """
    return f"R {modality}"


def comparison_name(method: str) -> str:
    """The name of the layer of another method's map (channel sum).

    Parameters
    ----------
    method : str
        The method spec as the Compare dock shows it.

    Returns
    -------
    str
    """
    return f"R sum · {method}"


def layer_kind(layer) -> str | None:
    """'image', 'labels' or None: the kind of a napari layer, read from its class names (no napari import).

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer.

    Returns
    -------
    str or None
    """
    names = {c.__name__ for c in type(layer).__mro__}
    return "labels" if "Labels" in names else "image" if "Image" in names else None


def case_from_layers(layers) -> Case | None:
    """The case on screen, from the modality Image layers napari-lrp opened (and their ground truth).

    Parameters
    ----------
    layers : iterable of napari layers
        The viewer's layers (``viewer.layers``).

    Returns
    -------
    Case or None
        The last case's channels (C, Z, Y, X) float32 and its label; None when no case layer is there.
    """
    layers = list(layers)
    imgs = [ly for ly in layers if layer_kind(ly) == "image" and ly.metadata.get(ROLE) == "image"
            and "modality" in ly.metadata]
    if not imgs:
        return None
    key = imgs[-1].metadata.get(CASE)
    imgs = [ly for ly in imgs if ly.metadata.get(CASE) == key and ly.data.shape == imgs[-1].data.shape]
    grid = imgs[0].metadata["napari_lrp_grid"]
    label, values = None, None
    for ly in layers:
        if layer_kind(ly) == "labels" and ly.metadata.get(ROLE) == "label" and ly.metadata.get(CASE) == key \
                and ly.data.shape == imgs[0].data.shape:
            label = np.asarray(ly.data, dtype=np.uint8)
            values = ly.metadata.get("label_values")
    return Case(image=np.stack([np.asarray(ly.data, np.float32) for ly in imgs]),
                modalities=[ly.metadata["modality"] for ly in imgs], label=label, grid=grid,
                name=imgs[0].metadata.get("case", "case"), files=list(imgs[0].metadata.get("files", [])),
                label_values=None if values is None else tuple(values))
