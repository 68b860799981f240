"""MONAI bundles with preprocessing and an inferer: MONAI's own bundle machinery (ConfigParser, LoadImaged,
the inferer, the transforms' inverse as Invertd does it) is the oracle; voxels round-trip exactly."""

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.networks.nets import UNet

import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.pipeline import predict_case
from napari_lrp.samples import sample_case_path, sample_nnunet_path

#: our own code must not make MONAI warn on every bundle run (an affine given twice)
pytestmark = pytest.mark.filterwarnings("error:Setting affine, but the applied meta contains an affine")

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]
NET = {"spatial_dims": 3, "in_channels": 6, "out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2],
       "num_res_units": 1}


def _transforms(resample: bool):
    ts = [{"_target_": "LoadImaged", "keys": "image"},
          {"_target_": "EnsureChannelFirstd", "keys": "image"},
          {"_target_": "Orientationd", "keys": ["image", "label"], "axcodes": "PLI", "allow_missing_keys": True},
          {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 3000.0, "b_min": 0.0,
           "b_max": 1.0, "clip": True},
          {"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "margin": 1},
          {"_target_": "DivisiblePadd", "keys": "image", "k": 4},
          {"_target_": "EnsureTyped", "keys": "image"}]
    if resample:
        ts.insert(3, {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 4.0], "mode": "bilinear"})
    return ts


def make_bundle(root, resample=True, mode="gaussian", network=None, outputs=("background", "lesion"), **changes):
    """A bundle folder as the zoo lays it out; ``network`` a built MONAI network with its network_def."""
    bundle = root / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    net, net_def = network or (UNet(**NET), {"_target_": "UNet", **NET})
    torch.save(net.eval().state_dict(), bundle / "models" / "model.pt")
    inference = {"image_key": "image", "device": "$torch.device('cpu')",  # code elsewhere is never read
                 "network_def": net_def,
                 "preprocessing": {"_target_": "Compose", "transforms": _transforms(resample)},
                 "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "sw_batch_size": 2,
                             "overlap": 0.5, "mode": mode}}
    inference.update(changes)
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    meta = {"name": "tiny stroke bundle", "network_data_format": {
        "inputs": {"image": {"num_channels": 6, "channel_def": {str(i): m for i, m in enumerate(MODS)}}},
        "outputs": {"pred": {"num_channels": len(outputs),
                             "channel_def": {str(i): name for i, name in enumerate(outputs)}}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    return bundle


def _files(case_dir):
    return [str(next(case_dir.glob(f"*MR_{m}.*/*.nii.gz"))) for m in MODS]


@pytest.mark.parametrize("resample,mode", [(True, "gaussian"), (False, "constant")])
def test_logits_equal_monais_own_bundle_run(tmp_path, resample, mode):
    bundle = make_bundle(tmp_path, resample, mode)
    model = nl.load_model(bundle)
    assert model.pipeline is not None and model.card.intensity == "none"
    case = nl.load_case(sample_case_path(1))
    # MONAI: its ConfigParser, LoadImaged of the six files, its inferer, the inverse as Invertd does it
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg.pop("device")
    parser = ConfigParser(cfg)
    pre = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    data = pre({"image": _files(sample_case_path(1))})
    with torch.no_grad():
        out = inferer(data["image"][None].float(), model.network)[0]
    pred = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, affine=data["image"].affine)
    pred.applied_operations = data["image"].applied_operations
    theirs = pre.inverse({"image": pred})["image"].as_tensor().numpy()  # (K, i, j, k) the files' grid
    _pred, logits, _ = predict_case(model, case)
    ours = np.moveaxis(case.grid.from_napari(logits), -1, 0)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    # the model grid: the transforms' output is MONAI's
    prep = model.pipeline.prepare(case, model.card.modalities, model.network, model.device)
    np.testing.assert_allclose(prep.crop(prep.x)[0].numpy(), data["image"].numpy(), rtol=0, atol=1e-5)


def test_a_file_inside_the_bundle_loads_the_bundle(tmp_path):
    bundle = make_bundle(tmp_path)
    for picked in (bundle / "configs" / "inference.json", bundle / "configs" / "metadata.json",
                   bundle / "models" / "model.pt"):
        model = nl.load_model(picked)  # what the widget's file dialog can pick
        assert model.pipeline is not None and model.card.name == "tiny stroke bundle"
        assert nl.models.loading.model_sha256(picked) == model.sha256


def test_voxels_round_trip_exactly_through_orientation_crop_and_pad(tmp_path):
    model = nl.load_model(make_bundle(tmp_path, resample=False))
    case = nl.load_case(sample_case_path(1))
    prep = model.pipeline.prepare(case, model.card.modalities, model.network, model.device)
    xm = prep.crop(prep.x)[0].numpy()
    rng = np.random.default_rng(0)
    inside = np.argwhere(xm[0] > 0.05)
    for v in inside[rng.choice(len(inside), 20, replace=False)]:
        R = torch.zeros((1, *prep.x.shape[1:]), dtype=torch.float64)
        R[(0, 2, *(v + [b for b, _a in prep.pads]))] = 1.0
        back = prep.relevance_to_case(R)[0].numpy()  # (C, Z, Y, X)
        assert back.sum() == pytest.approx(1.0) and np.count_nonzero(back) == 1
        c, z, y, x = np.argwhere(back)[0]
        assert c == 2
        # the case voxel it lands on holds the model voxel's value (ScaleIntensityRanged of it)
        assert np.clip(case.image[2, z, y, x] / 3000.0, 0, 1) == pytest.approx(float(xm[2][tuple(v)]), abs=1e-6)
    # the start relevance goes the other way: a case voxel to the model voxel that shows it
    blended = torch.zeros((1, 2, *prep.x.shape[2:]), dtype=torch.float64)
    prep.outputs_to_case(blended)
    z, y, x = np.argwhere(case.image[0] > 1000)[7]
    S = torch.zeros((1, 2, *case.shape), dtype=torch.float64)
    S[0, 1, z, y, x] = 1.0
    start, _ = prep.start_to_model(S, blended)
    assert float(start.sum()) == pytest.approx(1.0) and int((start != 0).sum()) == 1
    v = [int(i) for i in torch.nonzero(start[0, 1])[0]]
    assert float(prep.x[0, 0, v[0], v[1], v[2]]) == pytest.approx(min(case.image[0, z, y, x] / 3000.0, 1.0), abs=1e-6)


def test_relevance_on_the_case_grid_with_resampling_balances(tmp_path):
    model = nl.load_model(make_bundle(tmp_path, resample=True))
    case = nl.load_case(sample_case_path(1))
    for preset in ("epsilon-gamma-box", "lrp0"):
        exp = nl.explain(model, case, preset=preset, target="ground truth")  # inside the crop
        assert exp.relevance.shape == case.image.shape and np.isfinite(exp.relevance).all()
        assert abs(exp.ledger.unaccounted) <= 1e-5, exp.ledger.unaccounted
        entries = {e.name: e for e in exp.ledger.entries}
        inp, out = entries["input to case grid"], entries["output to model grid"]
        assert abs(out.absorbed) <= 1e-6 * abs(out.received)  # interpolation rows sum to 1
        if preset == "lrp0":  # x-proportional: nothing on the zero padding, so the interpolation conserves
            assert abs(inp.absorbed) <= 1e-5 * abs(inp.received), (inp.received, inp.handed)
        else:  # z-box gives relevance to the zero padding too; the way back books it as absorbed
            assert 0 < abs(inp.absorbed) < 0.2 * abs(inp.received)


@pytest.mark.parametrize("change,message", [
    ({"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Spacingd", "keys": "image", "pixdim": "$__import__('os').getcwd()"}]}},
     r"preprocessing#transforms#0#pixdim: the expression .* uses a call of .__import__"),
    ({"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "mymodule.SkullStripd", "keys": "image"}]}}, "outside monai.transforms"),
    ({"preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5}]}}, "RandFlipd is not supported"),
    ({"preprocessing": "$monai.transforms.Compose([])"}, "a call of 'monai.transforms.Compose'"),
    ({"inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi"}, "roi": "$open('roi.txt').read()"},
     r"roi: the expression .* uses a call of"),
    ({"inferer": {"_target_": "my.Inferer"}}, "outside monai.inferers"),
])
def test_code_and_unknown_transforms_are_refused(tmp_path, change, message):
    bundle = make_bundle(tmp_path, **change)
    with pytest.raises(ModelError, match=message):
        nl.load_model(bundle)


def test_a_bundle_of_three_sigmoid_regions_predicts_as_monai_and_explains_each_region(tmp_path):
    """The shape of the zoo's brats_mri_segmentation: SegResNet, three sigmoid regions (Activationsd(sigmoid=True),
    AsDiscreted(threshold=0.5)); each region is bit k of the prediction and a target of its own."""
    from monai.networks.nets import SegResNet

    kwargs = {"spatial_dims": 3, "in_channels": 6, "out_channels": 3, "init_filters": 8, "blocks_down": [1, 1, 1],
              "blocks_up": [1, 1]}
    torch.manual_seed(3)
    net = SegResNet(**kwargs)
    post = {"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                                                   {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5}]}
    # without Spacingd: a resampling bundle inverts probabilities where napari-lrp inverts logits (the
    # interpolation differs at region borders); without it the inversion is exact and the two must agree
    bundle = make_bundle(tmp_path, resample=False, network=(net, {"_target_": "SegResNet", **kwargs}),
                         outputs=("tumour core", "whole tumour", "enhancing tumour"), postprocessing=post)
    model = nl.load_model(bundle)
    assert model.card.output_activation == "sigmoid" and model.card.multilabel
    case = nl.load_case(sample_case_path(1))
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg.pop("device")
    parser = ConfigParser(cfg)
    pre, inferer = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer")
    data = pre({"image": _files(sample_case_path(1))})
    with torch.no_grad():
        out = inferer(data["image"][None].float(), model.network)[0]
    # as the zoo's bundle orders it: sigmoid on the network's grid, Invertd (zero outside the crop), threshold
    activation, threshold = parser.get_parsed_content("postprocessing").transforms
    probs = activation({"pred": out})["pred"]
    pred = MetaTensor(probs.as_tensor() if isinstance(probs, MetaTensor) else probs, affine=data["image"].affine)
    pred.applied_operations = data["image"].applied_operations
    inverted = pre.inverse({"image": pred})["image"]
    theirs = threshold({"pred": inverted})["pred"].as_tensor().numpy()  # (3, i, j, k) the files' grid
    ours_pred, _logits, _ = predict_case(model, case)
    bits = np.stack([(ours_pred >> k) & 1 for k in range(3)])
    ours = np.moveaxis(case.grid.from_napari(bits), -1, 0)
    assert ours.shape == theirs.shape and theirs.any(axis=(1, 2, 3)).all()
    assert (ours == theirs).mean() >= 0.9999
    for k in range(3):
        exp = nl.explain(model, case, target_class=k)
        region = exp.target_region()
        np.testing.assert_array_equal(region, exp.predicted_region(k))
        np.testing.assert_array_equal(region, exp.logits[k] > 0)
        assert abs(exp.ledger.unaccounted) <= 1e-5, (k, exp.ledger.unaccounted)
        start = float(exp.logits[k][region].sum(dtype=np.float64))
        assert abs(exp.ledger.start - start) <= 1e-4 * abs(start)


def test_normalise_first_and_replicate_padding_equal_monai_and_conserve(tmp_path):
    """The zoo's BraTS and whole-body bundles: NormalizeIntensityd(nonzero, channel_wise) as the first
    transform (it writes into its input) and a sliding window that pads by replicating the border (wholeBody's
    padding_mode). Logits equal MONAI's own run; replicated voxels give their relevance back to the voxels they
    copy (nothing is left on the padding), constant padding keeps its share."""
    pre = {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}]}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 24], "overlap": 0.25,
               "padding_mode": "replicate"}
    bundle = make_bundle(tmp_path, preprocessing=pre, inferer=inferer)
    model = nl.load_model(bundle)
    case = nl.load_case(sample_case_path(1))  # (64, 76, 19) in the files' order: the window pads the last axis
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg.pop("device")
    parser = ConfigParser(cfg)
    data = parser.get_parsed_content("preprocessing")({"image": _files(sample_case_path(1))})
    with torch.no_grad():
        theirs = parser.get_parsed_content("inferer")(data["image"][None].float(), model.network)[0].numpy()
    _pred, logits, _ = predict_case(model, case)
    ours = np.moveaxis(case.grid.from_napari(logits), -1, 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    prep = model.pipeline.prepare(case, model.card.modalities, model.network, model.device)
    assert prep.pads[2] == (2, 3)
    total = torch.rand(prep.x.shape, dtype=torch.float64)
    back = prep.relevance_to_case(total)
    assert abs(float(back.sum()) - float(total.sum())) <= 1e-9 * float(total.sum())
    model.pipeline.padding_mode = "constant"
    kept = float(prep.crop(total).sum())
    assert abs(float(prep.relevance_to_case(total).sum()) - kept) <= 1e-9 * kept < float(total.sum())
    model.pipeline.padding_mode = "replicate"
    exp = nl.explain(model, case, preset="epsilon-gamma-box")
    assert abs(exp.ledger.unaccounted) <= 1e-5 * abs(exp.ledger.start)


def _painting_bundle(tmp_path, func: str, outputs=("tumour core", "whole tumour", "enhancing tumour")):
    from monai.networks.nets import SegResNet

    kwargs = {"spatial_dims": 3, "in_channels": 6, "out_channels": len(outputs), "init_filters": 8,
              "blocks_down": [1, 1], "blocks_up": [1]}
    post = {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "Lambdad", "keys": "pred", "func": func},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"}]}
    return make_bundle(tmp_path, resample=False, network=(SegResNet(**kwargs), {"_target_": "SegResNet", **kwargs}),
                       outputs=outputs, postprocessing=post)


def test_a_painting_lambda_gives_the_label_of_every_region_combination_and_the_regions_ground_truth(tmp_path):
    """BraTS' bundle paints enhancing 4, else core 1, else whole tumour 2: by hand, over the eight combinations
    (bit 0 core, bit 1 whole, bit 2 enhancing), and a label file painted that way gives each region back."""
    func = "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"
    card = nl.load_model(_painting_bundle(tmp_path, func)).card
    assert card.label_values == [0, 1, 2, 1, 4, 4, 4, 4]
    assert card.regions == {"tumour core": [1, 4], "whole tumour": [1, 2, 4], "enhancing tumour": [4]}
    bits = np.array([[[0, 1, 2, 3, 4, 5, 6, 7]]], np.uint8)
    np.testing.assert_array_equal(card.label_map(bits), [[[0, 1, 2, 1, 4, 4, 4, 4]]])


@pytest.mark.parametrize("func,message", [
    ("$lambda x: x[[0]] * 0.5", "does not paint"), ("$lambda x: x", "does not paint"),
    ("$lambda x: x.sum(0)", "a call of 'x.sum'"), ("$lambda x: x[[7]]", "fails on the 3 region channels"),
])
def test_a_painting_that_is_not_a_label_is_refused_naming_the_step(tmp_path, func, message):
    with pytest.raises(ModelError, match=r"postprocessing#transforms#2#func.*" + message):
        nl.load_model(_painting_bundle(tmp_path, func))


def test_label_values_on_a_card_are_checked():
    from napari_lrp.models.card import ModelCard

    card = {"name": "c", "architecture": {"class": "monai.networks.nets.UNet"}, "modalities": ["t1"],
            "classes": ["core", "whole"], "output_activation": "sigmoid"}
    assert ModelCard.from_dict({**card, "label_values": [0, 1, 2, 3]}).label_values == [0, 1, 2, 3]
    with pytest.raises(ModelError, match=r"label_values.*2\*\*2 = 4 values"):
        ModelCard.from_dict({**card, "label_values": [0, 1, 2]})
    with pytest.raises(ModelError, match=r"label_values paints combinations of regions: it needs output_activation"):
        ModelCard.from_dict({**card, "output_activation": "softmax", "label_values": [0, 1, 2, 3]})


def _bundle_with_own_transform(tmp_path, body: str):
    ts = _transforms(False)
    ts.insert(4, {"_target_": "scripts.own.Own", "keys": "image"})
    bundle = make_bundle(tmp_path, resample=False, preprocessing={"_target_": "Compose", "transforms": ts})
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "own.py").write_text(
        "import numpy as np\n\n\nclass Own:\n    def __init__(self, keys):\n        self.keys = keys\n\n"
        f"    def __call__(self, data):\n        data = dict(data)\n        x = data['image']\n        {body}\n"
        "        return data\n")
    return bundle


def test_a_bundles_own_transform_runs_only_trusted_and_only_where_it_moves_voxels(tmp_path):
    """A transform that reverses the channels through numpy (the graph is lost there, the meta kept) passes
    relevance back to the voxel each output voxel copies: channel c's relevance is that of channel C-1-c of
    the same bundle without it, fed the case's channels reversed; a transform that changes values is refused
    naming it."""
    keep = "type(x)(np.ascontiguousarray(np.asarray(x)[::-1]), meta=x.meta, applied_operations=x.applied_operations)"
    own = _bundle_with_own_transform(tmp_path / "own", f"data['image'] = {keep}")
    with pytest.raises(ModelError, match=r"scripts.own.Own' is the bundle's own code .*trust=True"):
        nl.load_model(own)
    case = nl.load_case(sample_case_path(1))
    ours = nl.explain(nl.load_model(own, trust=True), case, preset="epsilon-gamma-box")
    plain = nl.load_model(make_bundle(tmp_path / "plain", resample=False))
    plain.card.modalities = MODS[::-1]  # channel c of the network reads the case's channel C-1-c
    theirs = nl.explain(plain, case, preset="epsilon-gamma-box")
    assert abs(ours.ledger.unaccounted) <= 1e-5
    np.testing.assert_allclose(ours.relevance, theirs.relevance[::-1], rtol=0,
                               atol=1e-6 * np.abs(theirs.relevance).max())
    scaled = _bundle_with_own_transform(tmp_path / "scaled", f"data['image'] = {keep.replace('[::-1]', '* 2.0')}")
    with pytest.raises(ModelError, match=r"transform scripts.own.Own makes 'image' of values that are neither voxels"):
        nl.explain(nl.load_model(scaled, trust=True), case)


def test_a_pipelines_own_window_over_the_budget_is_refused_before_it_runs(tmp_path, monkeypatch):
    """max_memory is honoured by models whose pipeline fixes the windows (a bundle's roi_size, nnU-Net's patch),
    and a SimpleInferer bundle, whose window is the whole model grid, is checked against half the free memory:
    both refused naming the estimate, the budget and the fix, before any relevance pass."""
    import psutil

    from napari_lrp.models.network_guard import module_window_bytes

    case = nl.load_case(sample_case_path(1))
    model = nl.load_model(make_bundle(tmp_path / "windows"))
    need = module_window_bytes(model.network, (1, 6, 32, 32, 16))
    with pytest.raises(ModelError, match=r"own \(32, 32, 16\) needs about .* GB, over the budget \(max_memory"):
        nl.explain(model, case, max_memory=need / 2)
    assert abs(nl.explain(model, case, max_memory=need * 2).ledger.unaccounted) <= 1e-5
    wide = {**NET, "channels": [32, 64, 128]}
    whole = nl.load_model(make_bundle(tmp_path / "whole", inferer={"_target_": "SimpleInferer"},
                                      network=(UNet(**wide), {"_target_": "UNet", **wide})))
    grid = whole.pipeline.prepare(case, whole.card.modalities, whole.network, whole.device).x.shape
    whole_need = module_window_bytes(whole.network, tuple(grid))
    assert whole_need > 4 * 0.05e9  # the transforms' own volumes need about 0.05 GB here
    real = psutil.virtual_memory()  # room for the transforms (the model grid's volumes), not for the LRP
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=int(1.5 * whole_need)))
    with pytest.raises(ModelError, match=r"over the budget \(half the free memory"):
        nl.explain(whole, case)
    nnunet = nl.load_model(sample_nnunet_path(), fold=0)
    with pytest.raises(ModelError, match=r"own \(16, 64, 64\) needs about"):
        nl.explain(nnunet, case, max_memory=1e6)
