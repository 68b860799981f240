"""The paper's charts from sweep tables (metrics/plots.py) and the per-layer mean power."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import napari_lrp as nl
from napari_lrp.metrics import layer_mean_power
from napari_lrp.metrics.plots import inclusivity_figure, mean_power_figure, signal_figure
from napari_lrp.models import UNet3D
from napari_lrp.sweep import sweep
from tests.conftest import make_case_folder

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


@pytest.fixture(scope="module")
def explanation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    torch.manual_seed(0)
    card = {"name": "tiny", "architecture": {"class": "napari_lrp.models.UNet3D",
                                             "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": MODS, "input": {"spatial_size": None, "intensity": "minmax", "divisible": 1}}
    model = nl.load_model(nl.save_model(UNet3D(6, 2, width=4).eval(), card, tmp / "m"))
    case = nl.load_case(make_case_folder(tmp / "case", shape=(12, 10, 5)))
    return nl.explain(model, case, preset="paper", target="groundtruth", keep=True)


def test_plots_and_layer_mean_power(explanation):
    table = sweep(explanation, placement="input")
    assert isinstance(inclusivity_figure(table), Figure)
    assert isinstance(signal_figure(table), Figure)
    mp = layer_mean_power(explanation)
    assert "encoders.0" in mp and all(np.isfinite(v) for v in mp.values())
    assert isinstance(mean_power_figure(mp), Figure)


def test_inclusivity_chart_bars_are_the_sweep_means(explanation):
    """Fig. 4's bars carry the sweep's mean input and ground-truth inclusivity, in the grid's order."""
    table = sweep(explanation, placement="input")
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
