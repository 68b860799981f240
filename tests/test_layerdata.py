"""What napari-lrp's layers are without napari: their colour maps against the outlines, a case read back from
its layer data."""

import numpy as np
from napari.utils.colormaps import ensure_colormap

from napari_lrp.layerdata import CASE, ROLE, UNCERTAINTY_LAYERS, case_from_layers, case_layer_data
from napari_lrp.samples import load_sample_case

PREDICTION_OUTLINE = np.array([1.0, 1.0, 0.0])  # yellow
TRUTH_OUTLINE = np.array([0.0, 1.0, 1.0])  # cyan


def test_uncertainty_maps_start_at_black_and_entropy_is_not_the_outlines_colour():
    for name, cmap in UNCERTAINTY_LAYERS.items():
        low = ensure_colormap(cmap).map(np.array([0.0]))[0, :3]
        assert np.abs(low).max() < 0.05, f"{name}: drawn additively, its zero must be black ({low})"
    ramp = ensure_colormap(UNCERTAINTY_LAYERS["predictive entropy"]).map(np.linspace(0.5, 1.0, 6))[:, :3]
    for outline in (PREDICTION_OUTLINE, TRUTH_OUTLINE):
        assert np.linalg.norm(ramp - outline, axis=1).min() > 0.8


class _Layer:
    """A stand-in with what ``case_from_layers`` reads of a napari layer (napari's Image / Labels by class name)."""

    def __init__(self, data, kwargs, kind):
        self.data, self.metadata, self.name = data, kwargs["metadata"], kwargs["name"]
        self.__class__ = type("Image" if kind == "image" else "Labels", (_Layer,), {})


def test_a_case_comes_back_from_its_layer_data():
    case = load_sample_case(1)
    layers = [_Layer(*t) for t in case_layer_data(case)]
    assert {ly.metadata[ROLE] for ly in layers} == {"image", "label"}
    assert {ly.metadata[CASE] for ly in layers} == {case.key}
    back = case_from_layers(layers)
    assert back.modalities == case.modalities and back.name == case.name
    np.testing.assert_array_equal(back.image, case.image)
    np.testing.assert_array_equal(back.label, case.label)
    assert case_from_layers(layers[-1:]) is None  # a label without images is no case
