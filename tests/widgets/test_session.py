"""One session behind every dock, on the path users take (File > Open Sample, Plugins > napari-lrp): after a
case switch Compare, Save, Export, Sweep and Faithfulness act on the case on screen or refuse by name,
never on the old case; the filter table shows the filters of the run it describes."""

import json

import numpy as np
import pytest

from napari_lrp.layerdata import CASE, ROLE
from napari_lrp.samples import sample_case_path, sample_dropout_model_path
from napari_lrp.widgets import compare_dock
from napari_lrp.widgets._layers import case_key_on_screen
from tests.widgets.test_plugin_path import _dock, _load_and_run, _settle, _wait, plugin_viewer  # noqa: F401


@pytest.fixture
def three_docks(plugin_viewer, qtbot):
    viewer, rel, inc = plugin_viewer
    cmp = _dock(viewer, "Compare methods")
    _settle(qtbot)
    return viewer, rel, inc, cmp


def _switch_to_case_2(viewer, qtbot, drop: bool = False):
    if drop:  # a case folder dropped on the window: napari opens it with the plugin's reader
        viewer.open(str(sample_case_path(2)), plugin="napari-lrp")
    else:
        viewer.open_sample("napari-lrp", "stroke_case_2")
    _settle(qtbot)


def test_after_a_case_switch_nothing_acts_on_the_old_case(three_docks, qtbot, tmp_path, monkeypatch):
    viewer, rel, inc, cmp = three_docks
    first = _load_and_run(qtbot, rel)
    out = tmp_path / "out"
    inc.save(str(out))
    first_folder = inc.last_saved
    # <output>/<case>/<run>: the run as shown (the dock's heatmap filter in place of the run's input filter)
    assert first_folder.parent == out / first.case.name and first_folder.name.startswith("paper_region_class1_")
    assert json.loads((first_folder / "settings.json").read_text())["case"]["name"] == first.case.name
    _switch_to_case_2(viewer, qtbot, drop=True)
    key2 = case_key_on_screen(viewer)
    assert key2 != first.case.key
    # every result of the old case is gone from every dock and from the session
    assert rel.session.explanation is None and inc.coefficients is None
    assert inc.table.value["data"] == [] and cmp.table.value["data"] == []
    assert "new case" in rel.status.value and "new case" in inc.status.value
    assert not [ly.name for ly in viewer.layers if ly.metadata.get(CASE) not in (None, key2)]
    # Save, Export, Sweep and Faithfulness refuse (by the case), writing nothing
    inc.save_dir.value = str(out)
    inc.save_button.changed.emit(True)
    assert "no run" in inc.status.value and sorted(p.name for p in out.iterdir()) == [first.case.name]
    assert "to save" in rel.status.value and "press Run" in rel.status.value  # the Relevance tab offers its Run
    with pytest.raises(RuntimeError, match="case on screen has no run"):
        inc.save(str(out))
    with pytest.raises(RuntimeError, match="case on screen has no run"):
        inc.export_csv(str(tmp_path / "t.csv"))
    assert sorted(p.name for p in out.iterdir()) == [first.case.name] and not (tmp_path / "t.csv").exists()
    inc.run_sweep()
    inc.run_faithfulness()
    assert inc.worker is None and inc.sweep_table is None and inc.curves is None
    # Compare explains the case on screen, and its layer belongs to it
    cmp.methods.value = "gradient"
    cmp.faithfulness.value = False
    cmp.run()
    _wait(qtbot, cmp)
    assert cmp.results is not None, cmp.status.value
    (exp,) = cmp.results.values()
    assert exp.case.key == key2 and exp.case.name != first.case.name
    layers = [ly for ly in viewer.layers if ly.metadata.get(ROLE) == "comparison"]
    assert layers and all(ly.metadata.get(CASE) == key2 for ly in layers)
    assert exp.model.card.name in cmp.status.value
    # Search gammas explains the case on screen too (the search itself is tested in the plugin-path tests)
    searched = []

    def search(model, case, **kw):
        searched.append(case.key)
        raise RuntimeError("the search stops here")

    monkeypatch.setattr(compare_dock, "lrp_search", search)
    cmp.run_search()
    _wait(qtbot, cmp)
    assert searched == [key2] and "the search stops here" in cmp.status.value
    # a Run on the new case, then Save (in the background): the new case's files, only
    second = _load_and_run(qtbot, rel)
    assert second.case.key == key2
    inc.save_in_background(str(out))
    _wait(qtbot, inc)
    folders = {inc.last_saved}
    inc.kind.value, inc.alpha.value = "clamp", 0.3  # another run as shown: its own folder, the first kept whole
    inc.update_now()
    inc.save_button.changed.emit(True)
    _wait(qtbot, inc)
    folders.add(inc.last_saved)
    assert sorted(p.name for p in out.iterdir()) == sorted([first.case.name, second.case.name])
    assert len(folders) == 2 and all(f.parent == out / second.case.name for f in folders)
    for folder in [first_folder, *folders]:  # each folder holds exactly the files its settings list, of its case
        settings = json.loads((folder / "settings.json").read_text())
        assert settings["case"]["name"] == folder.parent.name
        on_disk = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert on_disk == sorted(settings["outputs"])
    assert "clamp:0.0:0.3@input" in json.loads((inc.last_saved / "settings.json").read_text())["filters"]


def test_a_comparison_finished_after_a_switch_is_dropped(three_docks, qtbot):
    viewer, rel, inc, cmp = three_docks
    _load_and_run(qtbot, rel)
    cmp.methods.value = "gradient"
    cmp.faithfulness.value = False
    case, model = cmp._case_and_model()
    from napari_lrp.analysis.compare import compare, split_methods

    result = compare(model, case, split_methods("gradient"), perturbation=False)
    _switch_to_case_2(viewer, qtbot)
    cmp._done_comparing(result)  # the worker's result arrives after the switch
    assert cmp.results is None and "changed while comparing" in cmp.status.value
    assert not [ly for ly in viewer.layers if ly.metadata.get(ROLE) == "comparison"]


def test_the_filter_table_shows_the_runs_filters_after_a_model_switch(three_docks, qtbot):
    viewer, rel, inc, cmp = three_docks
    _load_and_run(qtbot, rel)
    rel.table.set_row("encoders.1", "clamp", 0.0, 0.2)
    rel.model_path.value = str(sample_dropout_model_path())
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    assert "encoders.1" in exp.filters
    row = rel.table.names().index("encoders.1")
    assert rel.table.cellWidget(row, 3).currentText() == "clamp"
    assert rel.table.cellWidget(row, 5).value() == pytest.approx(0.2)
    assert rel.table.filters() == {"encoders.1": exp.filters["encoders.1"]}


def test_the_target_picker_explains_a_lesion_and_the_misses(three_docks, qtbot):
    from napari_lrp.metrics.components import label_components

    viewer, rel, inc, cmp = three_docks
    _load_and_run(qtbot, rel)
    rel.target.value = "largest ground-truth lesion"
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    assert exp.settings()["target"] == "gt-component:1"
    labels, n = label_components(exp.case.ground_truth)
    assert n >= 1 and (exp.target_region() == (labels == 1)).all()
    rel.target.value = "false negatives (missed)"
    rel.run()
    _wait(qtbot, rel)
    exp = rel.session.explanation
    missed = exp.case.ground_truth & (exp.prediction != exp.target_class)
    if missed.any():
        assert exp.settings()["target"] == "false-negative" and (exp.target_region() == missed).all()
    else:  # the sample model finds every lesion voxel: refused by name, nothing drawn
        assert "false-negative" in rel.status.value and "empty" in rel.status.value


def test_concepts_dock_ranks_channels_and_a_clicked_bar_draws_its_map(three_docks, qtbot, tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from napari_lrp.layerdata import CONCEPT_NAME

    viewer, rel, inc, cmp = three_docks
    con = _dock(viewer, "Concepts")
    exp = _load_and_run(qtbot, rel)
    con.layer.reset_choices()
    assert "decoders.1" in con.layer.choices
    con.layer.value = "decoders.1"
    con.rank()
    _wait(qtbot, con)
    assert con.table is not None and len(con.table) == exp.kept_pass.outputs["decoders.1"].shape[1]
    bars = [p for p in con.chart.figure.axes[0].patches if hasattr(p, "channel")]
    assert bars
    best = bars[0]
    con._picked(SimpleNamespace(artist=best))  # what matplotlib hands the pick handler on a click
    _wait(qtbot, con)
    layer = viewer.layers[CONCEPT_NAME]
    want = exp.conditional("decoders.1", [best.channel]).sum(axis=0)
    np.testing.assert_allclose(layer.data, want, rtol=1e-6, atol=1e-12)
    assert layer.metadata["concept"] == f"decoders.1 channel {best.channel}" and "R · concept" in con.status.value
    con.channels.value = f"{bars[0].channel},{bars[1].channel}"
    con.joint_button.changed.emit(True)
    _wait(qtbot, con)
    joint = exp.conditional("decoders.1", [bars[0].channel, bars[1].channel]).sum(axis=0)
    np.testing.assert_allclose(viewer.layers[CONCEPT_NAME].data, joint, rtol=1e-6, atol=1e-12)
    # the chart's channels scored by their conditional maps, sorted by D_GT; a row's click shows its map
    con.top.value = 4
    con.measure_button.changed.emit(True)
    _wait(qtbot, con)
    m = con.measures
    assert m is not None and len(m) == 4, con.status.value
    assert m.groundtruth_inclusivity.is_monotonic_decreasing and con.measures_table.column_headers[2] == "D_GT"
    first = int(m.channel.iloc[0])
    want = exp.concept_measures("decoders.1", [first])
    assert m.groundtruth_inclusivity.iloc[0] == pytest.approx(float(want.groundtruth_inclusivity.iloc[0]))
    con.sort_by.value = "D_x"
    assert con.measures.input_inclusivity.is_monotonic_decreasing
    con._measure_clicked(1, 0)
    _wait(qtbot, con)
    assert con.shown == ("decoders.1", (int(con.measures.channel.iloc[1]),))
    # reference cases of the shown channel from a cohort's references.csv, one opened at its peak
    channel = con.shown[1][0]
    refs = tmp_path / "references.csv"
    pd.DataFrame({"channel": [channel, channel, channel + 1], "rank": [2, 1, 1], "case": ["case_01", "case_02", "x"],
                  "relevance": [0.5, 0.9, 1.0], "abs_share": [0.1, 0.2, 0.3], "location_z_mm": [3.0, 9.0, 0.0],
                  "location_y_mm": [10.0, 20.0, 0.0], "location_x_mm": [5.0, 6.0, 0.0], "crop": ["", "", ""],
                  "layer": "decoders.1", "case_folder": [str(sample_case_path(1)), str(sample_case_path(2)), ""]}
                 ).to_csv(refs, index=False)
    con.references_path.value = str(refs)
    con.references_button.changed.emit(True)
    assert list(con.references.case) == ["case_02", "case_01"], con.status.value  # by rank
    con.open_reference_button.changed.emit(True)  # the first (rank 1): case 2 replaces case 1, at its peak
    _settle(qtbot)
    assert case_key_on_screen(viewer) != exp.case.key
    assert abs(viewer.dims.point[0] - 9.0) <= viewer.layers["ADC"].scale[0] / 2  # the slice nearest the peak
    assert CONCEPT_NAME not in viewer.layers and con.table is None and con.measures is None


def test_progress_shows_in_the_dock_and_no_activity_entry_is_left(plugin_viewer, qtbot, tmp_path):
    """The dock's bar shows the step, the elapsed time and the estimate; napari's activity entries close when a
    run ends, is cancelled or fails."""
    from napari.utils import progress

    from napari_lrp.widgets._base import progress_words

    assert progress_words(12, 48, 6.0) == "12/48 · 6 s · about 18 s left"
    assert progress_words(48, 48, 20.0) == "48/48 · 20 s"
    viewer, rel, inc = plugin_viewer
    earlier = set(progress._all_instances)  # another test's job may still be ending

    def left():
        return len(set(progress._all_instances) - earlier)

    seen = []
    rel._bridge.progressed.connect(lambda d, t: seen.append((not rel.progress_bar.isHidden(),
                                                             rel.progress_text)))
    _load_and_run(qtbot, rel)
    assert seen and all(visible for visible, _text in seen), seen[:5]
    done, total = (int(v) for v in rel.progress_text.split(" · ")[0].split("/"))
    # steps napari delivers after the job ended (its activity dialog processes events) are not drawn
    assert 1 <= done <= total and total > 1 and rel.progress_bar.isHidden()
    assert left() == 0
    rel._bridge.progressed.connect(lambda d, t: rel.cancel())  # cancelled at its first step
    rel.run()
    _wait(qtbot, rel)
    assert rel.status.value == "cancelled" and left() == 0
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    rel.model_path.value = str(bad)
    rel.load()
    _wait(qtbot, rel)
    assert "not valid JSON" in rel.status.value and left() == 0
    rel.status.value = ""
    rel.run()  # a failed Run
    _wait(qtbot, rel)
    assert "not valid JSON" in rel.status.value and left() == 0
    assert rel.progress_bar.isHidden()


def test_the_status_names_what_the_run_was(plugin_viewer, qtbot):
    """After Run the status names the case, the preset, the model, the filters, the device, the seconds and the
    unaccounted share, then the Dice."""
    import napari_lrp as nl
    from napari_lrp.widgets._session import describe_run

    viewer, rel, inc = plugin_viewer
    rel.input_filter.kind.value = "clamp"
    rel.input_filter.a2.value = 0.2
    exp = _load_and_run(qtbot, rel)
    status = rel.status.value
    assert status.startswith(f"{exp.case.name}: paper · model {exp.model.card.name} · filters clamp(0, 0.2) at "
                             f"input · {exp.model.device} · "), status
    seconds = float(status.split(" s · unaccounted")[0].rsplit(" · ", 1)[1])
    assert 0 < seconds < 600
    assert f"unaccounted {abs(exp.ledger.unaccounted):.1%}" in status and "; Dice 0." in status
    bare = nl.explain(exp.model, exp.case, mc_samples=2, dropout=0.1)
    assert describe_run(bare) == (f"paper · model {exp.model.card.name} · filters none · {exp.model.device} · "
                                  f"unaccounted {abs(bare.ledger.unaccounted):.1%} · mean of 2 draws")
