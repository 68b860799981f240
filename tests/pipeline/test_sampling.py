"""Uncertainty-aware relevance: MC dropout and test-time flips through ``explain``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import napari_lrp as nl
from napari_lrp.lrp.filters import Clamp, Pass
from napari_lrp.pipeline.sampling import FLIPS, Sampling, entropy
from tests.conftest import make_case_folder, make_tiny_model

NAMES = ("ADC", "MTT")


def two_channel_case(tmp_path, shape=(6, 5, 4), seed=0):
    return nl.load_case(make_case_folder(tmp_path / f"case{seed}", shape=shape, names=NAMES, seed=seed))


class DropoutLinear(nn.Module):
    """x -> Dropout(p) -> 1x1x1 convolution without bias: y = sum_c w_c d_c x_c / (1 - p)."""

    def __init__(self, p):
        super().__init__()
        self.drop = nn.Dropout(p)
        self.conv = nn.Conv3d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.7, -1.3]).view(1, 2, 1, 1, 1))

    def forward(self, x):
        return self.conv(self.drop(x))


def test_dropout_zero_equals_the_deterministic_run_exactly(tmp_path):
    case = two_channel_case(tmp_path)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Conv3d(4, 2, 1)).eval()
    base = nl.explain(net, case, preset="epsilon-gamma-box", target="output")
    for sampling in ({"mc_samples": 4, "dropout": 0.0}, {"mc_samples": 4, "dropout": 0.0, "batch_size": 3}):
        exp = nl.explain(net, case, preset="epsilon-gamma-box", target="output", **sampling)
        assert np.array_equal(exp.relevance, base.relevance), sampling
        assert float(np.abs(exp.relevance_std).max()) == 0.0
        assert float(np.abs(exp.mutual_information).max()) == 0.0
        assert exp.samples.shape == (4,) + base.relevance.shape
        assert np.array_equal(exp.prediction, base.prediction)


def test_mean_of_a_linear_network_with_dropout_is_its_expectation(tmp_path):
    """E[R_c] = w_c x_c for y = sum w_c d_c x_c / (1 - p) with start y; per draw sd = |w_c x_c| sqrt(p/(1-p))."""
    case = two_channel_case(tmp_path, shape=(4, 4, 3))
    p, T = 0.3, 400
    net = DropoutLinear(p)
    exp = nl.explain(net, case, preset="lrp0", target="output", target_class=0, mc_samples=T, seed=7)
    x = case.image.astype(np.float64)
    w = np.array([0.7, -1.3]).reshape(2, 1, 1, 1)
    expected = w * x
    sd = np.abs(expected) * math.sqrt(p / (1 - p))
    z = np.abs(exp.relevance - expected) / (sd / math.sqrt(T))
    assert float(z.max()) < 5.0  # 96 voxel-channels, each within 5 standard errors
    assert abs(float(exp.relevance_std.sum() / sd.sum()) - 1) < 0.05  # the spread itself, to 5 %
    assert exp.sampling == {"mc_samples": T, "dropout": None, "seed": 7, "tta": None, "dropout_at": "*", "draws": T}
    again = nl.explain(net, case, preset="lrp0", target="output", target_class=0, mc_samples=T, seed=7,
                        batch_size=64)
    assert np.array_equal(again.relevance, exp.relevance)  # seeds make it reproducible, whatever the batches


class Asymmetric(nn.Module):
    """Two classes on a row of two voxels (X): logits depend on the left neighbour, so flipping X matters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 2, (1, 1, 2), padding=(0, 0, 1), bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[[1.0, 0.5]]], [[[0.2, -0.4]]]],
                                                 [[[[-0.3, 0.8]]], [[[0.6, 0.1]]]]]))

    def forward(self, x):
        return self.conv(x)[..., 1:]


def test_predictive_entropy_and_mutual_information_by_hand(tmp_path):
    case = two_channel_case(tmp_path, shape=(2, 1, 1))  # file (X, Y, Z) -> napari (Z, Y, X) = (1, 1, 2)
    net = Asymmetric().double()
    exp = nl.explain(net, case, preset="lrp0", target="output", tta="flips")
    x = torch.as_tensor(case.image, dtype=torch.float64)[None]
    probs = []
    with torch.no_grad():
        for axes in FLIPS:  # by hand: each flip's softmax, flipped back
            dims = [a - 3 for a in axes]
            out = net(x.flip(dims) if dims else x)
            probs.append(torch.softmax(out.flip(dims) if dims else out, dim=1)[0])
    P = torch.stack(probs).numpy()  # (8, K, Z, Y, X)
    mean = P.mean(0)
    h_mean = -(mean * np.log(mean)).sum(0)
    h_each = -(P * np.log(P)).sum(1).mean(0)
    assert np.allclose(exp.predictive_entropy, h_mean, atol=1e-6)
    assert np.allclose(exp.mutual_information, h_mean - h_each, atol=1e-6)
    assert float(exp.mutual_information.max()) > 1e-3  # the flips disagree: the test can fail
    assert np.allclose(exp.mean_probability, mean, atol=1e-6)


def test_entropy_hand_values():
    p = torch.tensor([[0.5, 1.0, 0.2], [0.5, 0.0, 0.8]], dtype=torch.float64)
    expected = [math.log(2), 0.0, -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))]
    assert torch.allclose(entropy(p), torch.tensor(expected, dtype=torch.float64))


def test_flips_of_a_flip_equivariant_network_change_nothing(tmp_path):
    """A kernel symmetric under every flip, 'same' padding: f(flip x) = flip f(x), so each draw's relevance
    flipped back is the plain relevance, and the sd is zero up to rounding."""
    case = two_channel_case(tmp_path, shape=(6, 5, 4))
    torch.manual_seed(3)
    k = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    k = sum(k.flip([d for d, f in zip((2, 3, 4), fl) if f]) for fl in np.ndindex(2, 2, 2)) / 8
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 2, 1)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(k)
    base = nl.explain(net, case, preset="epsilon-gamma-box", target="output")
    exp = nl.explain(net, case, preset="epsilon-gamma-box", target="output", tta="flips")
    scale = float(np.abs(base.relevance).max())
    assert float(np.abs(exp.relevance - base.relevance).max()) < 1e-6 * scale
    assert float(exp.relevance_std.max()) < 1e-6 * scale
    # an asymmetric kernel is not equivariant: the same check fails
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(3, 2, 3, 3, 3, dtype=torch.float64))
    base = nl.explain(net, case, preset="epsilon-gamma-box", target="output")
    exp = nl.explain(net, case, preset="epsilon-gamma-box", target="output", tta="flips")
    assert float(np.abs(exp.relevance - base.relevance).max()) > 1e-3 * float(np.abs(base.relevance).max())


def test_refusals_name_the_option(tmp_path):
    case = two_channel_case(tmp_path)
    net = nn.Sequential(nn.Conv3d(2, 2, 1))
    with pytest.raises(ValueError, match="has no Dropout modules.*dropout=p.*tta='flips'"):
        nl.explain(net, case, mc_samples=3)
    with pytest.raises(ValueError, match="tta must be None or 'flips'"):
        nl.explain(net, case, tta="rotations")
    with pytest.raises(ValueError, match="dropout must be a rate"):
        nl.explain(net, case, mc_samples=2, dropout=1.5)
    with pytest.raises(ValueError, match="no activation module"):
        nl.explain(net, case, mc_samples=2, dropout=0.2)
    with pytest.raises(MemoryError, match="lower mc_samples"):
        from napari_lrp.pipeline import sampling as uncertainty

        old = uncertainty.available_bytes
        uncertainty.available_bytes = lambda device: 1000
        try:
            nl.explain(nn.Sequential(nn.Conv3d(2, 2, 1), nn.Dropout(0.5)), case, mc_samples=3)
        finally:
            uncertainty.available_bytes = old


def test_inserted_dropout_refilter_reuses_the_passes_and_save_writes_the_spread(tmp_path):
    case = nl.load_case(make_case_folder(tmp_path / "case", shape=(12, 10, 5)))
    model = make_tiny_model(tmp_path / "m")
    calls = []
    handle = model.network.register_forward_hook(lambda *a: calls.append(1))
    try:
        exp = nl.explain(model, case, preset="paper", target="groundtruth", mc_samples=5, dropout=0.2, seed=1,
                         batch_size=4)
        forwards = len(calls)
        assert forwards == 2  # batched: the first draw alone (the memory estimate), then the other four
        assert float(exp.relevance_std.max()) > 0 and float(exp.mutual_information.max()) > 0
        re = exp.refilter({"input": Pass(0.0, 0.4)})
        assert len(calls) == forwards  # no new forward pass
        assert re.samples.shape[0] == 5 and not np.array_equal(re.relevance, exp.relevance)
    finally:
        handle.remove()
    assert not any(isinstance(m, nn.Dropout) for m in model.network.modules())
    assert not any(m._forward_hooks for m in model.network.modules())  # the inserted dropout is gone
    spread = exp.coefficient_spread(Clamp(0.0, 0.5))
    assert list(spread.columns) == ["channel", "input_inclusivity", "input_inclusivity_sd",
                                    "groundtruth_inclusivity", "groundtruth_inclusivity_sd", "mu", "mu_sd",
                                    "mean_power", "mean_power_sd"]
    assert float(spread["input_inclusivity_sd"].max()) > 0
    # the value is the mean map's coefficient, the sd the draws' spread (by hand for one channel)
    from napari_lrp.metrics.table import measure

    maps = exp.sample_heatmaps(Clamp(0.0, 0.5))
    by_hand = [measure(r, exp.input_image, case.ground_truth, exp.modalities)["mu"][0] for r in maps]
    of_mean = measure(exp.heatmap(Clamp(0.0, 0.5)), exp.input_image, case.ground_truth, exp.modalities)["mu"][0]
    assert abs(spread["mu"][0] - of_mean) < 1e-12 and abs(spread["mu_sd"][0] - np.std(by_hand)) < 1e-12
    paths = exp.save(tmp_path / "out")
    names = {p.name for p in paths}
    assert {"relevance_std_ADC.nii.gz", "predictive_entropy.nii.gz", "mutual_information.nii.gz",
            "coefficient_spread.csv"} <= names and all(p.exists() for p in paths)
    import json

    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["sampling"] == {"mc_samples": 5, "dropout": 0.2, "seed": 1, "tta": None, "dropout_at": "*",
                                    "draws": 5}
    import nibabel as nib

    sd = np.asarray(nib.load(str(tmp_path / "out" / "relevance_std_ADC.nii.gz")).dataobj)
    assert float(np.abs(sd).max()) > 0


def test_sampling_settings_validate():
    assert Sampling().active is False and Sampling(tta="flips").draws() == list(FLIPS)
    assert len(Sampling(mc_samples=3, tta="flips").draws()) == 24
    assert Sampling(mc_samples=3, dropout=0.0).stochastic is False and Sampling(mc_samples=3).stochastic


def test_dropout_sample_model_is_most_uncertain_on_the_lesion_border():
    """The shipped MC-dropout sample (the sample model fine-tuned with dropout 0.1): its own Dropout modules
    sample (no dropout= needed), and the predictive entropy is highest on the lesion border."""
    from scipy import ndimage

    from napari_lrp.samples import sample_case_path, sample_dropout_model_path

    model = nl.load_model(sample_dropout_model_path())
    assert sum(isinstance(m, nn.Dropout) for m in model.network.modules()) == 7
    case = nl.load_case(sample_case_path(1))
    exp = nl.explain(model, case, mc_samples=4, seed=0)
    gt = case.ground_truth
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    border = ndimage.binary_dilation(gt, st) & ~ndimage.binary_erosion(gt, st)
    interior = ndimage.binary_erosion(gt, st)
    img = case.image.max(0)
    brain = (img > 0.1 * img.max()) & ~ndimage.binary_dilation(gt, st, iterations=3)
    h = exp.predictive_entropy
    assert h[border].mean() > 5 * max(h[interior].mean(), h[brain].mean())
    assert float(exp.relevance_std.max()) > 0
