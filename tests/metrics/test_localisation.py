"""Localisation measures: hand values on a six-voxel volume, and Quantus 0.6 on the same scores."""

import numpy as np
import pytest

from napari_lrp.metrics.localisation import (
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
    top_k_intersection,
    voxel_scores,
)
from tests.metrics._quantus import import_quantus

R = np.array([[[[3.0, -1.0, 0.0], [1.0, 2.0, 0.5]]]])  # (1 channel, Z=1, Y=2, X=3)


def mask(*flat):
    g = np.zeros(6, bool)
    g[list(flat)] = True
    return g.reshape(1, 2, 3)


def test_voxel_scores_take_the_positive_part_by_default_and_sum_the_channels():
    two = np.concatenate([R, -R])
    assert np.array_equal(voxel_scores(two), np.maximum(R, 0)[0] + np.maximum(-R, 0)[0])
    assert np.array_equal(voxel_scores(two, "absolute"), 2 * np.abs(R[0]))
    assert np.array_equal(voxel_scores(two, "signed"), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="part='negative'"):
        voxel_scores(R, "negative")


def test_hand_values():
    g = mask(0, 4)
    # positive scores 3, 0, 0, 1, 2, 0.5: 5 of 6.5 on the mask
    assert relevance_mass_accuracy(R, g) == pytest.approx(5 / 6.5, abs=1e-15)
    assert relevance_rank_accuracy(R, g) == 1.0  # the two top voxels are the mask's two
    assert relevance_rank_accuracy(R, mask(0, 3)) == 0.5  # top two {0, 4}, one on the mask
    assert top_k_intersection(R, g, k=3) == pytest.approx(2 / 3)  # top three {0, 4, 3}
    assert pointing_game(R, g) == 1.0
    assert roc_auc(R, g) == 1.0  # |R| on the mask 3, 2 beat every other voxel (1, 0, 1, 0.5)
    # on {0, 3}: 3 beats all four; 1 ties 1 (one half), beats 0 and 0.5, loses to 2: 6.5 of 8 pairs
    assert roc_auc(R, mask(0, 3)) == pytest.approx(6.5 / 8)


def test_the_pointing_game_tolerance_is_in_millimetres():
    g = mask(5)  # the maximum (voxel 0, at z, y, x = 0, 0, 0) is sqrt(1 + 4) voxels from voxel 5 (0, 1, 2)
    assert pointing_game(R, g) == 0.0
    assert pointing_game(R, g, tolerance_mm=2.2) == 0.0
    assert pointing_game(R, g, tolerance_mm=2.3) == 1.0
    assert pointing_game(R, g, spacing=(1.0, 2.0, 1.0), tolerance_mm=2.3) == 0.0  # sqrt(4 + 4) mm
    assert pointing_game(R, g, spacing=(1.0, 2.0, 1.0), tolerance_mm=2.9) == 1.0


def test_empty_masks_give_nan_and_bad_arguments_are_refused():
    empty = np.zeros((1, 2, 3), bool)
    for f in (relevance_mass_accuracy, relevance_rank_accuracy, pointing_game, top_k_intersection, roc_auc):
        assert np.isnan(f(R, empty) if f is not top_k_intersection else f(R, empty, k=2))
    assert np.isnan(roc_auc(R, ~empty))
    with pytest.raises(ValueError, match="k=7"):
        top_k_intersection(R, mask(0), k=7)
    with pytest.raises(ValueError, match="shape"):
        relevance_mass_accuracy(R, np.ones((2, 3), bool))


def test_the_ground_truth_itself_scores_best_and_a_random_map_near_chance():
    rng = np.random.default_rng(0)
    g = np.zeros((8, 9, 10), bool)
    g[2:5, 3:6, 4:8] = True
    perfect = g[None].astype(float)
    noise = rng.random((2, 8, 9, 10))
    assert relevance_mass_accuracy(perfect, g) == 1.0 and relevance_rank_accuracy(perfect, g) == 1.0
    assert roc_auc(perfect, g) == 1.0 and pointing_game(perfect, g) == 1.0
    assert relevance_mass_accuracy(noise, g) == pytest.approx(g.mean(), abs=0.02)
    assert roc_auc(noise, g) == pytest.approx(0.5, abs=0.1)


def test_equal_to_quantus_on_the_same_scores():
    quantus = import_quantus()
    rng = np.random.default_rng(3)
    relevance = rng.normal(size=(3, 5, 6, 7))
    g = rng.random((5, 6, 7)) < 0.2
    for part in ("positive", "absolute"):
        s = voxel_scores(relevance, part)
        a, sb = s[None, None], g[None, None].astype(float)
        kw = {"disable_warnings": True, "abs": False, "normalise": False}
        assert relevance_mass_accuracy(relevance, g, part) == pytest.approx(
            quantus.RelevanceMassAccuracy(**kw).evaluate_batch(a_batch=a.copy(), s_batch=sb)[0], abs=1e-12)
        assert relevance_rank_accuracy(relevance, g, part) == pytest.approx(
            quantus.RelevanceRankAccuracy(**kw).evaluate_batch(a_batch=a.copy(), s_batch=sb)[0], abs=1e-12)
        assert pointing_game(relevance, g, part=part) == float(
            quantus.PointingGame(**kw).evaluate_batch(a_batch=a.copy(), s_batch=sb)[0])
        assert top_k_intersection(relevance, g, k=20, part=part) == pytest.approx(
            quantus.TopKIntersection(k=20, **kw).evaluate_batch(a_batch=a.copy(), s_batch=sb)[0], abs=1e-12)
        assert roc_auc(relevance, g, part) == pytest.approx(
            quantus.AUC(**kw).evaluate_batch(a_batch=a.copy(), s_batch=sb)[0], abs=1e-12)


def test_top_voxels_is_the_head_of_a_stable_descending_sort():
    from napari_lrp.metrics.localisation import top_voxels

    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    for k in (1, 7, 50, 299, 300, 400):
        expected = np.argsort(-scores, kind="stable")[:k]
        assert sorted(top_voxels(scores, k)) == sorted(expected), k
