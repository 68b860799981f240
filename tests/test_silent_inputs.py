"""Inputs that used to give a finite but wrong result without a word: each is now refused by name or
reproduced exactly. Every test here failed on the code before the fix (see the comment in each)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.batch import sweep_cohort
from napari_lrp.batch.cohort import case_folders
from napari_lrp.cli import main
from napari_lrp.lrp.names import PlacementError
from napari_lrp.models import ModelError
from napari_lrp.models.loading import model_sha256
from napari_lrp.samples import sample_nnunet_path
from tests.conftest import make_case_folder, make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("silent")
    model = make_tiny_model(tmp / "m")
    case = nl.load_case(make_case_folder(tmp / "case_01", shape=(12, 10, 8)))
    return model, case


# ---- placements: a filter, rule or kept layer on a name that matches nothing --------------------------
@pytest.mark.parametrize("kw", [
    {"filters": {"encoder.1": nl.filters.Clamp(0, 0.2)}},   # typo for encoders.1 (was ignored, recorded)
    {"filters": {"nope.*": nl.filters.Pass(0, 0.5)}},       # a glob that matches nothing
    {"rules": {"encoders.9.*": nl.lrp.Epsilon(0.1)}},        # no such block
    {"rules": {"encoders.1": nl.lrp.Epsilon(0.1)}},          # a container: its layers take rules, not it
    {"keep": ["decoder.0"]},                                 # kept relevance that would never be there
])
def test_a_placement_that_matches_no_module_is_refused_with_the_nearest_names(tiny, kw):
    model, case = tiny
    with pytest.raises(PlacementError) as err:
        nl.explain(model, case, target="groundtruth", **kw)
    key = next(iter(next(iter(kw.values()))))
    assert repr(key) in str(err.value)
    if key in ("encoder.1", "encoders.1"):
        assert "encoders.1" in str(err.value).split(repr(key))[-1]  # the name meant is suggested


def test_refilter_and_with_rules_refuse_unknown_names(tiny):
    model, case = tiny
    exp = nl.explain(model, case, target="groundtruth")
    with pytest.raises(PlacementError, match="'nope.\\*'"):
        exp.refilter({"nope.*": nl.filters.Clamp(0, 0.2)})
    with pytest.raises(PlacementError, match="'head.9'"):
        exp.with_rules({"head.9": nl.lrp.Epsilon(0.1)})
    # a correct name still filters: the relevance changes
    assert not np.array_equal(exp.refilter({"encoders.1": nl.filters.Clamp(0, 0.2)}).relevance, exp.relevance)


def test_a_settings_file_with_an_unknown_placement_is_refused(tiny, tmp_path):
    model, case = tiny
    settings = nl.explain(model, case, target="groundtruth").settings()
    settings["filters"] = ["clamp:0.0:0.2@encoder.1"]
    with pytest.raises(PlacementError, match="encoder.1"):
        nl.explain(model, case, settings=settings)


def test_cli_filter_typo_exits_2_naming_the_layer(tmp_path, capsys):
    from napari_lrp.samples import sample_case_path, sample_model_path

    rc = main(["explain", str(sample_case_path(1)), "--model", str(sample_model_path()), "--filter",
               "clamp:0:0.2@encoder.1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder.1" in err and "encoders.1" in err
    assert not (tmp_path / "out").exists()


# ---- settings reproduce the run -------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"rules": {"encoders.1.*": nl.lrp.Gamma(0.5), torch.nn.ConvTranspose3d: nl.lrp.Epsilon(0.1)}},
    {"window": (8, 8, 8), "overlap": 0.25, "blend": "constant"},
    {"mc_samples": 3, "dropout": 0.2, "seed": 5},
    {"filters": {"encoders.2.*": nl.filters.Pass(0.05, 1.0), "input": nl.filters.Clamp(0, 0.5)}},
])
def test_settings_json_reproduces_the_relevance_bit_for_bit(tiny, kw):
    model, case = tiny
    exp = nl.explain(model, case, target="groundtruth", **kw)
    plain = nl.explain(model, case, target="groundtruth")
    assert not np.array_equal(exp.relevance, plain.relevance)  # the argument changes the map
    again = nl.explain(model, case, settings=json.loads(json.dumps(exp.settings())))
    assert np.array_equal(again.relevance, exp.relevance)


def test_with_rules_is_recorded_in_the_settings(tiny):
    model, case = tiny
    exp = nl.explain(model, case, target="groundtruth", preset="lrp0").with_rules(
        {torch.nn.Conv3d: nl.lrp.Epsilon(0.5)})
    specs = exp.settings()["rules"]
    assert specs == [{"at": "type:Conv3d", "rule": "Epsilon", "params": {"epsilon": 0.5}}]
    assert np.array_equal(nl.explain(model, case, settings=exp.settings()).relevance, exp.relevance)


# ---- duplicate channel names in folders and bundles -----------------------------------------------------
@pytest.mark.parametrize("names", [{"0": "ADC", "1": "ADC"}, {"0": "ADC", "1": "adc"}])
def test_nnunet_duplicate_channel_names_are_refused(tmp_path, names):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    ds = json.loads((folder / "dataset.json").read_text())
    channels = ds["channel_names"]
    channels.update(names)
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(ModelError, match="dataset.json.*channel_names.*more than once"):
        nl.load_model(folder)


def test_bundle_duplicate_channel_def_is_refused(tmp_path):
    from napari_lrp.models.bundles import card_from_bundle

    b = tmp_path / "bundle"
    (b / "configs").mkdir(parents=True)
    (b / "models").mkdir()
    (b / "configs" / "inference.json").write_text(json.dumps({"network_def": {
        "_target_": "UNet", "spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8],
        "strides": [2]}}))
    (b / "configs" / "metadata.json").write_text(json.dumps({"network_data_format": {
        "inputs": {"image": {"num_channels": 2, "channel_def": {"0": "T1", "1": "t1"}}},
        "outputs": {"pred": {"num_channels": 2}}}}))
    with pytest.raises(ModelError, match="metadata.json.*channel_def.*more than once"):
        card_from_bundle(b)


# ---- the model's identity covers its definition, not only its weights ----------------------------------
def test_editing_the_card_changes_the_model_identity_and_the_sweep_recomputes(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    cohort = tmp_path / "cohort"
    make_case_folder(cohort / "case_01", shape=(12, 10, 8))
    grid = dict(workers=0, show_progress=False, target="groundtruth")
    first = sweep_cohort(cohort, tmp_path / "m", tmp_path / "out", **grid)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    card["target_class"] = 0  # the weights file is unchanged
    (tmp_path / "m" / "card.json").write_text(json.dumps(card))
    assert model_sha256(tmp_path / "m") != model.sha256
    assert nl.load_model(tmp_path / "m").sha256 == model_sha256(tmp_path / "m")
    second = sweep_cohort(cohort, tmp_path / "m", tmp_path / "out", **grid)
    assert set(second.model_sha256) == {model_sha256(tmp_path / "m")}
    numeric = [c for c in first.select_dtypes("number").columns]
    assert numeric and not np.allclose(first[numeric].to_numpy(float), second[numeric].to_numpy(float),
                                       equal_nan=True)  # recomputed with the edited card, not reused


def test_nnunet_identity_covers_plans_and_dataset(tmp_path):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    before = model_sha256(folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["plans_name"] = plans.get("plans_name", "p") + "_edited"
    (folder / "plans.json").write_text(json.dumps(plans))
    assert model_sha256(folder) != before


# ---- cohort folder names that collide after decoding ---------------------------------------------------
def test_case_folders_whose_names_read_alike_are_refused(tmp_path):
    root = tmp_path / "cohort"
    root.mkdir()
    os.mkdir(os.path.join(os.fsencode(root), b"cas\xe9"))  # Latin-1, from an old archive
    (root / "casé").mkdir()  # UTF-8
    with pytest.raises(ValueError, match="read as the same name 'casé'"):
        case_folders(root)


def test_sweep_with_negative_workers_is_refused_before_any_work(tmp_path):
    make_case_folder(tmp_path / "cohort" / "case_01")
    with pytest.raises(ValueError, match="workers must be a whole number >= 0"):
        sweep_cohort(tmp_path / "cohort", tmp_path / "m", tmp_path / "out", workers=-1)
    assert not (tmp_path / "out").exists()


# ---- outputs never inside an input, never over a mount point, never mixed with another run -------------
def test_results_inside_the_case_folder_are_refused(tiny, tmp_path):
    model, case = tiny
    exp = nl.explain(model, case, target="groundtruth")
    case_dir = Path(os.path.commonpath([os.path.dirname(f) for f in case.files]))
    before = sorted(p.name for p in case_dir.rglob("*"))
    for out in (case_dir, case_dir / "results"):
        with pytest.raises(ValueError, match="inside the case"):
            exp.save(out)
    assert sorted(p.name for p in case_dir.rglob("*")) == before


def test_cli_out_equal_to_the_case_folder_exits_2(tmp_path, capsys):
    from napari_lrp.samples import sample_model_path

    case_dir = make_case_folder(tmp_path / "case_01", shape=(12, 10, 8))
    before = sorted(p.name for p in case_dir.rglob("*"))
    rc = main(["explain", str(case_dir), "--model", str(sample_model_path()), "--out", str(case_dir)])
    assert rc == 2 and "inside the case" in capsys.readouterr().err
    assert sorted(p.name for p in case_dir.rglob("*")) == before


def test_a_mount_point_in_the_results_folder_is_never_moved_or_emptied(tiny, tmp_path, monkeypatch):
    model, case = tiny
    exp = nl.explain(model, case, target="groundtruth")
    out = tmp_path / "out"
    out.mkdir()
    mounted = out / "relevance_sum.nii.gz"  # a mount point exactly where a result would go
    mounted.mkdir()
    (mounted / "data.bin").write_bytes(b"keep me")
    other = out / "scratch"  # and one beside the results
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) in (mounted, other) or real(p))
    with pytest.raises(OSError, match="mount point"):
        exp.save(out)
    assert (mounted / "data.bin").read_bytes() == b"keep me" and sorted(p.name for p in out.iterdir()) == [
        "relevance_sum.nii.gz", "scratch"]
    shutil.rmtree(mounted)
    exp.save(out)  # the other mount point is left where it is, with its files
    assert (other / "notes.txt").read_text() == "mine"


def test_a_save_replaces_the_previous_runs_outputs_and_keeps_foreign_files(tiny, tmp_path):
    model, case = tiny
    out = tmp_path / "out"
    drawn = nl.explain(model, case, target="groundtruth", mc_samples=2, dropout=0.2)
    drawn.save(out)
    (out / "my_notes.txt").write_text("mine")
    assert (out / f"relevance_std_{case.modalities[0]}.nii.gz").exists()
    plain = nl.explain(model, case, target="groundtruth")
    written = plain.save(out)
    on_disk = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert on_disk == sorted([p.name for p in written] + ["my_notes.txt"])  # no file of the drawn run stays
    settings = json.loads((out / "settings.json").read_text())
    assert sorted(settings["outputs"]) == sorted(p.name for p in written)
    assert (out / "my_notes.txt").read_text() == "mine"


def test_a_symlinked_results_folder_stays_a_link(tiny, tmp_path):
    model, case = tiny
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    exp = nl.explain(model, case, target="groundtruth")
    exp.save(link)
    exp.save(link)
    assert link.is_symlink() and (real / "settings.json").is_file()
