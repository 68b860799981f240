"""Repeatability: the mean pairwise agreement of several maps of one explanation."""

import numpy as np
import pytest

from napari_lrp.metrics.similarity import map_similarity, repeatability


def test_identical_maps_agree_fully_and_pairs_are_counted():
    m = np.random.default_rng(0).normal(size=(2, 6, 8, 9))
    r = repeatability([m, m.copy(), m.copy()])
    assert r["pairs"] == 3.0
    assert r["spearman"] == pytest.approx(1.0) and r["top_overlap"] == 1.0 and r["ssim"] == pytest.approx(1.0)


def test_the_mean_of_the_pairs():
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(1, 5, 8, 8)) for _ in range(3)]
    pairs = [map_similarity(maps[0], maps[1]), map_similarity(maps[0], maps[2]), map_similarity(maps[1], maps[2])]
    r = repeatability(maps)
    for key in ("spearman", "spearman_signed", "ssim", "top_overlap"):
        assert r[key] == pytest.approx(np.mean([p[key] for p in pairs]), abs=1e-15)
    with pytest.raises(ValueError, match="at least two"):
        repeatability(maps[:1])


def test_spearman_alone_equals_the_pair_measures():
    from napari_lrp.metrics.similarity import spearman

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 4, 6, 7)), rng.normal(size=(2, 4, 6, 7))
    pair = map_similarity(a, b)
    assert spearman(a, b) == pytest.approx(pair["spearman_signed"], abs=1e-15)
    assert spearman(a, b, signed=False) == pytest.approx(pair["spearman"], abs=1e-15)
    assert spearman(a, np.zeros_like(b)) == 0.0
