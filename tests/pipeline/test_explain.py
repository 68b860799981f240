"""explain / Explanation on a tiny model and case: grids, targets, refilter, settings."""

import dataclasses

import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.lrp.filters import Clamp, Pass
from napari_lrp.models import UNet3D
from napari_lrp.models.preprocess import divisible_padding
from napari_lrp.pipeline import predict_case
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


def _listing(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_writes_every_output_as_one_unit(tiny, tmp_path):
    import nibabel as nib
    import pandas as pd

    model, case = tiny
    exp = nl.explain(model, case, preset="paper", target="groundtruth", filters={"input": Clamp(0, 0.2)})
    out = tmp_path / "results"
    files = exp.save(out)
    assert [p.name for p in files] == [f"relevance_{m}.nii.gz" for m in MODS] + [
        "relevance_sum.nii.gz", "prediction.nii.gz", "coefficients.csv", "settings.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files)  # nothing else, no temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "model", "results"]
    for c, m in enumerate(MODS):
        written = np.asarray(nib.load(str(out / f"relevance_{m}.nii.gz")).dataobj)
        np.testing.assert_array_equal(case.grid.to_napari(written), exp.relevance[c])
    table = pd.read_csv(out / "coefficients.csv")
    np.testing.assert_allclose(table.mu, exp.coefficients().mu)
    again = nl.explain(model, case, settings=out / "settings.json")
    np.testing.assert_array_equal(again.relevance, exp.relevance)


def test_a_failed_save_leaves_the_previous_results_complete_and_unchanged(tiny, tmp_path, monkeypatch):
    import napari_lrp.pipeline.result as explanation_module

    model, case = tiny
    out = tmp_path / "results"
    first = nl.explain(model, case, preset="paper", target="groundtruth")
    first.save(out)
    (out / "my_notes.txt").write_text("a researcher's notes beside the results")
    before = _listing(out)
    second = first.refilter({"input": Pass(0, 0.1)})
    assert not np.array_equal(second.relevance, first.relevance)

    def disk_full(*args, **kwargs):  # the last write of the unit fails as on a full disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(explanation_module, "save_settings", disk_full)
    with pytest.raises(OSError, match="No space left"):
        second.save(out)
    assert _listing(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "model", "results"]
    monkeypatch.undo()
    second.save(out)  # a successful save replaces the run's files and keeps the notes
    after = _listing(out)
    assert after["my_notes.txt"] == before["my_notes.txt"]
    assert after["relevance_sum.nii.gz"] != before["relevance_sum.nii.gz"]


def test_heatmap_filter_replaces_the_runs_input_filter(tiny):
    model, case = tiny
    exp = nl.explain(model, case, preset="paper", target="groundtruth", filters={"input": Pass(0, 0.6)})
    np.testing.assert_array_equal(exp.heatmap(None), exp.relevance)
    clamp = Clamp(0, 0.2)
    want = exp.refilter({"input": clamp}).relevance  # the same run with the heatmap filter as its input filter
    np.testing.assert_allclose(exp.heatmap(clamp), want, rtol=1e-6, atol=1e-9)
    stacked = clamp(exp.relevance[None])[0]
    assert not np.allclose(exp.heatmap(clamp), stacked)


def test_kept_on_case_grid_places_a_coarse_layer_over_the_case(tiny):
    model, case = tiny
    exp = nl.explain(model, case, preset="paper", target="groundtruth", keep=["encoders.1"])
    placed = exp.kept_on_case_grid("encoders.1")
    R = exp.kept["encoders.1"][0].numpy()
    np.testing.assert_array_equal(placed.relevance, R)
    # model grid (8, 16, 16) (the case (13, 11, 5) padded to multiples of 8); encoders.1 is at half resolution
    assert exp.input_grid_shape == (8, 16, 16) and R.shape[1:] == (4, 8, 8)
    np.testing.assert_allclose(placed.scale, np.asarray(case.spacing) * 2)
    # the first coarse voxel's centre lies at the centre of the 2x2x2 fine voxels it covers (padding included)
    pads = np.array([b for b, _a in divisible_padding(case.shape, 8)])
    first_fine = np.asarray(case.grid.translate) - pads * np.asarray(case.spacing)
    np.testing.assert_allclose(placed.translate, first_fine + 0.5 * np.asarray(case.spacing))
    with pytest.raises(KeyError, match="no relevance kept at 'head'"):
        exp.kept_on_case_grid("head")
    assert exp.layer_shapes["encoders.1"][2:] == (4, 8, 8)


def test_output_index_explains_one_output_of_a_deep_supervision_network(tiny):
    model, case = tiny

    class TwoHeads(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x)
            return [y, y * 0.5]

    wrapped = nl.Model(network=TwoHeads(model.network), card=model.card, device=model.device)
    want = nl.explain(model, case, preset="lrp0", target="output")
    got = nl.explain(wrapped, case, preset="lrp0", target="output", output_index=0)
    np.testing.assert_allclose(got.relevance, want.relevance, rtol=1e-5, atol=1e-7)
    pred, _logits, _shapes = predict_case(wrapped, case, output_index=0)
    np.testing.assert_array_equal(pred, want.prediction)
    with pytest.raises(TypeError, match="output_index"):
        nl.explain(wrapped, case, preset="lrp0")


def test_explain_again_repeats_the_settings_and_changes_only_what_is_asked(tiny):
    from napari_lrp.pipeline import explain_again

    model, case = tiny
    kw = {"filters": {"input": Clamp(0.5)}, "preset": "epsilon-gamma-box"}
    exp = nl.explain(model, case, target="output", **kw)
    assert np.abs(exp.relevance).max() > 0
    same = explain_again(exp)
    assert np.array_equal(same.relevance, exp.relevance) and same.filters.keys() == exp.filters.keys()
    region = np.zeros(case.shape, bool)
    region[1:4, 2:8, 3:9] = True
    other = explain_again(exp, target=region, target_class=0)
    assert other.target_class == 0 and other.preset == "epsilon-gamma-box"
    direct = nl.explain(model, case, target=region, target_class=0, **kw)
    assert np.array_equal(other.relevance, direct.relevance)
    noisy = case.image + np.random.default_rng(0).normal(0, 0.3, case.image.shape).astype(np.float32)
    moved = explain_again(exp, case=dataclasses.replace(case, image=noisy), target=region)
    again = nl.explain(model, dataclasses.replace(case, image=noisy), target=region, **kw)
    assert np.array_equal(moved.relevance, again.relevance) and not np.array_equal(moved.relevance, exp.relevance)
    with pytest.raises(TypeError, match="colour is not an argument"):
        explain_again(exp, colour="red")


def test_a_card_of_three_sigmoid_regions_explains_each_region_with_its_own_ground_truth(tmp_path):
    """Independent regions (BraTS' whole / core / enhancing shape): the prediction holds one bit per region, every
    target reads the explained region and its ground truth (the card's label values), draws give each region's
    Bernoulli entropy, Dice is per region."""
    from napari_lrp.metrics.measures import dice

    torch.manual_seed(4)
    net = UNet3D(6, 3, width=4).eval()
    card = {"name": "regions", "architecture": {"class": "napari_lrp.models.UNet3D",
                                                "kwargs": {"in_channels": 6, "out_channels": 3, "width": 4}},
            "modalities": MODS, "input": {"spatial_size": None, "intensity": "minmax", "divisible": 8},
            "classes": ["whole", "core", "enhancing"], "target_class": 0, "output_activation": "sigmoid",
            "regions": {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}}
    model = nl.load_model(nl.save_model(net, card, tmp_path / "model"))
    assert model.card.multilabel and model.card.regions["core"] == [2, 3]
    case = nl.load_case(make_case_folder(tmp_path / "case", shape=(13, 11, 5)))
    label = np.zeros(case.shape, np.uint8)
    label[2:6, 2:8, 1:4], label[3:5, 3:6, 2:4], label[4, 4, 2] = 1, 2, 3
    case = dataclasses.replace(case, label=label)
    runs = [nl.explain(model, case, target_class=k) for k in range(3)]
    logits = runs[0].logits
    expected_bits = sum((logits[k] > 0).astype(np.uint8) << k for k in range(3))
    for k, exp in enumerate(runs):
        assert np.array_equal(exp.prediction, expected_bits)
        assert np.array_equal(exp.target_region(), logits[k] > 0)
        assert abs(exp.ledger.unaccounted) <= 1e-5
        truth = np.isin(label, card["regions"][card["classes"][k]])
        assert np.array_equal(exp.ground_truth, truth)
        assert np.array_equal(exp.for_target("groundtruth").target_region(), truth)
        assert dice(exp.prediction, truth, k, multilabel=True) == pytest.approx(
            2 * (truth & (logits[k] > 0)).sum() / (truth.sum() + (logits[k] > 0).sum()))
    flips = nl.explain(model, case, tta="flips", target_class=1)
    painted = model.card.label_map(runs[0].prediction)  # regions in order, each over the ones before: 1, 2, 3
    expected_map = np.zeros(case.shape, np.uint8)
    for k in range(3):
        expected_map[logits[k] > 0] = k + 1
    assert np.array_equal(painted, expected_map)
    p = flips.mean_probability.astype(np.float64)
    assert p.shape == (3, *case.shape)
    bernoulli = -(p * np.log(np.clip(p, 1e-300, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-300, 1))).sum(0)
    np.testing.assert_allclose(flips.predictive_entropy, bernoulli, rtol=1e-5, atol=1e-6)  # each region's, summed
    assert flips.predictive_entropy.max() <= 3 * np.log(2) + 1e-6 and (flips.mutual_information >= 0).all()
