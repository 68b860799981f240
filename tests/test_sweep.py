import pandas as pd
import pytest
import torch

import napari_lrp as nl
from napari_lrp.filters import default_grid
from napari_lrp.models import UNet3D
from napari_lrp.sweep import sweep
from tests.conftest import make_case_folder

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


@pytest.fixture(scope="module")
def explanation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(0)
    card = {"name": "tiny", "architecture": {"class": "napari_lrp.models.UNet3D",
                                             "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": MODS, "input": {"spatial_size": None, "intensity": "minmax", "divisible": 1}}
    model = nl.load_model(nl.save_model(UNet3D(6, 2, width=4).eval(), card, tmp / "m"))
    case = nl.load_case(make_case_folder(tmp / "case", shape=(12, 10, 5)))
    return nl.explain(model, case, preset="paper", target="groundtruth", keep=True)


def test_default_grid_sizes():
    assert len(default_grid()) == 17 and len(default_grid(("pass",))) == 10


def test_sweep_table_is_tidy_and_reproducible(explanation):
    t1 = sweep(explanation, placement="input")
    t2 = sweep(explanation, placement="input")
    pd.testing.assert_frame_equal(t1, t2)
    assert list(t1.columns) == ["setting", "placement", "channel", "input_inclusivity", "groundtruth_inclusivity",
                                "mu", "mean_power"]
    assert len(t1) == 18 * 7
    row = t1[(t1.setting == "clamp:0.0:0.2") & (t1.channel == "mean")].iloc[0]
    R = nl.filters.Clamp(0, 0.2)(explanation.relevance[None])[0]
    gi = nl.metrics.groundtruth_inclusivity(R, explanation.case.label)
    assert row.groundtruth_inclusivity == pytest.approx(gi.mean)


def test_block_sweep_repropagates_without_forward(explanation):
    net = explanation.network
    calls = []
    h = net.register_forward_hook(lambda *a: calls.append(1))
    t = sweep(explanation, placement="blocks", grid=default_grid(("clamp",)))
    h.remove()
    assert calls == [] and len(t) == 6 * 7
    a = t[(t.setting == "clamp:0.0:0.05") & (t.channel == "mean")].mu.iloc[0]
    b = t[(t.setting == "none") & (t.channel == "mean")].mu.iloc[0]
    assert a != b
