"""The GUI as users meet it: File > Open Sample, Plugins > napari-lrp > ..., Load, Run; napari hands
the widgets a public-only proxy of the viewer on this path."""

import warnings

import numpy as np
import pytest
from napari.layers import Image, Labels

import napari_lrp as nl
from napari_lrp.layerdata import ABS_NAME, GROUND_TRUTH_NAME, PREDICTION_NAME, SUM_NAME, relevance_name
from napari_lrp.samples import sample_case_path
from napari_lrp.widgets._tables import format_number

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _dock(viewer, name):
    _dw, widget = viewer.window.add_plugin_dock_widget("napari-lrp", name)
    return widget


def _settle(qtbot):
    qtbot.wait(50)  # deferred layer clean-up after an insertion runs on the event loop


def _assert_case_on_screen(viewer, case_dir):
    """Every case layer holds ``case_dir``'s data; one case only; outlines and mm units everywhere."""
    case = nl.load_case(case_dir)
    names = [ly.name for ly in viewer.layers]
    assert names[:6] == MODS and GROUND_TRUTH_NAME in names, names
    assert len([n for n in names if n in MODS]) == 6
    assert not any("[" in n for n in names), names
    for m in MODS:
        layer = viewer.layers[m]
        assert isinstance(layer, Image)
        np.testing.assert_array_equal(layer.data, case.channel(m))
        np.testing.assert_allclose(layer.scale, case.spacing)
    gt = viewer.layers[GROUND_TRUTH_NAME]
    assert isinstance(gt, Labels) and gt.contour == 1  # a thin outline
    np.testing.assert_array_equal(gt.data, case.label)
    assert gt.metadata["label_file"].startswith("VSD.Brain.XX.O.OT")
    for ly in viewer.layers:
        assert tuple(str(u) for u in ly.units) == ("millimeter",) * 3, (ly.name, ly.units)
    return case


def _load_and_run(qtbot, rel):
    """Load then Run in the Relevance dock as a user clicks them; the explanation on screen."""
    rel.load()
    _wait(qtbot, rel)
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    assert exp is not None, rel.status.value
    return exp


@pytest.fixture
def plugin_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lrp", "stroke_case_1")
    rel = _dock(viewer, "Relevance")
    inc = _dock(viewer, "Inclusivity and sweeps")
    _settle(qtbot)
    return viewer, rel, inc


def test_load_and_two_runs_draw_relevance_in_colour_at_the_case_spacing(plugin_viewer, qtbot):
    viewer, rel, inc = plugin_viewer
    assert type(rel._viewer).__name__ == "PublicOnlyProxy"  # what the Plugins menu hands a widget
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = {ly.name for ly in viewer.layers}
        exp = _load_and_run(qtbot, rel)
        added = [ly.name for ly in viewer.layers if ly.name not in before]
        assert sorted(added) == sorted([SUM_NAME, PREDICTION_NAME]), added  # few layers: no 8 relevance layers
        first = viewer.layers[SUM_NAME]
        rel.table.set_row("encoders.3", "clamp", 0.0, 0.2)
        rel.run()
        _wait(qtbot, rel)
        inc.alpha.value = 0.3
        inc.update_now()
    assert not [w for w in caught if "Inconsistent units" in str(w.message)]
    case = _assert_case_on_screen(viewer, sample_case_path(1))
    layer = viewer.layers[SUM_NAME]
    assert layer is first  # updated in place
    assert isinstance(layer, Image) and layer.colormap.name == "lrp bwr" and layer.opacity == pytest.approx(0.7)
    np.testing.assert_allclose(layer.scale, case.spacing)
    lo, hi = layer.contrast_limits
    assert lo == -hi
    assert layer.colorbar.visible and "colour bar: R sum [logit]" in viewer.canvas.overlays["text"].text
    assert isinstance(viewer.layers[PREDICTION_NAME], Labels) and viewer.layers[PREDICTION_NAME].contour == 1
    assert viewer.dims.nsteps[0] == case.shape[0]  # the slice slider has the case's slices
    assert rel.status.value.startswith("case_01: ") and "Dice" in rel.status.value
    assert inc.status.value.startswith("case_01: heatmap")
    assert inc.coefficients is not None
    # one modality in the same layer, renamed; then one layer per modality on request, the sum kept
    shown = inc.filtered_relevance()
    rel.shown.value = "MTT"
    assert SUM_NAME not in viewer.layers and viewer.layers[relevance_name("MTT")] is layer
    np.testing.assert_array_equal(layer.data, shown[MODS.index("MTT")])
    rel.per_modality.value = True
    assert viewer.layers[SUM_NAME] is layer and not rel.shown.enabled
    for m in MODS:
        viewer.layers[relevance_name(m)].visible = True  # a hidden layer is updated when shown
        np.testing.assert_array_equal(viewer.layers[relevance_name(m)].data, shown[MODS.index(m)])
    np.testing.assert_allclose(layer.data, shown.sum(0), rtol=1e-6)
    bars = [ly.name for ly in viewer.layers if getattr(ly, "colorbar", None) is not None and ly.colorbar.visible]
    assert bars == [relevance_name("TTP")]  # the top visible relevance layer owns the one colour bar
    rel.per_modality.value = False
    assert not any(relevance_name(m) in viewer.layers for m in MODS) and rel.shown.enabled
    # |R| for 3D only when 3D is asked for, an oblique camera, the 3D legend and its colour bar
    assert ABS_NAME not in viewer.layers
    rel._toggle_3d()
    assert viewer.dims.ndisplay == 3 and viewer.layers[ABS_NAME].visible and viewer.camera.angles[1] == -60
    np.testing.assert_allclose(viewer.layers[ABS_NAME].data, np.abs(shown.sum(0)), rtol=1e-6)
    legend = viewer.canvas.overlays["text"].text
    assert legend.startswith("3D:") and "|R| sum [logit]" in legend
    assert viewer.layers[ABS_NAME].colorbar.visible and not layer.colorbar.visible
    rel._toggle_3d()
    assert exp is rel.session.explanation or rel.session.explanation is not None
    # the ground truth filled on request (napari's contour control) stays filled when case layers are looked at again
    from napari_lrp.widgets._layers import keep_one_case

    viewer.layers[GROUND_TRUTH_NAME].contour = 0
    keep_one_case(viewer)
    assert viewer.layers[GROUND_TRUTH_NAME].contour == 0


def test_a_second_case_by_folder_replaces_everything(plugin_viewer, qtbot):
    viewer, rel, _inc = plugin_viewer
    rel.run()
    _wait(qtbot, rel)
    rel.case_path.value = str(sample_case_path(2))
    rel.load()
    _wait(qtbot, rel)
    case2 = _assert_case_on_screen(viewer, sample_case_path(2))
    assert rel.status.value.startswith("case_02: ")
    pred = viewer.layers[PREDICTION_NAME]
    assert pred.metadata["napari_lrp_case"].startswith("case_02|")
    d = nl.metrics.dice(pred.data, case2.ground_truth, 1)
    assert f"Dice {d:.3f}" in rel.status.value
    assert SUM_NAME not in viewer.layers  # case 1's relevance is gone with case 1
    assert rel.session.explanation is None


def test_a_typed_folder_is_loaded_before_run_and_a_failed_load_explains_nothing(plugin_viewer, qtbot, tmp_path):
    viewer, rel, _inc = plugin_viewer
    rel.case_path.value = str(sample_case_path(3))
    rel.run()  # no Load: the typed case is loaded first, then explained
    _wait(qtbot, rel)
    assert rel.session.explanation.case.name == "case_03"
    _assert_case_on_screen(viewer, sample_case_path(3))
    np.testing.assert_allclose(viewer.layers[SUM_NAME].data, rel.session.explanation.relevance.sum(0))
    bad = tmp_path / "case_bad"
    bad.mkdir()
    rel.case_path.value = str(bad)
    rel.load()
    _wait(qtbot, rel)
    assert rel.status.value.startswith("error: ") and "case_bad" in rel.status.value
    before = rel.session.explanation
    rel.run()  # the failed folder is tried again, never the old case explained under the new name
    _wait(qtbot, rel)
    assert rel.status.value.startswith("error: ") and "case_bad" in rel.status.value
    assert rel.session.explanation is before
    _assert_case_on_screen(viewer, sample_case_path(3))


def test_a_second_sample_replaces_the_first(plugin_viewer, qtbot):
    viewer, rel, _inc = plugin_viewer
    rel.run()
    _wait(qtbot, rel)
    viewer.open_sample("napari-lrp", "stroke_case_2")
    _settle(qtbot)
    _assert_case_on_screen(viewer, sample_case_path(2))
    assert len([ly for ly in viewer.layers if isinstance(ly, Image)
                and ly.metadata.get("napari_lrp_role") == "image"]) == 6
    assert SUM_NAME not in viewer.layers and PREDICTION_NAME not in viewer.layers
    rel.run()
    _wait(qtbot, rel)
    assert rel.session.explanation.case.name == "case_02"


def test_radiological_view_by_default_on_every_path(plugin_viewer, qtbot):
    viewer, rel, _inc = plugin_viewer
    assert tuple(str(v.value) if hasattr(v, "value") else v for v in viewer.camera.orientation2d) == ("up", "left")
    text = viewer.canvas.overlays["text"]
    assert text.visible and "radiological" in text.text and "yellow = prediction" in text.text
    rel.orientation.value = "neurological"
    assert tuple(str(getattr(v, "value", v)) for v in viewer.camera.orientation2d) == ("up", "right")
    rel._toggle_3d()
    assert viewer.dims.ndisplay == 3
    rel._toggle_3d()
    assert viewer.dims.ndisplay == 2


def test_the_docks_share_one_tabbed_place_and_run_is_visible_at_1600x1000(make_napari_viewer, qtbot):
    """The four docks from the Plugins menu join one tab group (napari would stack them, leaving each a sliver);
    at 1600x1000 the Relevance tab shows Run without scrolling."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-lrp", "stroke_case_1")
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    names = ["Relevance", "Inclusivity and sweeps", "Compare methods", "Concepts"]
    docks = [viewer.window.add_plugin_dock_widget("napari-lrp", n) for n in names]
    rel = docks[0][1]
    rel.set_status("error: " + "a very long message that names a file deep in a folder tree " * 12)
    qtbot.wait(100)
    first = docks[0][0]
    assert {d.windowTitle() for d in window.tabifiedDockWidgets(first)} == {f"{n} (napari-lrp)" for n in names[1:]}
    hint = window.minimumSizeHint()
    assert hint.width() <= 1600 and hint.height() <= 1000, (hint.width(), hint.height())
    assert window.width() <= 1600 and window.height() <= 1000
    first.raise_()
    qtbot.wait(50)
    button = rel.run_button.native
    bottom = button.mapTo(rel.viewport(), button.rect().bottomLeft()).y()
    assert 0 < bottom <= rel.viewport().height(), (bottom, rel.viewport().height())  # Run without scrolling
    assert rel.verticalScrollBar().value() == 0


def _controls(container):
    for c in container:
        if type(c).__name__ == "Container":
            yield from _controls(c)
        elif type(c).__name__ != "Label":
            yield c


def test_every_control_explains_itself(plugin_viewer):
    _viewer, rel, inc = plugin_viewer
    controls = [c for w in (rel, inc) for c in _controls(w.panel)]
    missing = [c.label or getattr(c, "text", "") or c.name for c in controls if not c.tooltip]
    assert len(controls) > 30 and not missing, missing
    assert rel.table.toolTip() and "normalised by its maximum" in rel.table.toolTip()


def test_cancelled_load_and_background_dice_say_so(plugin_viewer, qtbot):
    viewer, rel, inc = plugin_viewer
    before = [(ly.name, ly.data.shape) for ly in viewer.layers]
    rel.case_path.value = str(sample_case_path(2))
    rel.load()
    rel.cancel()
    _wait(qtbot, rel)
    assert rel.status.value == "cancelled"
    assert [(ly.name, ly.data.shape) for ly in viewer.layers] == before
    case = nl.load_case(sample_case_path(1))
    rel.target_class.value = 0
    rel._show_dice(case.label, case, "test")
    assert rel.status.value == "case_01: test; Dice n/a (class 0 is the background)"
    assert str(inc.save_dir.value).startswith(str(__import__("pathlib").Path.home()))
    assert str(inc.csv_path.value).endswith("sweep.csv")
    assert inc.figure.texts and "Sweep draws" in inc.figure.texts[0].get_text()  # no blank white plot


def test_mc_dropout_run_shows_the_spread_layers_and_mean_plus_minus_sd(plugin_viewer, qtbot, tmp_path):
    """Uncertainty on the user's path: uncertainty 'MC dropout' on the sample model (no Dropout modules: p = 0.2
    inserted), T = 3: the mean in the R layers, three spread layers with their own colour maps and colour
    bars, the live table as mean +- sd, the saved folder with the spread and the draws' settings; a plain
    run afterwards removes the (stale) spread layers."""
    import json

    from napari_lrp.layerdata import UNCERTAINTY_LAYERS

    viewer, rel, inc = plugin_viewer
    rel.uncertainty.value = "MC dropout"
    rel.draws.value, rel.dropout_p.value, rel.seed.value = 3, 0.2, 5
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    assert exp is not None and exp.sampling["draws"] == 3, rel.status.value
    assert "mean of 3 draws" in rel.status.value
    for name, cmap in UNCERTAINTY_LAYERS.items():
        layer = viewer.layers[name]
        assert isinstance(layer, Image) and layer.colormap.name == cmap
        assert float(np.max(layer.data)) > 0, name
    viewer.layers["predictive entropy"].visible = True  # shown: its colour bar, titled with its unit
    assert [ly.name for ly in viewer.layers if getattr(ly, "colorbar", None) is not None and ly.colorbar.visible] \
        == ["predictive entropy"]
    assert "colour bar: predictive entropy [nats]" in viewer.canvas.overlays["text"].text
    np.testing.assert_allclose(viewer.layers["predictive entropy"].data, exp.predictive_entropy)
    np.testing.assert_allclose(viewer.layers[SUM_NAME].data, exp.relevance.sum(0), rtol=1e-6, atol=1e-7)
    inc.alpha.value = 0.3
    inc.update_now()
    assert all("±" in cell for row in inc.table.data for cell in row if cell != "n/a")
    written = inc.save(str(tmp_path / "out"))
    assert {"predictive_entropy.nii.gz", "mutual_information.nii.gz", "relevance_std_ADC.nii.gz"} <= \
        {p.name for p in written}
    settings = json.loads((inc.last_saved / "settings.json").read_text())
    assert settings["sampling"]["mc_samples"] == 3 and settings["sampling"]["dropout"] == 0.2 and \
        settings["sampling"]["seed"] == 5
    rel.uncertainty.value = "none"
    rel.run()
    _wait(qtbot, rel)
    assert not any(name in viewer.layers for name in UNCERTAINTY_LAYERS)


def test_faithfulness_button_draws_the_three_curves(plugin_viewer, qtbot):
    """Region perturbation of the heatmap as shown, from the dock: MoRF below random below LeRF
    on the sample model, the chart drawn, the AUCs in the status line."""
    _viewer, rel, inc = plugin_viewer
    rel.run()
    _wait(qtbot, rel)
    inc.faithfulness_button.changed.emit(True)
    _wait(qtbot, inc)
    assert inc.curves is not None, inc.status.value
    morf, lerf, rnd = inc.curves
    assert (morf.order, lerf.order, rnd.order) == ("morf", "lerf", "random")
    assert morf.auc < rnd.auc < lerf.auc
    assert inc.chart.value == "faithfulness" and len(inc.figure.axes) == 1
    assert len(inc.figure.axes[0].lines) == 3 and "MORF AUC" in inc.status.value


def test_compare_dock_shows_each_method_as_a_layer_and_one_table(plugin_viewer, qtbot):
    """Plugins > napari-lrp > Compare methods after Load: one 'R sum · <method>' layer per method
    (the R layers' colour map, symmetric limits), the table with a random row; every control explains itself."""
    from napari_lrp.layerdata import comparison_name

    viewer, rel, _inc = plugin_viewer
    cmp = _dock(viewer, "Compare methods")
    cmp.run()  # nothing loaded yet: it says what to do
    assert "Relevance dock first" in cmp.status.value
    rel.load()
    _wait(qtbot, rel)
    cmp.methods.value = "lrp:paper,gradient"
    cmp.run()
    _wait(qtbot, cmp)
    assert cmp.compared is not None, cmp.status.value
    assert list(cmp.compared.method) == ["lrp:paper", "gradient", "random"]
    for spec in ("lrp:paper", "gradient"):
        layer = viewer.layers[comparison_name(spec)]
        assert isinstance(layer, Image) and layer.colormap.name == "lrp bwr"
        lo, hi = layer.contrast_limits
        assert lo == -hi and hi > 0
        np.testing.assert_allclose(layer.data, cmp.results[spec].relevance.sum(0))
    assert viewer.layers[comparison_name("lrp:paper")].visible
    assert cmp.table.data[0][3] != ""  # MoRF AUC filled
    controls = [c for c in _controls(cmp.panel)]
    assert controls and all(c.tooltip for c in controls)


def test_the_scorecard_scores_the_compared_methods_with_tooltips_and_a_figure(plugin_viewer, qtbot):
    """Compare, then Scorecard: metrics x methods with each cell's meaning in its tooltip, the figure of ranks;
    the values are evaluate()'s on the same runs."""
    viewer, rel, _inc = plugin_viewer
    cmp = _dock(viewer, "Compare methods")
    cmp.score_button.changed.emit(True)
    assert "Compare first" in cmp.status.value
    rel.load()
    _wait(qtbot, rel)
    cmp.methods.value = "lrp:paper,gxi"
    cmp.faithfulness.value = False
    cmp.run()
    _wait(qtbot, cmp)
    cmp.families.value = "localisation,dice"
    cmp.score_button.changed.emit(True)
    assert "'dice' is not on the scorecard" in cmp.status.value and cmp.worker is None
    cmp.families.value = "localisation,complexity"
    cmp.score_button.changed.emit(True)
    _wait(qtbot, cmp)
    assert cmp.scorecard is not None, cmp.status.value
    table = cmp.scorecard_table
    assert table.column_headers == ("lrp:paper", "gxi") and len(table.row_headers) == 7
    expected = nl.evaluate(cmp.results, metrics=["localisation", "complexity"])
    rma = expected[(expected.metric == "relevance_mass_accuracy") & (expected.method == "gxi")].value.iloc[0]
    assert table.data[0][1] == format_number(rma)  # three significant digits, as every table of the docks
    tip = table.native.item(0, 1).toolTip()
    assert "Higher is better" in tip and "Arras" in tip and "positive relevance" in tip
    assert len(cmp.charts.figure.axes) == 3
    viewer.open_sample("napari-lrp", "stroke_case_2")
    _settle(qtbot)
    assert cmp.scorecard is None and table.data.to_list() == []


def test_gamma_search_draws_contours_and_applies_the_best_point(plugin_viewer, qtbot):
    viewer, rel, inc = plugin_viewer
    cmp = _dock(viewer, "Compare methods")
    rel.load()
    _wait(qtbot, rel)
    assert cmp.gammas.value == "0,0.25,1"
    cmp.gamma_picker.boxes[0.25].value = False  # the grid picked with check boxes; the line follows
    assert cmp.gammas.value == "0,1"
    cmp.search_button.changed.emit(True)
    _wait(qtbot, cmp)
    assert cmp.search is not None and len(cmp.search.table) == 4, cmp.status.value
    assert len(cmp.charts.figure.axes) == 6 and cmp.apply_button.enabled
    cmp.apply_button.changed.emit(True)
    qtbot.wait(50)
    exp = rel.session.explanation
    assert exp is cmp.search.best_explanation and exp.preset == "epsilon-gamma-box"
    np.testing.assert_allclose(viewer.layers[SUM_NAME].data, exp.heatmap(inc.current_filter()).sum(0), rtol=1e-5,
                               atol=1e-8)


def test_an_nnunet_results_folder_in_the_model_field_explains_on_the_case_grid(plugin_viewer, qtbot):
    from napari_lrp.samples import sample_nnunet_path

    viewer, rel, _inc = plugin_viewer
    rel.model_path.value = str(sample_nnunet_path() / "plans.json")  # what the file dialog can pick
    exp = _load_and_run(qtbot, rel)
    assert exp.model.pipeline is not None and exp.model.pipeline.folds == ["fold_0", "fold_1"]
    case = _assert_case_on_screen(viewer, sample_case_path(1))
    layer = viewer.layers[SUM_NAME]
    assert layer.data.shape == case.shape and np.abs(layer.data).max() > 0
    assert "Dice" in rel.status.value
    dice = float(rel.status.value.split("Dice")[1].split()[0].strip(":= ,"))
    assert dice > 0.85, rel.status.value  # the sample folds' ensemble segments the lesion (held-out 0.94-0.96)
    # nnU-Net's long module names are shortened in the filter table, whole in the tooltip and in the filters
    names = rel.table.names()
    long = next(i for i, n in enumerate(names) if len(n) > 26)
    item = rel.table.item(long, 0)
    assert "…" in item.text() and item.toolTip() == names[long] and names[long] in dict(exp.network.named_modules())


def test_alt_click_on_a_lesion_picks_it_and_error_targets_are_outlined(plugin_viewer, qtbot):
    """The target picker lists the classes by name and, after a run, every lesion with its size and status; an
    Alt-click on a predicted lesion picks it and Run explains it alone; a false-positive target is drawn as an
    outline of its own colour, gone again with the next target."""
    from types import SimpleNamespace

    from napari_lrp.layerdata import ERROR_LAYERS
    from napari_lrp.metrics.components import label_components

    viewer, rel, _inc = plugin_viewer
    exp = _load_and_run(qtbot, rel)
    assert [c[0] if isinstance(c, tuple) else c for c in rel.target_class.choices] == [0, 1]
    assert rel.target_class.native.itemText(1) == "1 lesion"
    lesion_labels = [c for c in rel.target.choices if "lesion 1 (" in c]
    assert any(c.startswith("predicted lesion 1 (") and "true positive" in c for c in lesion_labels)
    assert any(c.startswith("ground-truth lesion 1 (") and "detected" in c for c in lesion_labels)
    labels, _n = label_components(exp.predicted_region())
    voxel = np.argwhere(labels == 1)[len(np.argwhere(labels == 1)) // 2]
    kw = exp.case.grid.layer_kwargs()
    world = voxel * np.asarray(kw["scale"]) + np.asarray(kw["translate"])
    rel._on_canvas_click(viewer, SimpleNamespace(type="mouse_press", modifiers=("Alt",), position=tuple(world)))
    assert rel.target.value.startswith("predicted lesion 1 (") and "picked" in rel.status.value
    rel._on_canvas_click(viewer, SimpleNamespace(type="mouse_press", modifiers=(), position=(0.0, 0.0, 0.0)))
    assert rel.target.value.startswith("predicted lesion 1 (")  # a plain click picks nothing
    rel.run()
    _wait(qtbot, rel)
    picked = rel.session.explanation
    assert picked.settings()["target"] == "component:1" and (picked.target_region() == (labels == 1)).all()
    rel.target.value = "false positives"
    rel.run()
    _wait(qtbot, rel)
    added = rel.session.explanation
    name, colour = ERROR_LAYERS["false-positive"]
    if added.target_region() is not None and added.target_region().any():
        layer = viewer.layers[name]
        assert layer.contour == 2 and (layer.data.astype(bool) == added.target_region()).all()
        assert np.allclose(layer.colormap.map(1)[:3], [1.0, 0.0, 1.0], atol=0.01)  # magenta
        rel.target.value = "predicted region"
        rel.run()
        _wait(qtbot, rel)
        assert name not in viewer.layers
    else:  # the sample model adds nothing: refused by name
        assert "false-positive" in rel.status.value


def test_the_methods_are_picked_with_check_boxes_and_option_fields(plugin_viewer):
    from napari_lrp.analysis.compare import parse_method, split_methods
    from napari_lrp.widgets.compare_dock import DEFAULT_METHODS

    viewer, _rel, _inc = plugin_viewer
    cmp = _dock(viewer, "Compare methods")
    assert cmp.picker.spec() == cmp.methods.value == DEFAULT_METHODS
    boxes = cmp.picker.rows
    boxes["ig"][1].value = 8
    boxes["gradcam"][0].value = False
    boxes["lrp"][1].value = "epsilon-gamma-box"
    boxes["occlusion"][0].value = True
    boxes["occlusion"][1].value = "6x4x8x8"
    assert cmp.methods.value == "lrp:epsilon-gamma-box,gradient,gxi,ig:8,occlusion:6x4x8x8"
    parsed = [parse_method(s) for s in split_methods(cmp.methods.value)]  # what Compare will run
    assert parsed[0] == ("lrp", {"preset": "epsilon-gamma-box"})
    assert parsed[3] == ("integrated_gradients", {"n_steps": 8})
    assert parsed[4] == ("occlusion", {"sliding_window_shapes": (6, 4, 8, 8)})
    assert all(box.tooltip for box, _option in boxes.values())


def test_a_bundle_with_its_own_code_loads_only_when_its_code_is_trusted(plugin_viewer, qtbot, tmp_path):
    """A bundle whose preprocessing names a transform of its own scripts/: refused in the dock naming the file
    and the tick box; loaded and explained once "run the model's own code" is ticked."""
    from tests.models.test_bundle_transforms import make_bundle

    _viewer, rel, _inc = plugin_viewer
    own = {"_target_": "scripts.own.Own"}
    pre = {"_target_": "Compose", "transforms": [{"_target_": "LoadImaged", "keys": "image"},
                                                  {"_target_": "EnsureChannelFirstd", "keys": "image"}, own,
                                                  {"_target_": "DivisiblePadd", "keys": "image", "k": 4}]}
    bundle = make_bundle(tmp_path, preprocessing=pre)
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "own.py").write_text("class Own:\n    def __call__(self, data):\n        return dict(data)\n")
    rel.model_path.value = str(bundle)
    rel.load()
    _wait(qtbot, rel)
    assert rel.status.value.startswith("error: ") and "scripts/own.py" in rel.status.value
    assert "run the model's own code" in rel.status.value
    assert rel.session.model is None or rel.session.model.pipeline is None
    rel.trust.value = True
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    assert exp is not None and exp.model.pipeline.kinds[0] == "scripts.own.Own"
    assert abs(exp.ledger.unaccounted) <= 1e-5
