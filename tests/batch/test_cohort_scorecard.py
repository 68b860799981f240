"""The scorecard from the command line: one case (its rows are evaluate()'s) and the sample cohort (the summary
is the mean over the cases' rows, a rerun reuses them, a change of metrics recomputes)."""

import numpy as np
import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.batch.cohort_scorecard import evaluate_cohort
from napari_lrp.cli import main
from napari_lrp.samples import sample_case_path, sample_model_path

METRICS = "localisation,sparseness,unaccounted"


def test_one_case_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "card"
    assert main(["evaluate", str(sample_case_path(1)), "--model", str(sample_model_path()), "--methods",
                 "lrp:paper,gxi", "--metrics", METRICS, "--out", str(out)]) == 0
    table = pd.read_csv(out / "scorecard.csv")
    assert (out / "scorecard.png").stat().st_size > 10_000
    assert set(table.method) == {"lrp:paper", "gxi"} and len(table) == 2 * 7
    model, case = nl.load_model(sample_model_path(), device="cpu"), nl.load_case(sample_case_path(1))
    direct = nl.evaluate({"gxi": nl.explain(model, case, method="gradient_x_input")}, metrics=METRICS.split(","))
    mine = table[table.method == "gxi"].reset_index(drop=True)
    assert np.allclose(mine.value, direct.value, equal_nan=True, rtol=1e-6)
    assert "case_01" in capsys.readouterr().out


def test_the_cohort_summary_is_the_mean_over_cases_and_a_rerun_reuses_them(tmp_path, capsys):
    cohort = sample_case_path(1).parent
    out = tmp_path / "cohort"
    assert main(["evaluate", str(cohort), "--model", str(sample_model_path()), "--methods", "lrp:paper",
                 "--metrics", METRICS, "--workers", "0", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "scorecard.csv")
    rows = pd.read_csv(out / "table.csv")
    assert sorted(rows.case.unique()) == ["case_01", "case_02", "case_03"] and (rows.status == "ok").all()
    rma = rows[rows.metric == "relevance_mass_accuracy"].value
    got = summary.set_index("metric").loc["relevance_mass_accuracy"]
    assert got["mean"] == pytest.approx(rma.mean()) and got["sd"] == pytest.approx(rma.std())
    assert got["n"] == 3 and (out / "scorecard.png").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*.csv")}
    evaluate_cohort(cohort, sample_model_path(), out, ["lrp:paper"], METRICS.split(","), workers=0,
                    show_progress=False, noise=0.02, n_noise=5, n_runs=50, steps=12, n_blocks=500, tolerance_mm=0.0,
                    seed=0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*.csv")} == stamps  # reused
    evaluate_cohort(cohort, sample_model_path(), out, ["lrp:paper"], ["sparseness"], workers=0, show_progress=False)
    assert set(pd.read_csv(out / "table.csv").metric) == {"sparseness"}  # other settings: recomputed


def test_unknown_methods_and_metrics_are_refused_before_any_case_runs(tmp_path, capsys):
    cohort = sample_case_path(1).parent
    with pytest.raises(ValueError, match="'dice' is not on the scorecard"):
        evaluate_cohort(cohort, sample_model_path(), tmp_path / "x", ["lrp:paper"], ["dice"], workers=0)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        evaluate_cohort(cohort, sample_model_path(), tmp_path / "x", ["magic"], workers=0)
    assert not (tmp_path / "x").exists()
    assert main(["evaluate", str(sample_case_path(1)), "--model", str(sample_model_path()), "--metrics", "dice",
                 "--out", str(tmp_path / "y")]) == 2
    assert "not on the scorecard" in capsys.readouterr().err
