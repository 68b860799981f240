"""The paper's charts from sweep tables (metrics/plots.py) and the per-layer mean power."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from napari_lrp.analysis.sweep import sweep
from napari_lrp.metrics import layer_mean_power
from napari_lrp.metrics.plots import inclusivity_figure, mean_power_figure, signal_figure


def test_plots_and_layer_mean_power(paper_explanation):
    table = sweep(paper_explanation, placement="input")
    assert isinstance(inclusivity_figure(table), Figure)
    assert isinstance(signal_figure(table), Figure)
    mp = layer_mean_power(paper_explanation)
    assert "encoders.0" in mp and all(np.isfinite(v) for v in mp.values())
    assert isinstance(mean_power_figure(mp), Figure)


def test_inclusivity_chart_bars_are_the_sweep_means(paper_explanation):
    """Fig. 4's bars carry the sweep's mean input and ground-truth inclusivity, in the grid's order."""
    table = sweep(paper_explanation, placement="input")
    fig = inclusivity_figure(table)
    heights = [p.get_height() for p in fig.axes[0].patches]
    means = table[table.channel == "mean"]
    n = len(means)
    np.testing.assert_allclose(heights[:n], means.input_inclusivity.astype(float))
    np.testing.assert_allclose(heights[n:2 * n], means.groundtruth_inclusivity.astype(float))
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks == list(means.setting)


def test_mean_power_chart_has_one_bar_per_layer():
    fig = mean_power_figure({"a": 1.5, "b": 3.0})
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], [1.5, 3.0])


def test_normalised_ranks_follow_each_metrics_direction_and_the_figure_draws():
    from napari_lrp.metrics.plots import normalised_ranks, scorecard_figure

    rows = []
    for method, a, b in (("m1", 0.9, 3.0), ("m2", 0.5, 1.0), ("m3", 0.5, np.nan)):
        rows.append({"method": method, "family": "localisation", "metric": "a", "better": "higher", "value": a})
        rows.append({"method": method, "family": "complexity", "metric": "b", "better": "lower", "value": b})
    table = pd.DataFrame(rows)
    ranks = normalised_ranks(table)
    assert list(ranks.columns) == [("localisation", "a"), ("complexity", "b")]
    # a: m1 best (0), m2 and m3 tie for second and third (mean rank 2.5 -> 0.75); b: m2 best, m1 worst, m3 none
    assert ranks[("localisation", "a")].tolist() == [0.0, 0.75, 0.75]
    assert ranks[("complexity", "b")].tolist()[:2] == [1.0, 0.0] and np.isnan(ranks[("complexity", "b")]["m3"])
    fig = scorecard_figure(table)
    assert len(fig.axes) == 3  # families, metrics, colour bar


def test_a_signed_metric_nearest_zero_ranks_best():
    from napari_lrp.metrics.plots import normalised_ranks

    table = pd.DataFrame([{"method": m, "family": "conservation", "metric": "unaccounted", "better": "nearer zero",
                           "value": v} for m, v in (("a", -1e-9), ("b", 5e-8), ("c", -3e-3))])
    assert normalised_ranks(table)[("conservation", "unaccounted")].tolist() == [0.0, 0.5, 1.0]
