"""Tiled relevance: windows, blends, exactness where the receptive field fits the margin,
conservation across windows, the automatic window."""

import numpy as np
import pytest
import torch
from torch import nn

import napari_lrp as nl
from napari_lrp.pipeline.tiling import blend_weights, window_starts, windows
from tests.conftest import make_case_folder


def test_window_starts_hand_values():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(10, 4, 0.25) == [0, 3, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(5, 8, 0.5) == [0]
    assert len(windows((10, 11, 5), (4, 4, 8), 0.5)) == 4 * 5 * 1


def test_blends():
    shape = (16, 16, 16)
    win = (slice(4, 12), slice(0, 8), slice(8, 16))
    g = blend_weights(win, shape, "gaussian", 0.5)
    # sigma = 8 / 8 = 1, centre 3.5: the corner is exp(-3.5^2 / 2)^3 of the (never reached) centre's 1
    assert float(g[0, 0, 0] / g[3, 3, 3]) == pytest.approx(np.exp(-3 * (3.5**2 - 0.5**2) / 2), rel=1e-12)
    t = blend_weights(win, shape, "trimmed", 0.5)  # margin 2 where another window is next to it
    assert float(t[:2].max()) == 0 and float(t[-2:].max()) == 0  # Z: windows on both sides
    assert float(t[2:-2, 0, 2:].min()) == 1  # Y starts at the volume's edge: no margin there
    assert float(t[2:-2, -2:, 2:].max()) == 0 and float(t[2:-2, :6, -2:].min()) == 1  # X ends at the edge
    with pytest.raises(ValueError, match="blend must be one of"):
        blend_weights(win, shape, "cosine", 0.5)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 3, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv3d(3, 2, 1, bias=False)).double().eval()


@pytest.fixture
def case(tmp_path):
    return nl.load_case(make_case_folder(tmp_path / "case", shape=(20, 18, 12), names=("ADC", "MTT")))


@pytest.mark.parametrize("preset", ["lrp0", "epsilon-plus-flat"])
def test_trimmed_tiles_equal_the_whole_volume_when_the_receptive_field_fits_the_margin(case, preset):
    net = _net()
    whole = nl.explain(net, case, preset=preset, target="output")
    tiled = nl.explain(net, case, preset=preset, target="output", window=(8, 8, 8), overlap=0.5, blend="trimmed")
    assert tiled.tiling == {"window": [8, 8, 8], "overlap": 0.5, "blend": "trimmed", "windows": 2 * 4 * 4}
    scale = float(np.abs(whole.relevance).max())
    assert float(np.abs(tiled.relevance - whole.relevance).max()) < 1e-6 * scale  # float32 storage
    np.testing.assert_array_equal(tiled.prediction, whole.prediction)
    # a receptive field wider than the margin (radius 2, margin 1) is not exact: the test can fail
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv3d(2, 3, 5, padding=2, bias=False), nn.ReLU(),
                         nn.Conv3d(3, 2, 1, bias=False)).double().eval()
    a = nl.explain(wide, case, preset=preset, target="output")
    b = nl.explain(wide, case, preset=preset, target="output", window=(6, 6, 6), overlap=0.34, blend="trimmed")
    assert float(np.abs(a.relevance - b.relevance).max()) > 1e-6 * float(np.abs(a.relevance).max())


def test_gaussian_tiles_conserve_relevance_across_windows(case):
    """LRP-0, bias-free: each window conserves its share and the shares sum to the start relevance."""
    net = _net()
    tiled = nl.explain(net, case, preset="lrp0", target="region", window=(8, 8, 8), overlap=0.5)
    start = tiled.ledger.start
    assert abs(start) > 0
    assert abs(float(tiled.relevance.astype(np.float64).sum()) - start) < 1e-6 * abs(start)  # float32 maps
    assert abs(tiled.ledger.unaccounted) < 1e-6 and tiled.settings()["tiling"]["blend"] == "gaussian"
    clamped = tiled.refilter({"input": nl.filters.Clamp(0, 0.2)})  # re-runs the windows
    assert float(np.abs(clamped.relevance).max()) <= 0.2 * float(np.abs(tiled.relevance).max()) + 1e-6


def test_auto_window_fits_the_budget_or_runs_whole(case):
    net = _net()
    small = nl.explain(net, case, preset="lrp0", target="output", window="auto", max_memory=2e5)
    assert small.tiling is not None and max(small.tiling["window"]) < max(case.image.shape[1:])
    whole = nl.explain(net, case, preset="lrp0", target="output", window="auto", max_memory=1e10)
    assert whole.tiling is None
    with pytest.raises(ValueError, match="window must be"):
        nl.explain(net, case, window="big")


def test_memory_plan_tiles_a_run_over_its_budget_and_names_it(case):
    net = _net()
    with pytest.warns(UserWarning, match=r"needs about .* GiB, over the budget of .* tiling with window"):
        exp = nl.explain(net, case, preset="lrp0", target="output", max_memory=3e5)
    assert exp.tiling is not None
    plain = nl.explain(net, case, preset="lrp0", target="output", max_memory=1e10)
    assert plain.tiling is None


def test_the_overlap_is_half_for_a_given_window_and_small_for_one_the_run_chooses():
    """window="auto" (and the memory plan) choose overlap 0.125 (every voxel computed about 1.3-1.5 times, the
    BraTS-size target); a window the user gives keeps 0.5; an explicit overlap is kept either way."""
    import torch

    from napari_lrp.io.case import Case
    from napari_lrp.io.orientation import Grid
    from napari_lrp.models import UNet3D

    torch.manual_seed(0)
    net = UNet3D(2, 2, width=2).eval()
    img = np.random.default_rng(0).random((2, 16, 32, 32), dtype=np.float32)
    case = Case(image=img, modalities=["a", "b"], label=None, grid=Grid(np.eye(4), (32, 32, 16)), name="c")
    given = nl.explain(net, case, preset="lrp0", target="output", window=(16, 16, 16))
    assert given.tiling["overlap"] == 0.5
    auto = nl.explain(net, case, preset="lrp0", target="output", window="auto", max_memory=2e6)
    assert auto.tiling is not None and auto.tiling["overlap"] == 0.125
    with pytest.warns(UserWarning, match="tiling with window"):
        planned = nl.explain(net, case, preset="lrp0", target="output", max_memory=2e6)
    assert planned.tiling["overlap"] == 0.125
    kept = nl.explain(net, case, preset="lrp0", target="output", window="auto", max_memory=2e6, overlap=0.25)
    assert kept.tiling["overlap"] == 0.25


def test_window_auto_without_a_budget_plans_within_the_auto_default(monkeypatch):
    """window='auto' with no max_memory plans within AUTO_BUDGET even when half the free memory is more (a
    BraTS-size case then stays near 2 GB: benchmarks/tiling_memory.py --no-budget); a whole-volume run's memory
    plan keeps half the free memory; a given budget is used as given."""
    import napari_lrp.pipeline.tiling as tiling

    monkeypatch.setattr(tiling, "available_bytes", lambda device=None: 64 * 2**30)
    assert tiling.budget(None, auto=True) == tiling.AUTO_BUDGET == 2 * 2**30
    assert tiling.budget(None) == 32 * 2**30
    assert tiling.budget(5e9, auto=True) == 5e9
    monkeypatch.setattr(tiling, "available_bytes", lambda device=None: 2 * 2**30)
    assert tiling.budget(None, auto=True) == 2**30  # less free memory than the default: half of it
