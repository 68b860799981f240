"""Sizes read from files and arguments are estimated before anything is allocated: over the budget the input
is refused naming the file, the field, the estimate and the fix, and the process does not grow meanwhile
(peak RSS measured around each probe)."""

import json
import resource
import shutil
import zipfile
from pathlib import Path

import pytest

import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.samples import sample_case_path, sample_model_path, sample_nnunet_path
from tests.models.test_bundle_transforms import make_bundle


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def case():
    return nl.load_case(sample_case_path(1))


def _refused(fn, error, match):
    """``fn`` raises ``error`` matching ``match`` and the process's peak memory grows by less than 300 MB."""
    before = _peak_mb()
    with pytest.raises(error, match=match):
        fn()
    assert _peak_mb() - before < 300


def _nnunet(tmp_path, **changes):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    plans = json.loads((folder / "plans.json").read_text())
    for cfg in plans["configurations"].values():
        for key, value in changes.items():
            if key in cfg:
                cfg[key] = value
            else:
                cfg["architecture"]["arch_kwargs"][key] = value
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


@pytest.mark.parametrize("change, match", [
    ({"patch_size": [1024, 1024, 1024]}, r"plans.json: the LRP of one window .*patch \(1024, 1024, 1024\).* GB"),
    ({"features_per_stage": [4096, 8192, 16384]}, r"plans.json: .*million parameters"),
    ({"spacing": [0, 1, 1]}, r"plans.json: configuration '3d_fullres' spacing \[0, 1, 1\] must be"),
    ({"patch_size": [64, -8, 64]}, r"patch_size \[64, -8, 64\] must be three whole sizes"),
])
def test_nnunet_plans_sizes_are_estimated_before_building(tmp_path, change, match):
    folder = _nnunet(tmp_path, **change)
    _refused(lambda: nl.load_model(folder), ModelError, match)


def test_nnunet_spacing_that_resamples_to_terabytes_is_refused_before_resampling(tmp_path, case):
    model = nl.load_model(_nnunet(tmp_path, spacing=[0.01, 0.01, 0.01]))
    _refused(lambda: nl.explain(model, case), ModelError, r"plans.json: case .* resampled .* to the configuration's "
                                                         r"\(0.01, 0.01, 0.01\).* GB")


@pytest.mark.parametrize("changes, match", [
    ({"inferer": {"_target_": "SlidingWindowInferer", "roi_size": [1024, 1024, 1024]}},
     r"the LRP of one window \(inferer.roi_size \(1024, 1024, 1024\)\)"),
])
def test_bundle_roi_size_is_estimated_at_load(tmp_path, changes, match):
    bundle = make_bundle(tmp_path, **changes)
    _refused(lambda: nl.load_model(bundle), ModelError, match)


@pytest.mark.parametrize("transform, match", [
    ({"_target_": "Resized", "keys": "image", "spatial_size": [2048, 2048, 2048]}, r"model grid about \(2048, 2048"),
    ({"_target_": "Spacingd", "keys": "image", "pixdim": [0.02, 0.02, 0.02]}, r"through the bundle's transforms"),
    ({"_target_": "Spacingd", "keys": "image", "pixdim": [0, 1, 1]}, r"pixdim \[0, 1, 1\] must be"),
])
def test_bundle_resampling_sizes_are_estimated_before_the_transforms_run(tmp_path, case, transform, match):
    bundle = make_bundle(tmp_path, resample=False)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg["preprocessing"]["transforms"].insert(3, transform)
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    model = nl.load_model(bundle)
    _refused(lambda: nl.explain(model, case), ModelError, match)


@pytest.mark.parametrize("value", [1e9, 0, 2.5, "six", True])
def test_bundle_num_channels_out_of_range_is_refused(tmp_path, value):
    bundle = make_bundle(tmp_path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = value
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    _refused(lambda: nl.load_model(bundle), ModelError, "num_channels' is .*whole number from 1 to 1024")


def test_bundle_metadata_claiming_other_outputs_than_the_network_is_refused(tmp_path):
    bundle = make_bundle(tmp_path)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"outputs.\*.num_channels' is 3, but the network_def builds 2"):
        nl.load_model(bundle)


def test_bundle_references_that_fan_out_are_refused_quickly(tmp_path):
    bundle = make_bundle(tmp_path)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    for level in range(9):  # a 1 KB file whose references would expand to 10**9 values
        cfg[f"l{level}"] = [f"@l{level + 1}"] * 10
    cfg["l9"] = 1
    cfg["network_def"]["channels"] = "@l0"
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    _refused(lambda: nl.load_model(bundle), ModelError, "expand to more than 100,000 values")


def test_a_small_weights_file_that_unpacks_to_gigabytes_is_refused_before_reading(tmp_path, monkeypatch):
    import psutil

    real = psutil.virtual_memory()
    free = 2 * 2**30  # the machine as one with 2 GiB free, so the probe stays small on any machine
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=free))
    folder = Path(shutil.copytree(sample_model_path().parent, tmp_path / "m"))
    weights = next(p for p in folder.iterdir() if p.suffix in (".pt", ".pth"))
    with zipfile.ZipFile(weights, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 24)
            for _ in range(int(1.5 * 2**30 / len(chunk))):  # 1.5 GiB of zeros (over half the free), 1.5 MB deflated
                fh.write(chunk)
    assert weights.stat().st_size < 8e6
    _refused(lambda: nl.load_model(folder), ModelError, r"unpack to .* GB .* on disk\), more than half the free")


@pytest.mark.parametrize("kw, match", [
    ({"method": "integrated_gradients", "n_steps": 10**9}, r"about 1,000,000,000 passes .* max_passes="),
    ({"method": "integrated_gradients", "n_steps": 0}, r"n_steps=0 must be a whole number >= 1"),
    ({"method": "smoothgrad", "nt_samples": 0}, r"nt_samples=0 must be a whole number >= 1"),
    ({"method": "occlusion", "sliding_window_shapes": (1, 999, 8, 8)}, r"sliding_window_shapes .* between 1 and"),
    ({"method": "occlusion", "strides": (1, 0, 1, 1)}, r"strides .* whole numbers >= 1"),
    ({"method": "occlusion", "sliding_window_shapes": (1, 1, 1, 1)}, r"passes of the network \(more than 10,000\)"),
    ({"window": (4, 4, 4), "overlap": 0.99}, r"takes 71,248 windows .*more than 4,096"),
    ({"max_memory": 2}, r"max_memory is a budget in bytes"),
    ({"max_memory": 0}, r"max_memory is a budget in bytes"),
    ({"max_memory": -1}, r"max_memory is a budget in bytes"),
    ({"overlap": 5}, r"overlap must be a fraction in \[0, 1\)"),
    ({"blend": "bogus"}, r"blend must be one of"),
])
def test_work_is_estimated_before_it_starts(case, kw, match):
    model = nl.load_model(sample_model_path())
    _refused(lambda: nl.explain(model, case, **kw), ValueError, match)


def test_settings_with_a_billion_steps_are_refused_before_any_pass(tmp_path, case):
    model = nl.load_model(sample_model_path())
    settings = {"method": "integrated_gradients", "method_options": {"n_steps": 10**9}, "target": "region"}
    _refused(lambda: nl.explain(model, case, settings=settings), ValueError, r"1,000,000,000 passes")


def test_bundle_references_deeper_than_the_limit_are_refused(tmp_path):
    bundle = make_bundle(tmp_path)
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    for level in range(100):
        cfg[f"d{level}"] = f"@d{level + 1}"
    cfg["d100"] = 2
    cfg["network_def"]["spatial_dims"] = "@d0"
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    _refused(lambda: nl.load_model(bundle), ModelError, "more than 64 references deep")


@pytest.mark.parametrize("name", ["inference.json", "metadata.json"])
def test_bundle_files_that_are_not_utf8_or_not_objects_are_named(tmp_path, name):
    bundle = make_bundle(tmp_path)
    path = bundle / "configs" / name
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ModelError, match=f"{name}: not UTF-8 text"):
        nl.load_model(bundle)
    path.write_text("[1, 2]")
    with pytest.raises(ModelError, match=f"{name}: must hold a JSON object"):
        nl.load_model(bundle)


@pytest.mark.parametrize("name", ["plans.json", "dataset.json"])
def test_nnunet_files_that_are_lists_are_named(tmp_path, name):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    (folder / name).write_text("[]")
    with pytest.raises(ModelError, match=f"{name}: must hold a JSON object"):
        nl.load_model(folder)


def test_nnunet_per_channel_lists_shorter_than_the_channels_are_refused(tmp_path):
    folder = _nnunet(tmp_path, normalization_schemes=["ZScoreNormalization"])
    with pytest.raises(ModelError, match="'normalization_schemes' .* one entry per input channel \\(6\\)"):
        nl.load_model(folder)


def test_nnunet_null_labels_are_named(tmp_path):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = None
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(ModelError, match="dataset.json has no 'labels' mapping"):
        nl.load_model(folder)
