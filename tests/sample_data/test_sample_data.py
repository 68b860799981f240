"""The shipped sample cohort and model: quality, reproducibility, size, and what LRP says about them."""

import importlib.util
import sys

import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.metrics import dice, groundtruth_inclusivity
from napari_lrp.samples import sample_case_paths, sample_model_path, sample_root


def test_three_cases_weights_and_card_within_15_mb():
    assert len(sample_case_paths()) >= 3
    assert sample_model_path().exists() and (sample_model_path().parent / "model.pt").exists()
    total = sum(p.stat().st_size for p in sample_root().rglob("*") if p.is_file())
    assert total <= 15 * 2**20, total


def test_shipped_model_segments_held_out_cases():
    model = nl.load_model(sample_model_path(), device="cpu")
    scores = []
    for p in sample_case_paths():
        case = nl.load_case(p)
        exp = nl.explain(model, case, preset="lrp0")
        scores.append(dice(exp.prediction, case.label))
    print("held-out Dice", np.round(scores, 3))
    assert np.mean(scores) >= 0.7


def test_paper_relevance_points_at_the_lesion():
    model = nl.load_model(sample_model_path(), device="cpu")
    case = nl.load_case(sample_case_paths()[0])
    exp = nl.explain(model, case, preset="paper")
    rng = np.random.default_rng(0)
    random_map = rng.standard_normal(exp.relevance.shape).astype(np.float32)
    ours = groundtruth_inclusivity(exp.relevance, case.label).mean
    rand = groundtruth_inclusivity(random_map, case.label).mean
    assert ours > rand
    pos = np.clip(exp.relevance, 0, None).sum(0)
    lesion = case.label > 0
    brain = (case.image[0] > 0) & ~lesion
    print(f"GT inclusivity {ours:.3f} vs random {rand:.3f}; positive relevance per voxel "
          f"lesion {pos[lesion].mean():.3g} vs rest {pos[brain].mean():.3g}")
    assert pos[lesion].mean() > pos[brain].mean()


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="nilearn regenerates the cohort")
def test_regenerating_a_shipped_case_reproduces_it():
    sys.path.insert(0, str(sample_root()))
    from make_cohort import MODALITIES, stored_maps

    for p in sample_case_paths()[:2]:
        seed = int(p.name.split("_")[1])
        case = nl.load_case(p)
        maps = stored_maps(seed)
        for c, m in enumerate(MODALITIES):
            np.testing.assert_allclose(case.image[c], maps[m].transpose(2, 1, 0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(case.label, maps["OT"].transpose(2, 1, 0))
