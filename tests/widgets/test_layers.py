"""nl.show: the layers the widgets add, for scripted napari sessions; updates in place."""

import numpy as np

import napari_lrp as nl
from napari_lrp.layerdata import ABS_NAME, SUM_NAME, relevance_name
from napari_lrp.samples import load_sample_case, load_sample_model
from napari_lrp.widgets._layers import symmetric_limit


def test_show_adds_and_updates_the_same_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    exp = nl.explain(load_sample_model("cpu"), load_sample_case(1), preset="lrp0")
    nl.show(viewer, exp)
    names = [ly.name for ly in viewer.layers]
    assert names == ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP", SUM_NAME, "prediction", "ground truth"]
    nl.show(viewer, exp, per_modality=True)  # one layer per modality on request; |R| once 3D is asked for
    names = [ly.name for ly in viewer.layers]
    assert names[-2:] == ["prediction", "ground truth"]  # the outlines above the relevance overlays
    assert {"prediction", SUM_NAME} | {relevance_name(m) for m in exp.modalities} <= set(names)
    assert ABS_NAME not in names
    layer = viewer.layers[relevance_name("Tmax")]
    np.testing.assert_array_equal(layer.data, exp.relevance[exp.modalities.index("Tmax")])
    np.testing.assert_allclose(layer.scale, exp.case.spacing)
    m = symmetric_limit(exp.relevance[exp.modalities.index("Tmax")])
    assert tuple(layer.contrast_limits) == (-m, m)
    assert viewer.layers["prediction"].contour == 1
    clamped = exp.refilter({"input": nl.filters.Clamp(0, 0.1)})
    nl.show(viewer, clamped)
    assert [ly.name for ly in viewer.layers] == names
    np.testing.assert_allclose(viewer.layers[SUM_NAME].data, clamped.relevance.sum(0))


def test_symmetric_limit():
    R = np.zeros((10, 10))
    assert symmetric_limit(R) == 1.0
    R[0, :] = np.arange(1, 11)
    assert 9.0 < symmetric_limit(R) <= 10.0
