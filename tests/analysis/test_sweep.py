import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.analysis.sweep import sweep
from napari_lrp.lrp.filters import default_grid


def test_sweep_table_is_tidy_and_reproducible(paper_explanation):
    t1 = sweep(paper_explanation, placement="input")
    t2 = sweep(paper_explanation, placement="input")
    pd.testing.assert_frame_equal(t1, t2)
    assert list(t1.columns) == ["setting", "placement", "channel", "input_inclusivity", "groundtruth_inclusivity",
                                "mu", "mean_power"]
    assert len(t1) == 18 * 7
    row = t1[(t1.setting == "clamp:0.0:0.2") & (t1.channel == "mean")].iloc[0]
    R = nl.filters.Clamp(0, 0.2)(paper_explanation.relevance[None])[0]
    gi = nl.metrics.groundtruth_inclusivity(R, paper_explanation.case.label)
    assert row.groundtruth_inclusivity == pytest.approx(gi.mean)


def test_block_sweep_repropagates_without_forward(paper_explanation):
    net = paper_explanation.network
    calls = []
    h = net.register_forward_hook(lambda *a: calls.append(1))
    t = sweep(paper_explanation, placement="blocks", grid=default_grid(("clamp",)))
    h.remove()
    assert calls == [] and len(t) == 6 * 7
    a = t[(t.setting == "clamp:0.0:0.05") & (t.channel == "mean")].mu.iloc[0]
    b = t[(t.setting == "none") & (t.channel == "mean")].mu.iloc[0]
    assert a != b


def test_sampled_sweep_has_the_spread_columns(tmp_path):
    """A sampled run: each row is the mean map's coefficients with their sd over the draws."""
    from napari_lrp.samples import sample_case_path, sample_model_path

    model = nl.load_model(sample_model_path())
    exp = nl.explain(model, nl.load_case(sample_case_path(1)), mc_samples=2, dropout=0.1)
    grid = default_grid(("clamp",))[:2]
    t = sweep(exp, placement="input", grid=grid)
    assert list(t.columns) == ["setting", "placement", "channel", "input_inclusivity", "input_inclusivity_sd",
                               "groundtruth_inclusivity", "groundtruth_inclusivity_sd", "mu", "mu_sd",
                               "mean_power", "mean_power_sd"]
    row = t[(t.setting == "clamp:0.0:0.05") & (t.channel == "mean")].iloc[0]
    spread = exp.coefficient_spread(grid[0])
    assert row.mu == pytest.approx(spread.mu.iloc[-1]) and row.mu_sd == pytest.approx(spread.mu_sd.iloc[-1])
    assert (t.groundtruth_inclusivity_sd > 0).any()
    tb = sweep(exp, placement="blocks", grid=grid[:1])
    assert len(tb) == 2 * 7 and tb.mu_sd.notna().all()


def test_sweep_with_faithfulness_columns(paper_explanation):
    grid = default_grid(("clamp",))[:2]
    t = sweep(paper_explanation, placement="input", grid=grid, faithfulness=True,
              perturbation_options={"n_blocks": 40, "steps": 4})
    assert {"morf_auc", "lerf_auc"} <= set(t.columns) and t.morf_auc.notna().all()
    none = t[t.setting == "none"].iloc[0]
    curve = paper_explanation.perturbation("morf", n_blocks=40, steps=4)
    assert none.morf_auc == pytest.approx(curve.auc)
    assert t.groupby("setting").morf_auc.nunique().max() == 1  # one value per setting


def test_lesion_wise_sweep_rows_are_each_lesions_own_sweep(paper_explanation):
    exp = paper_explanation
    grid = default_grid()[:2]
    table = sweep(exp, grid=grid, lesions=True)
    lesions = exp.components()
    specs = ["run"] + [f"{'component' if s == 'prediction' else 'gt-component'}:{k}"
                       for s, k in zip(lesions.source, lesions.component)]
    assert list(dict.fromkeys(table.target)) == specs and len(specs) >= 2
    per_target = len(sweep(exp, grid=grid))
    assert len(table) == len(specs) * per_target
    for spec in specs[1:]:
        rows = table[table.target == spec].reset_index(drop=True)
        own = sweep(exp.for_target(spec), grid=grid)
        pd.testing.assert_frame_equal(rows[own.columns].reset_index(drop=True), own, check_dtype=False)
        status = rows.lesion_status.iloc[0]
        assert status in (("true positive", "false positive") if spec.startswith("component")
                          else ("detected", "missed"))
    run_rows = table[table.target == "run"].reset_index(drop=True)
    pd.testing.assert_frame_equal(run_rows[own.columns], sweep(exp, grid=grid), check_dtype=False)


def test_lesions_with_faithfulness_score_each_lesion_on_its_own_map(paper_explanation):
    exp = paper_explanation
    table = exp.lesions(faithfulness=True, perturbation_options={"n_blocks": 200, "steps": 4})
    row = table.iloc[0]
    lesion = exp.for_target(row.target)
    curves = lesion.faithfulness(n_blocks=200, steps=4)
    assert row.morf_auc == pytest.approx(curves["morf"].auc) and row.lerf_auc == pytest.approx(curves["lerf"].auc)
