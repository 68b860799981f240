"""LRP hyper-parameter search: rules swapped on the kept forward pass, the grid, the plots."""

import matplotlib
import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.analysis.search import group_layers, lrp_search
from napari_lrp.lrp.rules import Epsilon, Gamma
from napari_lrp.metrics.plots import plot_search
from tests.conftest import make_case_folder, make_tiny_model

matplotlib.use("Agg")


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_model(tmp_path / "m"), nl.load_case(make_case_folder(tmp_path / "case", shape=(12, 10, 5)))


def test_swapped_rules_equal_a_fresh_run_with_those_rules(tiny):
    model, case = tiny
    base = nl.explain(model, case, preset="epsilon-gamma-box", target="groundtruth")
    rules = {"decoders.*": Gamma(1.0, 1e-6), "encoders.2.3": Gamma(0.0, 1e-6)}
    swapped = base.with_rules(rules)
    fresh = nl.explain(model, case, preset="epsilon-gamma-box", target="groundtruth", rules=rules)
    scale = float(np.abs(fresh.relevance).max())
    assert float(np.abs(swapped.relevance - fresh.relevance).max()) < 1e-5 * scale
    assert float(np.abs(swapped.relevance - nl.explain(model, case, preset="epsilon-gamma-box",
                                                        target="groundtruth").relevance).max()) > 1e-3 * scale
    with pytest.raises(ValueError, match="encoders.0.0: ZBox.*cannot become.*new Propagation"):
        base.with_rules({"encoders.0.0": Gamma(0.5)})
    with pytest.raises(ValueError, match="cannot become"):
        base.with_rules({"decoders.0.0": Epsilon(1e-3)})


def test_search_grid_best_point_and_contours(tiny):
    model, case = tiny
    layers = group_layers(model.network)
    assert layers["encoder"][0] == "encoders.0.0" and all(n.startswith("decoders.") for n in layers["decoder"])
    res = lrp_search(model, case, gammas=(0.0, 0.5), target="groundtruth", n_blocks=50, steps=4)
    assert len(res.table) == 4 and list(res.table.columns[:2]) == ["gamma_encoder", "gamma_decoder"]
    assert res.best["faithfulness"] == res.table.faithfulness.max()
    assert all(r == Gamma(res.best["gamma_decoder"], 1e-6) for n, r in res.best_rules.items() if n.startswith("dec"))
    again = nl.explain(model, case, preset="epsilon-gamma-box", target="groundtruth", rules=res.best_rules)
    assert np.allclose(res.best_explanation.relevance, again.relevance, rtol=1e-5,
                       atol=1e-6 * float(np.abs(again.relevance).max()))
    fig = plot_search(res.table)
    assert len(fig.axes) == 6  # three panels and their colour bars


def test_perturbation_cache_gives_the_same_curve_with_fewer_forwards(tiny):
    model, case = tiny
    exp = nl.explain(model, case, preset="paper", target="groundtruth")
    calls = []
    h = model.network.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    plain = exp.perturbation("morf", n_blocks=50, steps=5)
    n_plain = sum(calls)
    cache = {}
    first = exp.perturbation("morf", n_blocks=50, steps=5, cache=cache)
    calls.clear()
    second = exp.perturbation("morf", n_blocks=50, steps=5, cache=cache)
    lerf = exp.perturbation("lerf", n_blocks=50, steps=5, cache=cache)
    h.remove()
    assert np.array_equal(plain.scores, first.scores) and np.array_equal(first.scores, second.scores)
    assert sum(calls) == n_plain - 2  # the second MoRF is all cached; LeRF shares no flips and all
    assert lerf.scores[0] == 1.0


def test_search_over_a_cohort_averages_the_points(tmp_path):
    import shutil

    import pandas as pd

    from napari_lrp.batch import search_cohort
    from napari_lrp.samples import sample_case_paths, sample_model_path

    cohort = tmp_path / "cohort"
    for p in sample_case_paths()[:2]:
        shutil.copytree(p, cohort / p.name)
    mean = search_cohort(cohort, sample_model_path(), tmp_path / "out", gammas=(0.0, 1.0), n_blocks=60, steps=3)
    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert len(table) == 2 * 4 and set(table.case) == {"case_01", "case_02"}
    assert len(mean) == 4 and mean.faithfulness.is_monotonic_decreasing
    point = table[(table.gamma_encoder == 1.0) & (table.gamma_decoder == 0.0)]
    row = mean[(mean.gamma_encoder == 1.0) & (mean.gamma_decoder == 0.0)].iloc[0]
    assert row.morf_auc == pytest.approx(point.morf_auc.mean())
    assert (tmp_path / "out" / "cases" / "case_02.search.csv").exists()
