"""Lesions one by one and researchers' targets (metrics/components.py): hand values, scipy as the oracle of
the components, the start relevance of each target kind, linearity for contrasts, the ledger for every kind."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

import napari_lrp as nl
from napari_lrp.metrics.components import border_band, components_table, label_components, resolve_target
from napari_lrp.models import UNet3D
from tests.conftest import ISLES, make_case_folder


def test_components_are_26_connected_and_numbered_from_the_largest():
    m = np.zeros((5, 6, 6), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner neighbours: one lesion under 26-connectivity (two under 6)
    m[3:5, 3:6, 3:6] = True  # 18 voxels: the largest
    m[0, 5, 5] = True  # a single voxel, after the 2-voxel lesion (same size 1 < 2)
    labels, n = label_components(m)
    assert n == 3
    assert (labels == 1).sum() == 18 and labels[4, 5, 5] == 1
    assert labels[0, 0, 0] == labels[1, 1, 1] == 2 and labels[0, 5, 5] == 3
    ref, n_ref = ndimage.label(m, structure=np.ones((3, 3, 3)))
    assert n_ref == n
    # the same partition as scipy's (up to the numbering)
    pairs = {(int(a), int(b)) for a, b in zip(labels[m], ref[m])}
    assert len(pairs) == n


def test_border_band_is_measured_in_mm_on_an_anisotropic_grid():
    m = np.zeros((3, 4, 10), bool)
    m[:, :, 5:] = True  # the surface between x = 4 and x = 5; spacing (4.0, 2.0, 1.5) mm
    band = border_band(m, (4.0, 2.0, 1.5), 1.5)
    # the surface lies at x = 4.5 (voxels 1.5 mm): centres 0.75 and 2.25 mm from it on either side are within
    # 1.5 mm... only 0.75 is; so one voxel each side; Z and Y (4 and 2 mm voxels) never reach across
    assert band[0, 0].tolist() == [False] * 4 + [True, True] + [False] * 4
    assert (band == band[:1, :1]).all()
    wide = border_band(m, (4.0, 2.0, 1.5), 3.0)  # 0.75 and 2.25 mm in, 3.75 mm out
    assert wide[0, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 3
    assert not border_band(m, (4.0, 2.0, 1.5), 0.7).any()  # no centre is within 0.7 mm of the surface


def test_components_table_hand_values():
    pred = np.zeros((4, 4, 4), bool)
    truth = np.zeros((4, 4, 4), bool)
    pred[0, 0, 0:2] = True  # 2 voxels, overlapping the first ground-truth lesion
    truth[0, 0, 1:4] = True  # 3 voxels
    truth[3, 3, 3] = True  # 1 voxel, missed
    pred[3, 0, 3] = True  # 1 voxel, a false positive
    t = components_table(pred, truth, (2.0, 1.0, 1.0))
    p = t[t.source == "prediction"].set_index("component")
    g = t[t.source == "ground truth"].set_index("component")
    assert p.loc[1, "voxels"] == 2 and p.loc[1, "status"] == "true positive"
    assert p.loc[1, "dice"] == pytest.approx(2 * 1 / (2 + 3))
    assert p.loc[2, "status"] == "false positive" and p.loc[2, "dice"] == 0
    assert g.loc[1, "voxels"] == 3 and g.loc[1, "status"] == "detected" and g.loc[2, "status"] == "missed"
    assert g.loc[1, "volume_ml"] == pytest.approx(3 * 2.0 / 1000)
    assert (p.loc[1, ["centre_z", "centre_y", "centre_x"]].tolist()) == [0.0, 0.0, 0.5]


@pytest.fixture(scope="module")
def two_lesions(tmp_path_factory):
    """A float64 UNet3D and a case with two ground-truth lesions."""
    tmp = tmp_path_factory.mktemp("targets")
    torch.manual_seed(3)
    card = {"name": "t", "architecture": {"class": "napari_lrp.models.UNet3D",
                                          "kwargs": {"in_channels": 6, "out_channels": 3, "width": 4}},
            "modalities": list(ISLES), "classes": ["background", "lesion", "oedema"],
            "input": {"intensity": "minmax", "divisible": 1}}
    model = nl.load_model(nl.save_model(UNet3D(6, 3, width=4).eval(), card, tmp / "m"))
    model.network.double()
    folder = make_case_folder(tmp / "case", shape=(16, 12, 8))
    case = nl.load_case(folder)  # napari order (Z, Y, X) = (8, 12, 16)
    case.label[:] = 0
    case.label[1:4, 2:5, 2:5] = 1
    case.label[5:7, 8:10, 10:12] = 1
    # the head's bias so that about half the voxels are predicted 'lesion' (a random network predicts one class)
    from napari_lrp.pipeline import predict_case

    _pred, logits, _ = predict_case(model, case)
    margin = logits[1] - np.maximum(logits[0], logits[2])
    with torch.no_grad():
        model.network.head.bias[1] -= float(np.median(margin))
    return model, case


def _region_start(exp):
    """The start relevance on the case grid (a card without padding: the model grid is the case grid)."""
    return exp._run.start[0].double().cpu().numpy()


@pytest.mark.parametrize("spec", ["class:lesion", "component:1", "gt-component:2", "false-negative",
                                  "false-positive", "border:2.5", "contrast:lesion-oedema", "region:1"])
def test_every_target_starts_where_it_says_and_balances(two_lesions, spec):
    model, case = two_lesions
    try:
        exp = nl.explain(model, case, target=spec, preset="epsilon-plus-flat")
    except ValueError as exc:  # a region this random network leaves empty is refused by name
        assert "is empty in this case" in str(exc) and spec in str(exc)
        return
    start = _region_start(exp)
    region = exp.target_region()
    cls = exp.target_class
    logits = exp.logits.astype(np.float64)
    np.testing.assert_allclose(start[cls], logits[cls] * region, atol=1e-12)
    others = [k for k in range(3) if k != cls]
    if spec.startswith("contrast:"):
        np.testing.assert_allclose(start[2], -logits[2] * region, atol=1e-12)
        others = [0]
    assert all(not start[k].any() for k in others)
    assert exp.ledger.start == pytest.approx(float(start.sum()), rel=1e-9)
    assert abs(exp.ledger.unaccounted) <= 1e-5
    assert nl.explain(model, case, settings=json.loads(json.dumps(exp.settings()))).relevance.tolist() == \
        exp.relevance.tolist()


def test_false_negative_starts_exactly_on_ground_truth_minus_prediction(two_lesions):
    model, case = two_lesions
    pred = nl.explain(model, case, target="output").prediction
    truth = case.ground_truth
    want = truth & (pred != 1)
    if not want.any():
        pytest.skip("the random network predicts every ground-truth voxel")
    exp = nl.explain(model, case, target="false-negative")
    start = _region_start(exp)[1]
    np.testing.assert_array_equal(start != 0, want & (exp.logits[1] != 0))


def test_component_targets_pick_one_lesion(two_lesions):
    model, case = two_lesions
    exp = nl.explain(model, case, target="gt-component:1")
    labels, n = label_components(case.ground_truth)
    assert n == 2
    np.testing.assert_array_equal(exp.target_region(), labels == 1)
    assert exp.target_region().sum() == 27  # the 3x3x3 lesion is the larger
    with pytest.raises(ValueError, match="has 2 component"):
        nl.explain(model, case, target="gt-component:3")
    table = exp.components()
    assert set(table.source) <= {"prediction", "ground truth"}
    assert (table[table.source == "ground truth"].voxels.tolist()) == [27, 8]


def test_contrast_is_the_difference_of_the_two_class_maps(two_lesions):
    model, case = two_lesions
    exp = nl.explain(model, case, target="contrast:lesion-oedema", preset="epsilon-plus-flat")
    region = exp.target_region()
    a = nl.explain(model, case, target=region, target_class=1, preset="epsilon-plus-flat")
    b = nl.explain(model, case, target=region, target_class=2, preset="epsilon-plus-flat")
    diff = a.relevance.astype(np.float64) - b.relevance.astype(np.float64)
    scale = float(np.abs(diff).max())
    assert scale > 0
    np.testing.assert_allclose(exp.relevance, diff, atol=1e-6 * scale)


@pytest.mark.parametrize("spec, match", [("class:tumour", "no class 'tumour'"), ("border:-1", "width"),
                                         ("component:x", "not a component number"),
                                         ("contrast:lesion-lesion", "two different classes"),
                                         ("lesions:1", "unknown target")])
def test_bad_target_specs_are_refused_by_name(two_lesions, spec, match):
    model, case = two_lesions
    with pytest.raises(ValueError, match=match):
        nl.explain(model, case, target=spec)


def test_a_target_needing_a_label_on_a_case_without_one_is_refused():
    target, _cls = resolve_target("false-negative", ["background", "lesion"], 1, lambda cls: None, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="needs a case with a ground-truth label"):
        target.region(np.zeros((2, 2, 2), np.uint8))


def test_lesion_wise_rows_use_each_lesions_own_map(two_lesions):
    model, case = two_lesions
    exp = nl.explain(model, case, preset="epsilon-plus-flat")
    table = exp.lesions()
    comps = exp.components()
    assert len(table) == len(comps) and list(table.target[table.source == "ground truth"]) == [
        "gt-component:1", "gt-component:2"]
    one = nl.explain(model, case, preset="epsilon-plus-flat", target="gt-component:1")
    mine = exp.for_target("gt-component:1")
    np.testing.assert_allclose(mine.relevance, one.relevance, rtol=1e-6, atol=1e-9)
    row = table[table.target == "gt-component:1"].iloc[0]
    assert row.start_relevance == pytest.approx(one.ledger.start)
    c = one.coefficients()
    assert row.groundtruth_inclusivity == pytest.approx(float(c[c.channel == "mean"].groundtruth_inclusivity.iloc[0]))


def test_for_target_on_a_tiled_run_equals_a_tiled_run_of_that_target(two_lesions):
    model, case = two_lesions
    kw = dict(preset="epsilon-plus-flat", window=(8, 8, 8), overlap=0.5)
    exp = nl.explain(model, case, **kw)
    want = nl.explain(model, case, target="gt-component:2", **kw)
    np.testing.assert_allclose(exp.for_target("gt-component:2").relevance, want.relevance, rtol=1e-6, atol=1e-9)
