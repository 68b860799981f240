"""Inclusivity widget: saving reproduces the run, sweep charts, CSV export, and a canvas screenshot."""

import json

import numpy as np
import pandas as pd

import napari_lrp as nl
from napari_lrp.widgets import InclusivityWidget, RelevanceWidget
from napari_lrp.widgets.demo import focus_on_lesion, open_demo


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_saved_nifti_and_json_reproduce_the_relevance(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rel, inc = RelevanceWidget(viewer), InclusivityWidget(viewer)
    rel.preset.value = "epsilon-gamma-box"
    rel.input_filter.kind.value = "pass"
    rel.input_filter.a2.value = 0.6
    rel.run()
    _wait(qtbot, rel)
    inc.kind.value, inc.alpha.value = "clamp", 0.4
    inc.update_now()
    files = inc.save(str(tmp_path / "out"))
    folder = inc.last_saved
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["preset"] == "epsilon-gamma-box" and settings["filters"][-1] == "clamp:0.0:0.4@input"
    exp = rel.session.explanation
    again = nl.explain(nl.load_model(settings["model"]["path"].replace("model.pt", "card.json")),
                       nl.load_case(exp.case.files[0].rsplit("/", 2)[0]), settings=folder / "settings.json")
    import nibabel as nib

    for c, m in enumerate(again.modalities):
        written = np.asarray(nib.load(str(folder / f"relevance_{m}.nii.gz")).dataobj)
        assert np.abs(exp.case.grid.to_napari(written) - again.relevance[c]).max() <= 1e-6
    assert len(files) == 10  # 6 modalities, sum, prediction, coefficients.csv (Explanation.save), settings
    np.testing.assert_allclose(viewer.layers['R sum'].data, again.relevance.sum(0), rtol=1e-5, atol=1e-6)


def test_sweep_and_csv_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rel, inc = RelevanceWidget(viewer), InclusivityWidget(viewer)
    rel.run()
    _wait(qtbot, rel)
    inc.run_sweep()
    qtbot.waitUntil(lambda: inc.sweep_table is not None, timeout=120_000)
    assert len(inc.figure.axes) == 2
    inc.chart.value = "Fig. 5: signal distribution"
    assert inc.figure.axes[0].get_ylabel().startswith("mu")
    inc.csv_path.value = str(tmp_path / "table.csv")
    inc.export_button.changed.emit(True)  # in a worker, as Save
    _wait(qtbot, inc)
    path = tmp_path / "table.csv"
    assert str(path.resolve()) in inc.status.value
    table = pd.read_csv(path)
    assert len(table) == 18 * 7 and set(table.setting) >= {"none", "clamp:0.0:0.2"}
    # per lesion: the run's rows and each lesion's, the charts drawn from the run's own
    inc.sweep_lesions.value = True
    inc.run_sweep()
    _wait(qtbot, inc)
    lesions = rel.session.explanation.components()
    assert inc.sweep_table.target.nunique() == 1 + len(lesions) and "lesions" in inc.status.value
    assert set(inc.sweep_table.lesion_status) >= {"", *lesions.status}
    inc.chart.value = "Fig. 4: inclusivity"
    assert len(inc.figure.axes) == 2 and len(inc.figure.axes[0].patches) == 2 * 18  # two bars per setting, run only


def test_canvas_screenshot_shows_red_and_blue_inside_the_brain(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    _v, rel, inc = open_demo(viewer, run=False)
    rel.preset.value = "lrp0"  # signed evidence; the gamma/z-plus presets are almost all positive here
    rel.run()
    _wait(qtbot, rel)
    focus_on_lesion(viewer, rel.session.explanation)
    for ly in viewer.layers:
        ly.visible = ly.name in ("ADC", "R sum")
    qtbot.wait(200)
    img = viewer.screenshot(str(tmp_path / "canvas.png"), canvas_only=True)
    rgb = img[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = (r > 150) & (g < 110) & (b < 110)
    blue = (b > 150) & (r < 110) & (g < 130)
    grey = (abs(r - g) < 12) & (abs(g - b) < 12) & (r > 40)  # the anatomy
    assert red.sum() > 20 and blue.sum() > 20 and grey.sum() > 1000
    rows, cols = np.nonzero(grey)
    inside = (slice(rows.min(), rows.max()), slice(cols.min(), cols.max()))
    assert red[inside].sum() > 20 and blue[inside].sum() > 20


def test_live_table_equals_the_sweep_row_for_the_same_filter(make_napari_viewer, qtbot, tmp_path):
    """The heatmap filter means one thing (it replaces the run's input filter): the live table, the
    sweep at 'input' started from the widget and the saved coefficients give identical numbers."""
    import pandas as pd

    from napari_lrp.analysis.sweep import sweep
    from napari_lrp.widgets._session import session_for
    from tests.conftest import make_case_folder, make_tiny_model

    model = make_tiny_model(tmp_path / "m")
    case = nl.load_case(make_case_folder(tmp_path / "case", shape=(12, 10, 5)))
    # the run has its own input filter, so stacking and replacing would differ
    exp = nl.explain(model, case, preset="paper", target="groundtruth", filters={"input": nl.filters.Pass(0, 0.6)})
    viewer = make_napari_viewer()
    inc = InclusivityWidget(viewer)
    session_for(viewer).set_explanation(exp)
    table = sweep(exp, placement="input")
    cols = ["input_inclusivity", "groundtruth_inclusivity", "mu", "mean_power"]
    checked = 0
    for kind, alpha, setting in (("clamp", 0.2, "clamp:0.0:0.2"), ("pass", 0.4, "pass:0.0:0.4"),
                                 ("amplify", 0.5, "amplify:0.5:2.0")):
        inc.kind.value, inc.alpha.value = kind, alpha
        inc.update_now()
        row = table[table.setting == setting].reset_index(drop=True)[cols]
        pd.testing.assert_frame_equal(inc.coefficients[cols], row)
        stacked = nl.metrics.measure(nl.filters.make_filter(kind, *((alpha, 2.0) if kind == "amplify" else (0, alpha)))(
            exp.relevance[None])[0], exp.input_image, case.label, exp.modalities)
        assert not np.allclose(stacked[cols].to_numpy(float), row.to_numpy(float), equal_nan=True)
        checked += 1
    inc.kind.value = "none"
    inc.update_now()
    row = table[table.setting == "none"].reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(inc.coefficients[cols], row)
    # the slider's path: the layer at once, the table from its thread a moment later, the same numbers
    before = inc.coefficients
    inc.kind.value, inc.alpha.value = "clamp", 0.2  # both start the throttled update
    qtbot.waitUntil(lambda: inc.coefficients is not before, timeout=10_000)
    row = table[table.setting == "clamp:0.0:0.2"].reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(inc.coefficients[cols], row)
    # the saved coefficients are the live table's (heatmap filter clamp 0.2 in place of the run's pass)
    inc.kind.value, inc.alpha.value = "clamp", 0.2
    inc.update_now()
    inc.save(str(tmp_path / "out"))
    saved = pd.read_csv(inc.last_saved / "coefficients.csv")
    np.testing.assert_allclose(saved[cols].to_numpy(float), inc.coefficients[cols].to_numpy(float), rtol=1e-5,
                               equal_nan=True)
    assert checked == 3
