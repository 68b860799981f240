"""Noisy linear imputation (ROAD) in 3D: exact on linear intensities, Quantus 0.6 on a single slice."""

import numpy as np
import pytest
import torch

from napari_lrp.metrics.imputation import DIRECT_SOLVE_LIMIT, noisy_linear_imputation
from napari_lrp.metrics.perturbation import imputed
from tests.metrics._quantus import import_quantus


def test_the_middle_of_a_line_takes_its_neighbours_mean():
    line = np.array([[[[1.0, 7.0, 3.0]]]])
    removed = np.array([[[False, True, False]]])
    assert noisy_linear_imputation(line, removed, noise=0.0)[0, 0, 0, 1] == pytest.approx(2.0, abs=1e-14)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_a_linear_volume_is_restored_inside(solver, monkeypatch):
    if solver == "cg":  # the iterative solver, as on large removals
        monkeypatch.setattr("napari_lrp.metrics.imputation.DIRECT_SOLVE_LIMIT", 10)
    z, y, x = np.meshgrid(np.arange(6), np.arange(7), np.arange(8), indexing="ij")
    image = np.stack([z + 2.0 * y - 3.0 * x, 0.5 * z - y + 10.0])
    removed = np.zeros((6, 7, 8), bool)
    removed[1:5, 2:6, 1:7] = True  # interior: every removed voxel has all 26 neighbours
    out = noisy_linear_imputation(image, removed, noise=0.0)
    # a symmetric weighted mean of a linear function is its centre value: the linear volume solves the system
    assert np.abs(out - image).max() < (1e-10 if solver == "direct" else 1e-5)
    assert DIRECT_SOLVE_LIMIT >= 10


def test_noise_is_per_channel_and_seeded():
    image = np.zeros((2, 4, 4, 4))
    removed = np.zeros((4, 4, 4), bool)
    removed[1:3, 1:3, 1:3] = True
    a = noisy_linear_imputation(image, removed, noise=[1.0, 0.0], rng=3)
    b = noisy_linear_imputation(image, removed, noise=[1.0, 0.0], rng=3)
    assert np.array_equal(a, b)
    assert np.abs(a[0][removed]).max() > 0.1 and np.abs(a[1]).max() == 0 and np.abs(a[0][~removed]).max() == 0
    everything = noisy_linear_imputation(np.arange(8.0).reshape(1, 2, 2, 2), np.ones((2, 2, 2), bool), 0.0)
    assert np.allclose(everything, 3.5)


def test_equal_to_quantus_on_one_slice():
    import_quantus()
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    rng = np.random.RandomState(1)
    image = rng.rand(3, 1, 9, 11)
    removed = rng.rand(1, 9, 11) < 0.4
    np.random.seed(5)
    expected = quantus_imputation(image[:, 0].copy(), np.flatnonzero(removed.ravel()), noise=0.01)
    ours = noisy_linear_imputation(image, removed, 0.01, np.random.RandomState(5))
    assert np.abs(ours[:, 0] - expected).max() < 1e-12


def test_region_perturbation_names_the_imputation():
    x = torch.rand(1, 2, 4, 5, 6, dtype=torch.float64)
    flip = torch.zeros(4, 5, 6, dtype=torch.bool)
    flip[1:3, 1:4, 2:5] = True
    out = imputed(x, flip, noise=0.0)
    assert torch.equal(out[0][:, ~flip], x[0][:, ~flip]) and not torch.equal(out, x)
