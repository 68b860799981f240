import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.filters import default_grid
from napari_lrp.sweep import sweep


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
