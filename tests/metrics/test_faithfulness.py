"""Faithfulness correlation: +-1 on a linear score explained exactly, Quantus 0.6 on the flattened input."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_lrp.metrics.faithfulness import faithfulness_correlation
from tests.metrics._quantus import QuantusModel, import_quantus


def test_a_linear_score_explained_exactly_correlates_one():
    x = torch.rand(1, 2, 6, 6, 6, dtype=torch.float64) + 0.5
    score = lambda xb: xb.flatten(1).sum(1)  # gradient x input of a sum is the input itself; zero baseline
    kw = {"n_runs": 30, "subset": 0.2, "block": (2, 2, 2), "fill": "zero", "rng": 0}
    assert faithfulness_correlation(score, x, x[0], **kw) == pytest.approx(1.0, abs=1e-12)
    assert faithfulness_correlation(score, x, -x[0], **kw) == pytest.approx(-1.0, abs=1e-12)
    flat = torch.ones_like(x[0])  # every subset holds the same relevance: no correlation is defined
    assert np.isnan(faithfulness_correlation(score, x, flat, **kw))
    with pytest.raises(ValueError, match="subset=27"):
        faithfulness_correlation(score, x, x[0], n_runs=3, subset=27, block=(2, 2, 2))


def test_equal_to_quantus_with_one_voxel_blocks_and_one_channel(monkeypatch):
    quantus = import_quantus()
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 2, 1)).double()
    score = lambda xb: conv(xb)[:, 1].flatten(1).sum(1)
    x = torch.rand(1, 1, 3, 4, 5, dtype=torch.float64)
    R = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    metric = quantus.FaithfulnessCorrelation(nr_runs=25, subset_size=6, perturb_baseline="black", abs=False,
                                             normalise=False, disable_warnings=True)
    drawn = []
    choice = np.random.choice

    def recording_choice(*args, **kwargs):  # Quantus draws its subsets from numpy's global state
        drawn.append(choice(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(np.random, "choice", recording_choice)
    classifier = QuantusModel(lambda xb: score(xb)[:, None])
    expected = metric.evaluate_batch(model=classifier, x_batch=x.numpy(), y_batch=np.array([0]),
                                     a_batch=R.numpy()[None])[0]
    assert len(drawn) == 25 and all(len(d) == 6 for d in drawn)
    ours = faithfulness_correlation(score, x, R, subset=6, block=(1, 1, 1), fill="black", subsets=drawn)
    assert ours == pytest.approx(expected, abs=1e-6)
