"""The Relevance widget under a virtual display with make_napari_viewer and the sample data."""

import json

import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.layerdata import SUM_NAME, relevance_name
from napari_lrp.samples import sample_case_path
from napari_lrp.widgets import InclusivityWidget, RelevanceWidget


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


@pytest.fixture
def viewer_and_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = RelevanceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def test_load_run_layers_and_second_run_in_place(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    assert str(w.model_path.value).endswith("card.json")  # the sample model by default
    w.load()
    _wait(qtbot, w)
    names = [ly.name for ly in viewer.layers]
    assert names[:7] == ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP", "ground truth"] and "prediction" in names
    assert "Dice" in w.status.value and float(w.status.value.split("Dice ")[1]) > 0.7
    assert w.table.rowCount() > 10 and "encoders.0" in w.table.names()
    w.run()
    _wait(qtbot, w)
    assert w.session.explanation is not None, w.status.value
    sum_layer = viewer.layers[SUM_NAME]
    cmap = sum_layer.colormap  # diverging: blue low, transparent at R = 0 (the middle), red high
    np.testing.assert_allclose(cmap.map(np.array([0.0, 0.5, 1.0])), [[0, 0, 1, 1], [1, 1, 1, 0], [1, 0, 0, 1]])
    lo, hi = sum_layer.contrast_limits
    assert lo == -hi and hi > 0
    np.testing.assert_allclose(sum_layer.data, w.session.explanation.relevance.sum(0))
    assert not any(relevance_name(m) in viewer.layers for m in ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"])
    n_layers = len(viewer.layers)
    w.table.set_row("encoders.3", "clamp", 0.0, 0.2)
    w.run()
    _wait(qtbot, w)
    assert len(viewer.layers) == n_layers  # updated in place, no pile-up
    assert not np.allclose(viewer.layers[SUM_NAME].data, sum_layer.data * 0 + w.session.explanation.relevance.sum(0)
                           + 1)
    assert "encoders.3" in w.session.explanation.filters
    assert w.table.item(w.table.names().index("encoders.0"), 2).text().startswith("(1, 16")


def test_bulk_filter_actions(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    w.load()
    _wait(qtbot, w)
    w.bulk_all.changed.emit(True)
    f = w.filters()
    assert set(f) == set(nl.lrp.block_names(w.session.model.network))
    w.bulk_encoder.changed.emit(True)
    assert set(w.filters()) == {"encoders.0", "encoders.1", "encoders.2", "encoders.3"}
    w.bulk_clear.changed.emit(True)
    assert w.filters() == {}


def test_cancel_keeps_the_viewer_usable(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    w.load()
    _wait(qtbot, w)
    before = [ly.name for ly in viewer.layers]
    w._bridge.progressed.connect(lambda d, t: w.cancel())
    w.run()
    _wait(qtbot, w)
    assert w.status.value == "cancelled" and w.session.explanation is None
    assert [ly.name for ly in viewer.layers] == before
    viewer.dims.set_point(0, 5)  # still usable


def test_wrong_channel_count_notifies_and_keeps_layers(viewer_and_widget, qtbot, tmp_path):
    viewer, w = viewer_and_widget
    from napari_lrp.models import UNet3D

    card = {"name": "four", "architecture": {"class": "napari_lrp.models.UNet3D",
                                             "kwargs": {"in_channels": 4, "out_channels": 2, "width": 4}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]}
    path = tmp_path / "bad"
    nl.save_model(UNet3D(4, 2, width=4), {**card, "modalities": ["ADC", "MTT", "rCBF", "rCBV"]}, path)
    (path / "card.json").write_text(json.dumps({**json.loads((path / "card.json").read_text()),
                                                "modalities": card["modalities"]}))
    viewer.open(str(sample_case_path(1)), plugin="napari-lrp")
    before = [(ly.name, ly.data.shape) for ly in viewer.layers]
    w.model_path.value = str(path / "card.json")
    w.run()
    _wait(qtbot, w)
    assert "error" in w.status.value and "takes 4 input channels" in w.status.value
    assert [(ly.name, ly.data.shape) for ly in viewer.layers] == before


def test_inclusivity_widget_follows_the_run(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    inc = InclusivityWidget(viewer)
    viewer.window.add_dock_widget(inc)
    w.run()
    _wait(qtbot, w)
    exp = w.session.explanation
    assert inc.coefficients is not None
    inc.kind.value = "clamp"
    inc.alpha.value = 0.2
    inc.update_now()
    R = nl.filters.Clamp(0, 0.2)(exp.unfiltered_relevance[None])[0]
    want = nl.metrics.input_inclusivity(R, exp.input_image, tau_r=0.5, tau_x=0.1)
    got = inc.coefficients
    np.testing.assert_allclose(got.input_inclusivity.values[:-1], want.per_channel)
    assert got.input_inclusivity.values[-1] == pytest.approx(want.mean)
    gt = nl.metrics.groundtruth_inclusivity(R, exp.case.label)
    np.testing.assert_allclose(got.groundtruth_inclusivity.values[:-1], gt.per_channel)
    np.testing.assert_allclose(viewer.layers[SUM_NAME].data, R.sum(0), rtol=1e-6)
    w.per_modality.value = True
    hidden = viewer.layers[relevance_name("Tmax")]  # hidden layers follow when they are shown
    assert not hidden.visible
    hidden.visible = True
    np.testing.assert_array_equal(hidden.data, R[exp.modalities.index("Tmax")])


def test_layer_inspector_shows_intermediate_relevance(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    w.run()
    _wait(qtbot, w)
    assert "encoders.2" in w.inspect.choices
    layer = w.show_layer_relevance("encoders.2")
    exp = w.session.explanation
    np.testing.assert_allclose(layer.data, exp.kept["encoders.2"][0].sum(0).numpy())
    # a coarser layer covers the same extent: its voxels are larger by the downsampling factor
    extent = np.array(layer.data.shape) * np.array(layer.scale)
    np.testing.assert_allclose(extent, np.array(exp.input_grid_shape) * exp.case.spacing, rtol=1e-6)
    n = len(viewer.layers)
    w.show_layer_relevance("encoders.2")
    assert len(viewer.layers) == n


def test_a_region_model_shows_every_regions_dice_and_its_label_map(viewer_and_widget, qtbot, tmp_path):
    """A card of three sigmoid regions: Load shows the label map painted region over region and the status gives
    each region's Dice against its own ground truth (the card's label values)."""
    import torch

    from napari_lrp.metrics.measures import dice
    from napari_lrp.models import UNet3D
    from napari_lrp.pipeline import predict_case

    viewer, w = viewer_and_widget
    torch.manual_seed(4)
    card = {"name": "regions", "architecture": {"class": "napari_lrp.models.UNet3D",
                                                "kwargs": {"in_channels": 6, "out_channels": 3, "width": 4}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"],
            "input": {"spatial_size": None, "intensity": "zscore", "divisible": 8},
            "classes": ["whole", "core", "enhancing"], "target_class": 0, "output_activation": "sigmoid",
            "regions": {"whole": [1], "core": [1], "enhancing": [2]}}
    path = nl.save_model(UNet3D(6, 3, width=4).eval(), card, tmp_path / "regions")
    w.model_path.value = str(path)
    w.load()
    _wait(qtbot, w)
    model, case = nl.load_model(path), nl.load_case(sample_case_path(1))
    pred, _logits, _ = predict_case(model, case)
    expected = [dice(pred, model.card.class_ground_truth(case, k), k, multilabel=True) for k in range(3)]
    text = w.status.value
    for name, d in zip(card["classes"], expected):
        assert f"{name} {'n/a' if np.isnan(d) else f'{d:.3f}'}" in text, text
    np.testing.assert_array_equal(viewer.layers["prediction"].data, model.card.label_map(pred))
    assert [c[1] if isinstance(c, tuple) else c for c in w.target_class.choices] == [0, 1, 2]
    # a binary sigmoid model (one output channel, the card's two names): one Dice, of the foreground
    binary = {**card, "name": "binary", "classes": ["background", "lesion"], "target_class": 1, "regions": None,
              "architecture": {"class": "napari_lrp.models.UNet3D",
                               "kwargs": {"in_channels": 6, "out_channels": 1, "width": 4}}}
    path = nl.save_model(UNet3D(6, 1, width=4).eval(), binary, tmp_path / "binary")
    w.model_path.value = str(path)
    w.load()
    _wait(qtbot, w)
    pred, logits, _ = predict_case(nl.load_model(path), case)
    assert logits.shape[0] == 1
    d = dice(pred, case.ground_truth, 1)
    assert w.status.value.endswith(f"Dice {'n/a (no ground truth)' if np.isnan(d) else f'{d:.3f}'}"), w.status.value
    assert "background" not in w.status.value


def test_edits_after_a_run_mark_it_changed_until_the_next_run(viewer_and_widget, qtbot):
    viewer, w = viewer_and_widget
    w.run()
    _wait(qtbot, w)
    assert w.run_button.text == "Run"
    w.preset.value = "lrp0"
    assert w.run_button.text == "Run (changed since the last run)" and "other settings" in w.run_button.tooltip
    w.preset.value = "paper"  # back to what the run used
    assert w.run_button.text == "Run"
    w.table.set_row("encoders.1", "clamp", 0.0, 0.3)  # a layer's filter in the table
    assert w.run_button.text == "Run (changed since the last run)"
    w.input_filter.kind.value = "pass"
    w.run()
    _wait(qtbot, w)
    assert w.run_button.text == "Run" and "encoders.1" in w.session.explanation.filters
    w.target_class.value = 0
    assert w.run_button.text == "Run (changed since the last run)"
