"""Other attribution methods through ``explain(method=...)``: identities with real numbers."""

import numpy as np
import pytest
import torch
from torch import nn

import napari_lrp as nl
from napari_lrp.lrp.engine import Cancelled
from napari_lrp.pipeline.attribution import METHODS
from tests.conftest import make_case_folder

NAMES = ("ADC", "MTT")


@pytest.fixture
def case(tmp_path):
    return nl.load_case(make_case_folder(tmp_path / "case", shape=(8, 6, 5), names=NAMES))


def relu_net(bias=False, act=nn.ReLU):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, bias=bias), act(), nn.Conv3d(4, 4, 3, padding=1, bias=bias),
                         act(), nn.Conv3d(4, 2, 1, bias=bias)).double().eval()


def test_registry_lists_the_methods():
    assert list(METHODS) == ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "guided_backprop",
                             "gradcam", "occlusion"]


@pytest.mark.parametrize("target", ["region", "output"])
def test_gradient_x_input_equals_lrp0_on_a_biasfree_relu_network(case, target):
    net = relu_net()
    lrp = nl.explain(net, case, preset="lrp0", target=target)
    gxi = nl.explain(net, case, method="gradient_x_input", target=target)
    scale = float(np.abs(lrp.relevance).max())
    assert scale > 0 and float(np.abs(gxi.relevance - lrp.relevance).max()) < 1e-10 * scale
    assert gxi.method == "gradient_x_input" and gxi.settings()["method"] == "gradient_x_input"
    grad = nl.explain(net, case, method="gradient", target=target)
    assert np.allclose(grad.relevance * case.image, gxi.relevance, atol=1e-6 * scale)


def test_integrated_gradients_completeness_shrinks_with_steps(case):
    """sum of attributions = f(x) - f(baseline); the Riemann (trapezoid) error shrinks with n_steps."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Softplus(), nn.Conv3d(3, 2, 1)).double().eval()
    errs = []
    for n in (2, 8, 64):
        exp = nl.explain(net, case, method="integrated_gradients", target="output", n_steps=n)
        x = torch.as_tensor(case.image, dtype=torch.float64)[None]
        with torch.no_grad():
            drop = float(net(x).sum() - net(torch.zeros_like(x)).sum())
        errs.append(abs(float(exp.relevance.astype(np.float64).sum()) - drop) / abs(drop))
    assert errs[2] < errs[0] and errs[2] < 1e-4, errs


def test_smoothgrad_without_noise_is_the_gradient(case):
    net = relu_net(bias=True, act=nn.LeakyReLU)
    grad = nl.explain(net, case, method="gradient")
    sg = nl.explain(net, case, method="smoothgrad", stdevs=0.0, nt_samples=3)
    assert np.allclose(sg.relevance, grad.relevance, rtol=1e-6, atol=1e-9)
    noisy = nl.explain(net, case, method="smoothgrad", stdevs=0.3, nt_samples=3)
    assert not np.allclose(noisy.relevance, grad.relevance, rtol=1e-3)


def test_gradcam_equals_a_hand_computation(case):
    """At a full-resolution layer: relu(sum_k mean(df/dA_k) A_k), each channel 1/C of it."""
    net = relu_net(bias=True)
    exp = nl.explain(net, case, method="gradcam", layer="3", target="region")
    x = torch.as_tensor(case.image, dtype=torch.float64)[None]
    A = net[:4](x).detach().requires_grad_(True)
    out = net[4](A)
    w = torch.zeros_like(out)
    w[:, 1] = torch.as_tensor(exp.prediction == 1, dtype=torch.float64)
    (g,) = torch.autograd.grad((out * w).sum(), A)
    cam = torch.relu((g.mean(dim=(2, 3, 4), keepdim=True) * A).sum(1))[0].detach().numpy()
    assert float(np.abs(cam).max()) > 0
    np.testing.assert_allclose(exp.relevance.sum(0), cam, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="not one"):
        nl.explain(net, case, method="gradcam", layer="nope")


def test_occlusion_with_one_patch_over_the_volume_is_the_output_drop(case):
    net = relu_net(bias=True)
    exp = nl.explain(net, case, method="occlusion", target="output", sliding_window_shapes=case.image.shape)
    x = torch.as_tensor(case.image, dtype=torch.float64)[None]
    with torch.no_grad():
        drop = float(net(x).sum() - net(torch.zeros_like(x)).sum())
    np.testing.assert_allclose(exp.relevance, np.full(exp.relevance.shape, drop), rtol=1e-6)


def test_guided_backprop_refuses_leaky_relu_and_runs_on_relu(case):
    with pytest.raises(ValueError, match="LeakyReLU"):
        nl.explain(relu_net(act=nn.LeakyReLU), case, method="guided_backprop")
    exp = nl.explain(relu_net(), case, method="guided_backprop")
    assert float(np.abs(exp.relevance).max()) > 0


def test_progress_cancels_and_only_the_input_filter_applies(case):
    net = relu_net(bias=True)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done >= 4:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        nl.explain(net, case, method="integrated_gradients", n_steps=16, internal_batch_size=2, progress=progress)
    assert seen[0] == (2, 16)
    exp = nl.explain(net, case, method="gradient", filters={"input": nl.filters.Clamp(0, 0.2)})
    assert float(np.abs(exp.relevance).max()) <= 0.2 * float(np.abs(exp.unfiltered_relevance).max()) + 1e-6
    with pytest.raises(ValueError, match="only the 'input' filter"):
        exp.refilter({"0": nl.filters.Pass(0, 0.5)})
    with pytest.raises(TypeError, match="unexpected keyword"):
        nl.explain(net, case, n_steps=3)
    with pytest.raises(ValueError, match="unknown method"):
        nl.explain(net, case, method="shap")
