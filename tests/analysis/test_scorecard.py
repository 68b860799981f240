"""The scorecard on the sample case: its rows are the metrics' own values, the metrics order maps sensibly
(a random map loses, the ground truth wins localisation, the random-logit test separates the classes), passes
are shared, and what cannot be measured says why."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.analysis.scorecard import FAMILIES, METRICS, evaluate, method_label, summarise
from napari_lrp.metrics.localisation import relevance_mass_accuracy, roc_auc
from napari_lrp.samples import load_sample_case, load_sample_model

LOCALISATION = [m for m, spec in METRICS.items() if spec.family == "localisation"]


@pytest.fixture(scope="module")
def runs():
    case, model = load_sample_case(1), load_sample_model("cpu")
    lrp = nl.explain(model, case)
    gxi = nl.explain(model, case, method="gradient_x_input")
    noise = np.random.default_rng(0).normal(size=lrp.relevance.shape).astype(np.float32)
    truth = np.broadcast_to(case.ground_truth, lrp.relevance.shape).astype(np.float32)
    return {"lrp:paper": lrp, "gradient_x_input": gxi, "random": dataclasses.replace(lrp, relevance=noise),
            "ground truth": dataclasses.replace(lrp, relevance=truth.copy())}


def values(table):
    return table.pivot(index="metric", columns="method", values="value")


def test_rows_are_the_metrics_own_values(runs):
    lrp = runs["lrp:paper"]
    table = evaluate(lrp, metrics=["localisation", "complexity", "unaccounted"])
    assert list(table.columns) == ["case", "method", "family", "metric", "value", "better", "settings"]
    assert set(table.method) == {"lrp:paper"} and set(table.case) == {lrp.case.name}
    row = table.set_index("metric")
    g = lrp.case.ground_truth
    assert row.loc["relevance_mass_accuracy", "value"] == relevance_mass_accuracy(lrp.relevance, g)
    assert row.loc["roc_auc", "value"] == roc_auc(lrp.relevance, g)
    assert row.loc["unaccounted", "value"] == lrp.ledger.unaccounted
    assert row.loc["sparseness", "better"] == "higher" and row.loc["entropy", "better"] == "lower"
    assert method_label(runs["gradient_x_input"]) == "gradient_x_input"


def test_a_random_map_loses_and_the_ground_truth_wins_localisation(runs):
    table = values(evaluate(runs, metrics=["localisation", "morf_auc"], n_blocks=300, steps=8))
    for metric in LOCALISATION:
        best = table.loc[metric].max()
        assert table.loc[metric, "ground truth"] == best, metric
        if metric not in ("pointing_game", "top_k_intersection"):
            for method in ("lrp:paper", "gradient_x_input"):
                assert table.loc[metric, "random"] < table.loc[metric, method], (metric, method)
    assert table.loc["relevance_mass_accuracy", "ground truth"] == 1.0
    # MoRF: removing the random map's "most relevant" blocks first hardly moves the score
    for method in ("lrp:paper", "gradient_x_input"):
        assert table.loc["morf_auc", method] < table.loc["morf_auc", "random"] - 0.5


def test_the_random_logit_test_separates_lesion_from_background(runs):
    pair = {k: runs[k] for k in ("lrp:paper", "gradient_x_input")}
    table = evaluate(pair, metrics=["random_logit"])
    assert (table.value < -0.5).all()  # the background's evidence is the lesion's, reversed: not the same map
    assert table.settings.str.contains("class 0 \\(background\\)").all()
    with pytest.raises(ValueError, match="own class"):
        evaluate(runs["lrp:paper"], metrics=["random_logit"], other_class=1)


def test_robustness_shares_one_set_of_noisy_runs_and_states_it(runs):
    calls = []
    table = evaluate(runs["lrp:paper"], metrics=["robustness"], n_noise=3, noise=0.05,
                     progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # three runs serve both sensitivities
    row = table.set_index("metric")
    assert 0 < row.loc["avg_sensitivity", "value"] <= row.loc["max_sensitivity", "value"] < 1
    assert "sd 0.05" in row.loc["max_sensitivity", "settings"] and "3 samples" in row.loc["max_sensitivity",
                                                                                            "settings"]


def test_faithfulness_names_its_imputation(runs):
    table = evaluate(runs["lrp:paper"], metrics=["faithfulness"], n_blocks=200, steps=6, n_runs=12)
    row = table.set_index("metric")
    assert "imputation=mean" in row.loc["morf_auc", "settings"]
    assert "imputation=noisy_linear" in row.loc["road_morf_auc", "settings"]
    assert row.loc["faithfulness_correlation", "value"] > 0.5
    assert np.isfinite(table.value).all()


def test_what_cannot_be_measured_says_why_and_unknown_names_are_refused(runs):
    lrp = runs["lrp:paper"]
    blind = nl.explain(lrp.model, dataclasses.replace(lrp.case, label=None))
    table = evaluate(blind, metrics=["localisation", "repeatability"])
    assert table.value.isna().all()
    assert set(table.settings) == {"no ground truth in the case",
                                   "no draws: run with mc_samples or tta='flips', or give folds"}
    gxi = evaluate(runs["gradient_x_input"], metrics=["unaccounted"]).iloc[0]
    assert np.isnan(gxi.value) and "LRP only" in gxi.settings
    with pytest.raises(ValueError, match="'inclusivity' is not on the scorecard"):
        evaluate(lrp, metrics=["inclusivity"])
    with pytest.raises(ValueError, match="not the case given"):
        evaluate(lrp, case=load_sample_case(2), metrics=["sparseness"])
    with pytest.raises(TypeError, match="Explanations"):
        evaluate([lrp.relevance])


def test_repeatability_reads_the_draws(runs):
    lrp = runs["lrp:paper"]
    flips = nl.explain(lrp.model, lrp.case, tta="flips")
    row = evaluate(flips, metrics=["repeatability"]).set_index("metric")
    assert row.loc["repeatability_spearman", "value"] > 0.5
    assert "draws" in row.loc["repeatability_ssim", "settings"] and "tta=flips" in row.loc["repeatability_ssim",
                                                                                           "settings"]


def test_summarise_gives_mean_and_spread_over_cases():
    rows = [{"case": c, "method": "m", "family": "complexity", "metric": "sparseness", "value": v, "better": "higher",
             "settings": "s"} for c, v in (("a", 0.2), ("b", 0.4), ("c", np.nan))]
    out = summarise(pd.DataFrame(rows)).iloc[0]
    assert out["mean"] == pytest.approx(0.3) and out["sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert out["n"] == 2 and out["settings"] == "s"
    assert set(spec.family for spec in METRICS.values()) == set(FAMILIES)


def test_repeatability_across_the_folds_of_an_ensemble_and_perturbations_refused_by_name():
    from napari_lrp.samples import sample_nnunet_path

    case = load_sample_case(1)
    folds = [nl.load_model(sample_nnunet_path(), device="cpu", fold=k) for k in (0, 1)]
    exp = nl.explain(folds[0], case)
    table = evaluate(exp, metrics=["repeatability", "morf_auc"], folds=folds).set_index("metric")
    assert table.loc["repeatability_spearman", "settings"] == "2 models (folds)"
    assert 0.3 < table.loc["repeatability_spearman", "value"] <= 1.0
    assert np.isnan(table.loc["morf_auc", "value"]) and "own pipeline" in table.loc["morf_auc", "settings"]


def test_a_zero_map_has_no_sensitivity_and_says_so(runs):
    zero = dataclasses.replace(runs["lrp:paper"], relevance=np.zeros_like(runs["lrp:paper"].relevance))
    table = evaluate(zero, metrics=["robustness"])
    assert table.value.isna().all() and table.settings.str.contains("zero everywhere").all()
