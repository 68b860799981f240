"""Model-parameter randomisation."""

import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.analysis.sanity import map_similarity, randomisation_steps, randomised, sanity_check
from tests.conftest import make_case_folder, make_tiny_model


def test_map_similarity_hand_values():
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert map_similarity(a, a)["spearman"] == pytest.approx(1.0)
    assert map_similarity(a, -a)["spearman_signed"] == pytest.approx(-1.0)
    assert map_similarity(a, -a)["spearman"] == pytest.approx(1.0)  # the |.| maps are the same
    assert map_similarity(a, a + 0.5, top=2 / 24)["top_overlap"] == 1.0  # the same two top voxels (22, 23)
    b = a[..., ::-1].copy()  # the top voxel 23 moves from (1, 2, 3) to (1, 2, 0)
    assert map_similarity(a, b, top=1 / 24)["top_overlap"] == 0.0
    assert map_similarity(a, b, top=4 / 24)["top_overlap"] == 1.0  # the last row (20..23) as a set


def test_randomised_copy_changes_exactly_the_named_blocks(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    steps = randomisation_steps(model.network)
    assert steps[0] == "head" and steps[-1] == "encoders.0" and "decoders.2" in steps
    net = randomised(model.network, ["decoders.2"], seed=3)
    before, after = dict(model.network.named_parameters()), dict(net.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("decoders.2.") for n in changed)
    assert not any(torch.equal(before[n], after[n]) for n in before if n.startswith("decoders.2.") and
                   n.endswith("0.weight"))


def test_cascading_table_and_the_gradient_decorrelates(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    case = nl.load_case(make_case_folder(tmp_path / "case", shape=(12, 10, 5)))
    t = sanity_check(model, case, method="gradient", target="groundtruth")
    assert list(t.columns) == ["step", "randomised", "mode", "method", "spearman", "spearman_signed", "ssim",
                               "top_overlap"]
    assert t.iloc[0].spearman == pytest.approx(1.0) and list(t.randomised)[-1] == "all"
    assert len(t) == len(randomisation_steps(model.network)) + 2
    assert abs(t.iloc[-1].spearman_signed) < 0.5  # an untrained copy's signed map is another map
    ind = sanity_check(model, case, method="gradient", mode="independent", target="groundtruth")
    assert (ind["mode"] == "independent").all()
    with pytest.raises(ValueError, match="cascading"):
        sanity_check(model, case, mode="sideways")
