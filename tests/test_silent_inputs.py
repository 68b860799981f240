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


# ---- the minor kinds: messages that name the file and the fix, nothing accepted without a word ------------
def _nn_copy(tmp_path):
    return Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))


def test_nnunet_folder_without_plans_is_named_as_such(tmp_path):
    folder = _nn_copy(tmp_path)
    (folder / "plans.json").unlink()
    with pytest.raises(ModelError, match="nnU-Net results folder without plans.json"):
        nl.load_model(folder)


@pytest.mark.parametrize("content, match", [(b"", "is empty"),
                                            (b"PK\x03\x04trunc", "corrupt or not a PyTorch file .*truncated")])
def test_empty_or_truncated_checkpoints_are_named_so(tmp_path, content, match):
    folder = _nn_copy(tmp_path)
    for ck in folder.glob("fold_*/checkpoint_final.pth"):
        ck.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        nl.load_model(folder)


def test_nnunet_ignore_label_is_not_an_output(tmp_path):
    folder = _nn_copy(tmp_path)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"]["ignore"] = 2
    (folder / "dataset.json").write_text(json.dumps(ds))
    assert nl.load_model(folder).card.classes == ["background", "lesion"]


def test_ct_normalisation_without_intensity_properties_is_refused(tmp_path):
    folder = _nn_copy(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    for cfg in plans["configurations"].values():
        cfg["normalization_schemes"] = ["CTNormalization"] * len(cfg["normalization_schemes"])
    plans["foreground_intensity_properties_per_channel"] = {}
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="CTNormalization but 'foreground_intensity_properties_per_channel.0' lacks"):
        nl.load_model(folder)


def test_a_broken_fold_link_is_refused_not_a_smaller_ensemble(tmp_path):
    folder = _nn_copy(tmp_path)
    shutil.rmtree(folder / "fold_1")
    (folder / "fold_1").symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(ModelError, match="fold_1 is not a folder"):
        nl.load_model(folder)


@pytest.mark.parametrize("argv, match", [(["--fold", "abc"], "give a fold number"),
                                         (["--fold", "0,0"], "names a fold twice")])
def test_cli_fold_values_are_refused_by_name(tmp_path, capsys, argv, match):
    from napari_lrp.samples import sample_case_path

    rc = main(["explain", str(sample_case_path(1)), "--model", str(sample_nnunet_path()), *argv, "--out",
               str(tmp_path / "o")])
    assert rc == 2 and match in capsys.readouterr().err


def test_nnunet_options_with_a_card_are_refused(tiny):
    from napari_lrp.samples import sample_model_path

    for kw in ({"fold": 0}, {"mirroring": True}):
        with pytest.raises(ModelError, match="options of nnU-Net results folders"):
            nl.load_model(sample_model_path(), **kw)


def test_label_value_that_is_not_whole_is_refused(tmp_path):
    from napari_lrp.io import CaseError

    with pytest.raises(CaseError, match="label_values=\\[1.7\\]"):
        nl.load_case(make_case_folder(tmp_path / "c"), label_values=[1.7])


@pytest.mark.parametrize("spec", ["clamp:nan:nan", "pass:0.5:0.1", "clamp:-1:0.5", "amplify:nan:2"])
def test_filters_outside_their_band_are_refused(spec):
    with pytest.raises(ValueError, match="finite|0 <= a1 <= a2"):
        nl.filters.filters_from_specs([spec])


def test_output_index_on_a_single_tensor_output_is_refused(tiny):
    model, case = tiny
    with pytest.raises(TypeError, match="returns one tensor; leave output_index=None"):
        nl.explain(model, case, target="groundtruth", output_index=5)


@pytest.mark.parametrize("gammas", [(-1.0, 0.25), (float("nan"),), ()])
def test_search_gammas_must_be_finite_and_non_negative(tiny, gammas):
    from napari_lrp.analysis.search import lrp_search

    model, case = tiny
    with pytest.raises(ValueError, match="each gamma must be a finite number >= 0"):
        lrp_search(model, case, gammas=gammas, target="groundtruth")


def test_nan_weights_are_refused_at_load(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    sd = model.network.state_dict()
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first][...] = float("nan")
    torch.save(sd, tmp_path / "m" / "model.pt")
    with pytest.raises(ModelError, match=f"{first}.*NaN or Inf"):
        nl.load_model(tmp_path / "m")


def test_inputs_near_the_float32_limit_give_an_error_not_a_nan_map(tmp_path):
    card = {"name": "raw", "architecture": {"class": "napari_lrp.models.UNet3D",
                                            "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"], "input": {"intensity": "none"}}
    from napari_lrp.models import UNet3D

    model = nl.load_model(nl.save_model(UNet3D(6, 2, width=4).eval(), card, tmp_path / "m"))
    case = nl.load_case(make_case_folder(tmp_path / "c", shape=(12, 10, 8)))
    case.image[:] = np.where(np.arange(case.image.size).reshape(case.image.shape) % 2, 2e38, -2e38)
    with pytest.raises((ModelError, ValueError), match="NaN or Inf"):
        nl.explain(model, case, target="groundtruth")


def test_compare_with_no_method_is_refused(tmp_path, capsys):
    from napari_lrp.samples import sample_case_path, sample_model_path

    rc = main(["compare", str(sample_case_path(1)), "--model", str(sample_model_path()), "--methods", "",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "no method named" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [(["--target", "bogus"], "target 'bogus'"),
                                         (["--mc-samples", "3"], "has no Dropout modules"),
                                         (["--preset", "paper", "--device", "cuda"], "no CUDA GPU")])
def test_sweep_arguments_that_would_fail_every_case_are_refused_up_front(tmp_path, capsys, argv, match):
    from napari_lrp.samples import sample_model_path

    make_case_folder(tmp_path / "cohort" / "case_01")
    rc = main(["sweep", str(tmp_path / "cohort"), "--model", str(sample_model_path()), "--workers", "0",
               "--out", str(tmp_path / "out"), *argv])
    assert rc == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out" / "cases").exists()  # a refused sweep leaves no empty cases/


def test_a_results_folder_with_a_long_name_is_written(tiny, tmp_path):
    model, case = tiny
    out = tmp_path / ("r" * 248)  # 248 bytes: the temporary names must not be longer than 255
    written = nl.explain(model, case, target="groundtruth").save(out)
    assert all(p.is_file() for p in written)


def test_demo_with_a_missing_model_path_exits_2(tmp_path, capsys):
    rc = main(["demo", "--headless", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "model file or folder not found" in capsys.readouterr().err
