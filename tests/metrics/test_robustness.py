"""Max- and average sensitivity from one set of noisy runs: hand values and Quantus 0.6."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_lrp.metrics.robustness import noisy_inputs, sensitivity
from tests.metrics._quantus import QuantusModel, import_quantus


def test_hand_values():
    x = np.random.default_rng(0).random((2, 3, 4, 5)) + 1.0
    assert sensitivity(lambda xn: 2 * x, x, 2 * x, n_samples=3).max_sensitivity == 0.0  # a map noise cannot move
    noise = [n - x for n in noisy_inputs(x, 0.05, 4, rng=7)]
    expected = [np.linalg.norm(n) / np.linalg.norm(x) for n in noise]  # the map is the input: change / map
    s = sensitivity(lambda xn: xn, x, x, noise=0.05, n_samples=4, rng=7)
    assert s.changes == pytest.approx(expected, rel=1e-12)
    assert s.max_sensitivity == pytest.approx(max(expected)) and s.avg_sensitivity == pytest.approx(np.mean(expected))
    assert (s.noise, s.n_samples) == (0.05, 4)
    # each channel's noise sd is the share of its own sd
    channel_sd = np.array([np.stack(noise)[:, c].std() for c in range(2)])
    assert channel_sd / (0.05 * x.reshape(2, -1).std(axis=1)) == pytest.approx([1, 1], abs=0.25)
    with pytest.raises(ValueError, match="zero everywhere"):
        sensitivity(lambda xn: xn, x, np.zeros_like(x))


def test_equal_to_quantus_without_normalisation():
    quantus = import_quantus()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 1, 1)).double()

    def gradient_x_input(inputs):
        xt = torch.as_tensor(np.asarray(inputs, dtype=np.float64)).reshape(1, 1, 3, 4, 5).requires_grad_(True)
        net(xt).sum().backward()
        return (xt.grad * xt).detach().numpy()

    x = np.random.default_rng(2).random((1, 1, 3, 4, 5))
    a = gradient_x_input(x)
    ours = sensitivity(gradient_x_input, x, a, noise=0.1, n_samples=5, rng=np.random.RandomState(4))
    sd = 0.1 * x.std()
    for cls, value in ((quantus.MaxSensitivity, ours.max_sensitivity), (quantus.AvgSensitivity, ours.avg_sensitivity)):
        # quantus.gaussian_noise's own body (its index expansion refuses the batched call MaxSensitivity makes)
        gaussian = lambda arr, indices, **kw: arr + np.random.normal(loc=0.0, scale=sd, size=arr.shape)
        metric = cls(nr_samples=5, perturb_func=gaussian, normalise=False, abs=False,
                     return_nan_when_prediction_changes=False, disable_warnings=True)
        metric.explain_func = lambda model, inputs, targets, **kw: gradient_x_input(inputs)
        metric.explain_func_kwargs = {}
        np.random.seed(4)
        expected = metric.evaluate_batch(model=QuantusModel(lambda xb: net(xb).flatten(1).sum(1, keepdim=True)),
                                         x_batch=x, y_batch=np.array([0]), a_batch=a.copy())[0]
        assert value == pytest.approx(expected, abs=1e-6)
