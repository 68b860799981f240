"""The MONAI Model Zoo's 13 3D segmentation bundles with their configurations unchanged (tests/data/zoo, from
Project-MONAI/model-zoo) and random weights where their checkpoint loaders read them. Each one explains, with
MONAI's own pipeline (its ConfigParser, transforms, inferer and inverse) as the oracle, or is refused with a
reason that names what stops it: none fails silently."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.models.architectures import build_network
from napari_lrp.models.bundles import card_from_bundle
from napari_lrp.pipeline import predict_case

ZOO = Path(__file__).resolve().parents[1] / "data" / "zoo"
BUNDLES = sorted(p.name for p in ZOO.iterdir() if (p / "configs").is_dir())

#: free memory the outcomes are decided at (this machine's 24 GiB), so that they do not depend on the machine
FREE = 21 * 2**30

#: what each bundle gets with its configuration as published: None runs (and equals MONAI below), a pattern
#: is the refusal, which names the file, the entry and the reason
OUTCOME = {
    "brats_mri_segmentation": r"LRP of one window \(inferer.roi_size \(240, 240, 160\)\) needs about 44",
    "multi_organ_segmentation": r"arch_ckpt: .*torch.load.* No such file .*search_code_18590.pt",
    "pancreas_ct_dints_segmentation": r"arch_ckpt: .*torch.load.* No such file .*search_code_18590.pt",
    "pediatric_abdominal_ct_segmentation": None,
    "prostate_mri_anatomy": None,
    "renalStructures_CECT_segmentation": r"transforms\[4\]._target_ 'scripts.my_transforms.ConcatImages' is outside",
    "renalStructures_UNEST_segmentation": r"'scripts.networks.unest.UNesT' is not on the allow-list",
    "segmentation_template": None,
    "spleen_ct_segmentation": None,
    "spleen_deepedit_annotation": r"'scripts.transforms.OrientationGuidanceMultipleLabelDeepEditd' is outside",
    "swin_unetr_btcv_segmentation": r"LRP of one window \(inferer.roi_size \(96, 96, 96\)\) needs about 2\d\.\d+ GB",
    "wholeBody_ct_segmentation": None,
    "wholeBrainSeg_Large_UNEST_segmentation": r"'scripts.networks.unest_base_patch_4.UNesT' is not on the allow-list",
}

#: network widths reduced for the suite's time and memory (the published widths run too: benchmarks/zoo_bundles.py
#: measures them); the configuration's pipeline, inferer and postprocessing stay as published
REDUCED = {
    "pediatric_abdominal_ct_segmentation": {"filters": [8, 16, 16, 32, 32, 32]},
    "wholeBody_ct_segmentation": {"init_filters": 8},
}

#: the synthetic CT's size (i, j, k) per bundle: one sliding window after the bundle's resampling
CASE_SHAPE = {"prostate_mri_anatomy": (24, 24, 10), "segmentation_template": (64, 64, 32)}


def test_every_published_3d_bundle_is_covered():
    assert BUNDLES == sorted(OUTCOME) and len(BUNDLES) == 13


def _bundle(tmp: Path, name: str, reduce: bool = False) -> Path:
    """A copy of the published bundle with random weights where its checkpoint loader reads them."""
    folder = tmp / name
    shutil.copytree(ZOO / name, folder)
    if reduce and name in REDUCED:
        _edit_network(folder, REDUCED[name])
    try:
        card, weights = card_from_bundle(folder)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = build_network(card, name)
    except ModelError:
        return folder  # refused before any weights are read
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    return folder


def _edit_network(folder: Path, changes: dict) -> None:
    import json

    import yaml

    (path,) = [p for p in (folder / "configs").glob("inference.*")]
    doc = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    doc["network_def"].update(changes)
    path.write_text(json.dumps(doc) if path.suffix == ".json" else yaml.safe_dump(doc))


def _ct_case(folder: Path, shape=(60, 60, 30)) -> Path:
    """A CT as a scanner writes it: LPS-like affine (x and y flipped), 1.5 x 1.5 x 2.5 mm, HU values with a
    bright organ and air outside the body."""
    rng = np.random.default_rng(1)
    img = rng.normal(40, 20, shape).astype(np.float32)
    i, j, k = shape
    img[: i // 8] = -1000
    img[i // 4: i // 2, j // 3: 2 * j // 3, k // 4: 3 * k // 4] += 120
    affine = np.diag([-1.5, -1.5, 2.5, 1.0])
    affine[:3, 3] = [100.0, 120.0, -50.0]
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, affine), str(folder / "image.nii.gz"))
    return folder / "image.nii.gz"


@pytest.fixture
def published_memory(monkeypatch):
    import psutil

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=FREE))


@pytest.mark.parametrize("name", BUNDLES)
def test_each_published_bundle_loads_or_is_refused_by_name(tmp_path, name, published_memory):
    folder = _bundle(tmp_path, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if OUTCOME[name] is None:
            model = nl.load_model(folder, device="cpu")
            assert model.pipeline is not None
        else:
            with pytest.raises(ModelError, match=OUTCOME[name]):
                nl.load_model(folder, device="cpu")
    if name == "swin_unetr_btcv_segmentation":  # MONAI 1.5 removed img_size: dropped, and said so
        assert any("SwinUNETR argument img_size=96 is dropped" in str(w.message) for w in caught)


def _monai_logits(folder: Path, image: Path, network) -> tuple[np.ndarray, dict]:
    """MONAI's own run: the bundle's preprocessing and inferer built by its ConfigParser, the network with our
    random weights, the logits mapped back by the preprocessing's inverse (as Invertd does)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    (path,) = [p for p in (folder / "configs").glob("inference.*")]
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(folder)
    parser["device"] = "$torch.device('cpu')"
    transforms = parser["preprocessing#transforms"]
    for i, t in enumerate(transforms if isinstance(transforms, list) else []):
        if t.get("reader") == "ITKReader":  # ITK is not installed here; the file is read the same by nibabel
            parser[f"preprocessing#transforms#{i}#reader"] = "NibabelReader"
    pre = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    data = pre({"image": str(image)})
    with torch.no_grad():
        out = inferer(data["image"][None].float(), network)[0]
    pred = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, affine=data["image"].affine)
    pred.applied_operations = data["image"].applied_operations
    return pre.inverse({"image": pred})["image"].as_tensor().numpy(), data


@pytest.mark.parametrize("name", [n for n in BUNDLES if OUTCOME[n] is None])
def test_published_bundles_equal_monais_own_pipeline_and_explain(tmp_path, name):
    folder = _bundle(tmp_path, name, reduce=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nl.load_model(folder, device="cpu")
        image = _ct_case(tmp_path / "case", CASE_SHAPE.get(name, (60, 60, 30)))
        case = nl.load_case(image, modalities=model.card.modalities)
        theirs, _data = _monai_logits(folder, image, model.network)
        _pred, logits, _ = predict_case(model, case)
    ours = np.moveaxis(case.grid.from_napari(logits), -1, 0)  # (K, i, j, k): the file's voxel order
    assert ours.shape == theirs.shape == (len(model.card.classes), *nib.load(str(image)).shape)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    exp = nl.explain(model, case, preset="epsilon-gamma-box")
    assert exp.relevance.shape == (1, *case.shape) and np.isfinite(exp.relevance).all()
    assert abs(exp.ledger.unaccounted) <= 1e-5 * max(abs(exp.ledger.start), 1.0), exp.ledger.unaccounted
