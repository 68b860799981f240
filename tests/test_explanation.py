"""explain / Explanation on a tiny model and case: grids, targets, refilter, settings."""

import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.filters import Clamp, Pass
from napari_lrp.explanation import predict_case
from napari_lrp.models import UNet3D
from tests.conftest import make_case_folder

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(6, 2, width=4).eval()
    card = {"name": "tiny", "architecture": {"class": "napari_lrp.models.UNet3D",
                                             "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": MODS, "input": {"spatial_size": None, "intensity": "minmax", "divisible": 8}}
    model = nl.load_model(nl.save_model(net, card, tmp_path / "model"))
    case = nl.load_case(make_case_folder(tmp_path / "case", shape=(13, 11, 5)))
    return model, case


def test_relevance_on_case_grid_and_padding_cropped(tiny):
    model, case = tiny
    exp = nl.explain(model, case, preset="lrp0", target="output")
    assert exp.relevance.shape == case.image.shape and exp.relevance.dtype == np.float32
    assert exp.prediction.shape == case.shape and exp.prediction.dtype == np.uint8
    # the padded model grid is (8, 16, 16); zero padding gets no LRP-0 relevance, so nothing is lost
    assert abs(exp.ledger.end - exp.relevance.sum(dtype=np.float64)) < 1e-3 * abs(exp.ledger.end) + 1e-6


def test_channels_follow_the_model_order(tiny, tmp_path):
    model, case = tiny
    shuffled = nl.Case(image=case.image[::-1].copy(), modalities=case.modalities[::-1], label=case.label,
                       grid=case.grid)
    a = nl.explain(model, case, preset="paper", target="groundtruth")
    b = nl.explain(model, shuffled, preset="paper", target="groundtruth")
    assert np.abs(a.relevance).max() > 0
    assert a.modalities == b.modalities == MODS
    np.testing.assert_allclose(a.relevance, b.relevance, rtol=1e-5, atol=1e-7)


def test_targets(tiny):
    model, case = tiny
    gt = nl.explain(model, case, preset="lrp0", target="groundtruth")
    voxel = nl.explain(model, case, preset="lrp0", target=(2, 3, 4))
    mask = np.zeros(case.shape, bool)
    mask[2, 3, 4] = True
    masked = nl.explain(model, case, preset="lrp0", target=mask)
    np.testing.assert_array_equal(voxel.relevance, masked.relevance)
    logits = voxel.logits
    assert voxel.ledger.start == pytest.approx(float(logits[1, 2, 3, 4]), rel=1e-5)
    assert gt.ledger.start == pytest.approx(float((logits[1] * (case.label > 0)).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="outside the volume"):
        nl.explain(model, case, target=(99, 0, 0))


def test_refilter_equals_fresh_explain_with_filters(tiny):
    model, case = tiny
    filters = {"input": Clamp(0, 0.2), "encoders.*": Pass(0, 0.6)}
    exp = nl.explain(model, case, preset="paper", target="groundtruth")
    assert np.abs(exp.relevance).max() > 0
    re = exp.refilter(filters)
    fresh = nl.explain(model, case, preset="paper", filters=filters, target="groundtruth")
    np.testing.assert_allclose(re.relevance, fresh.relevance, rtol=1e-6, atol=1e-9)
    assert not np.allclose(re.relevance, exp.relevance)


def test_settings_reproduce_the_run(tiny, tmp_path):
    model, case = tiny
    exp = nl.explain(model, case, preset="epsilon-gamma-box", target="groundtruth",
                     filters={"input": Clamp(0, 0.2), "decoders.*": Pass(0.05, 1)})
    path = nl.save_settings(exp, tmp_path / "run.json")
    again = nl.explain(model, case, settings=path)
    assert np.abs(again.relevance - exp.relevance).max() <= 1e-6
    s = exp.settings()
    assert s["model"]["sha256"] == model.sha256 and s["filters"] == ["clamp:0.0:0.2@input", "pass:0.05:1.0@decoders.*"]


def test_resized_model_grid(tiny, tmp_path):
    model, case = tiny
    model.card.input["spatial_size"] = [8, 16, 16]
    exp = nl.explain(model, case, preset="lrp0", target="output")
    assert exp.relevance.shape == case.image.shape
    assert abs(exp.ledger.balance_error) < 1e-5


def test_predict_case_gives_the_logits_explain_uses(tiny):
    """Load (predict_case) and Run (explain) run the same kernels: identical logits and prediction."""
    model, case = tiny
    pred, logits, shapes = predict_case(model, case)
    exp = nl.explain(model, case, preset="lrp0", target="output")
    assert np.array_equal(logits, exp.logits) and np.array_equal(pred, exp.prediction)
    assert shapes  # every module's output shape, for the layer table
