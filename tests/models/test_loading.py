import json
import pathlib

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet, UNet

import napari_lrp as nl
from napari_lrp.models import ModelError, UNet3D
from tests.conftest import make_case_folder

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


def card(cls, kwargs, **extra):
    return {"name": "test", "architecture": {"class": cls, "kwargs": kwargs}, "modalities": MODS,
            "input": {"spatial_size": None, "intensity": "minmax", "divisible": 8}, **extra}


NETS = {
    "UNet3D": ("napari_lrp.models.UNet3D", {"in_channels": 6, "out_channels": 2, "width": 4}),
    "UNet": ("monai.networks.nets.UNet", {"spatial_dims": 3, "in_channels": 6, "out_channels": 2,
                                          "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}),
    "BasicUNet": ("monai.networks.nets.BasicUNet", {"spatial_dims": 3, "in_channels": 6, "out_channels": 2,
                                                    "features": [4, 4, 8, 8, 16, 4]}),
}


@pytest.mark.parametrize("name", list(NETS))
def test_round_trip_bit_identical(tmp_path, name):
    cls, kwargs = NETS[name]
    net = {"UNet3D": UNet3D, "UNet": UNet, "BasicUNet": BasicUNet}[name](**kwargs).eval()
    path = nl.save_model(net, card(cls, kwargs), tmp_path / name)
    model = nl.load_model(path, device="cpu")
    x = torch.rand(1, 6, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), model.network(x))
    assert model.card.modalities == MODS and not model.network.training
    assert nl.load_model(tmp_path / name).card.name == "test"  # the folder works too


def _unet3d(tmp_path):
    cls, kwargs = NETS["UNet3D"]
    net = UNet3D(**kwargs).eval()
    path = nl.save_model(net, card(cls, kwargs), tmp_path / "m")
    return net, path


def test_dataparallel_prefix_and_lightning_checkpoint(tmp_path):
    net, path = _unet3d(tmp_path)
    sd = net.state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, path.parent / "model.pt")
    x = torch.rand(1, 6, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(nl.load_model(path).network(x), net(x))
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in sd.items()}}, path.parent / "model.pt")
    with torch.no_grad():
        assert torch.equal(nl.load_model(path).network(x), net(x))


class _SideEffect:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_full_model_is_refused_without_running_code(tmp_path):
    net, path = _unet3d(tmp_path)
    marker = tmp_path / "code_ran"
    net.payload = _SideEffect(str(marker))
    torch.save(net, path.parent / "model.pt")
    with pytest.raises(ModelError, match="loading it would run code from the file; pass trust=True"):
        nl.load_model(path)
    assert not marker.exists()
    model = nl.load_model(path, trust=True)
    assert marker.exists() and isinstance(model.network, UNet3D)


def test_torchscript_needs_trust(tmp_path):
    net, path = _unet3d(tmp_path)
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 6, 8, 16, 16)), str(path.parent / "model.pt"))
    with pytest.raises(ModelError, match="TorchScript file; loading it runs code"):
        nl.load_model(path)
    assert nl.load_model(path, trust=True) is not None


def test_monai_bundle_loads_and_explains(tmp_path):
    kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2],
              "num_res_units": 1}
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    net = UNet(**kwargs).eval()
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    own = {k: v for k, v in kwargs.items() if k not in ("spatial_dims", "in_channels")}
    inference = {"num_channels": 2,
                 "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": "@num_channels", **own}}
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    meta = {"name": "tiny bundle", "network_data_format": {
        "inputs": {"image": {"num_channels": 2, "channel_def": {"0": "t1", "1": "flair"}}},
        "outputs": {"pred": {"num_channels": 2, "channel_def": {"0": "background", "1": "tumour"}}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    model = nl.load_model(bundle)
    assert model.card.modalities == ["t1", "flair"] and model.card.classes == ["background", "tumour"]
    folder = make_case_folder(tmp_path / "brats", names=("flair", "t1"), label=None, nested=False,
                              shape=(10, 12, 6))
    for p in folder.iterdir():
        p.rename(p.with_name(p.name.replace("MR_", "")))
    case = nl.load_case(folder)
    exp = nl.explain(model, case, preset="lrp0", target="output")
    assert exp.relevance.shape == (2, 6, 12, 10) and np.isfinite(exp.relevance).all()
    assert exp.modalities == ["t1", "flair"]
    inference["network_def"]["channels"] = "$[4, 8] + __import__('os').listdir('.')"
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    with pytest.raises(ModelError, match="runs no code from bundles"):
        nl.load_model(bundle)


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_weights_file(tmp_path):
    _net, path = _unet3d(tmp_path)
    (path.parent / "model.pt").unlink()
    with pytest.raises(ModelError, match=r"model.pt: weights file not found"):
        nl.load_model(path)


def test_corrupt_weights(tmp_path):
    _net, path = _unet3d(tmp_path)
    (path.parent / "model.pt").write_bytes(b"PK\x03\x04 garbage" * 10)
    with pytest.raises(ModelError, match="model.pt: corrupt or unreadable weights file"):
        nl.load_model(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    net, path = _unet3d(tmp_path)
    sd = net.state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path.parent / "model.pt")
    with pytest.raises(ModelError, match=r"missing keys \['head.bias'\]; unexpected keys \['extra.weight'\]"):
        nl.load_model(path)


def test_architecture_not_on_allow_list(tmp_path):
    p = tmp_path / "card.json"
    p.write_text(json.dumps(card("os.system", {})))
    with pytest.raises(ModelError, match="'os.system' is not on the allow-list"):
        nl.load_model(p)


def test_card_with_wrong_json(tmp_path):
    p = tmp_path / "card.json"
    p.write_text('{"name": "x", "architecture": ')
    with pytest.raises(ModelError, match="card.json: the model card is not valid JSON"):
        nl.load_model(p)


def test_in_channels_differ_from_card_modalities(tmp_path):
    cls, kwargs = NETS["UNet3D"]
    p = tmp_path / "card.json"
    p.write_text(json.dumps(card(cls, {**kwargs, "in_channels": 4})))
    with pytest.raises(ModelError, match="takes 4 input channels but the card lists 6 modalities"):
        nl.load_model(p)


def test_case_missing_a_modality(tmp_path):
    _net, path = _unet3d(tmp_path)
    folder = make_case_folder(tmp_path / "case", names=("ADC", "MTT", "Tmax"), label=None)
    with pytest.raises(ModelError, match="needs modalities ADC, MTT, rCBF.* but the case has ADC, MTT, Tmax "
                                         r"\(missing: rCBF, rCBV, TTP\)"):
        nl.explain(nl.load_model(path), nl.load_case(folder))


@pytest.mark.parametrize("change, message", [
    ({"input": "minmax"}, r"field 'input': Input should be a valid dictionary"),
    ({"architecture": {"class": "UNet3D", "kwargs": [4]}},
     r"field 'architecture.kwargs': Input should be a valid dict"),
    ({"modalities": [1, 2]}, r"field 'modalities.0': Input should be a valid string \(got 1\)"),
    ({"target_class": "one"}, r"field 'target_class': Input should be a valid integer \(got 'one'\)"),
    ({"weights": "/etc/passwd"}, r"field 'weights': must be a file name relative to the card's folder"),
    ({"input": {"spatial_size": [0, 0, 0]}}, r"field 'input.spatial_size': every size must be a positive"),
    ({"modalities": ["ADC", "adc"]}, r"field 'modalities': names \['ADC', 'adc'\] appear twice"),
    ({"target_class": 5}, r"target_class 5 is not an index into classes"),
    ({"regions": {"tumour": [1]}}, r"regions \['tumour'\] are not among the classes"),
    ({"regions": {"foreground": []}}, r"field 'regions': region 'foreground' needs one or more label values"),
    ({"regions": {"foreground": [1, -1]}}, r"region 'foreground' needs one or more label values >= 0"),
])
def test_card_fields_are_validated_with_the_file_and_the_field(tmp_path, change, message):
    d = card("UNet3D", {"in_channels": 2, "out_channels": 2, "width": 4}, modalities=["ADC", "MTT"])
    d.update(change)
    (tmp_path / "card.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"card.json: the model card is not valid: .*" + message):
        nl.load_model(tmp_path / "card.json")


def test_random_bytes_are_not_a_pytorch_file(tmp_path):
    path = nl.save_model(UNet3D(6, 2, width=4), card("UNet3D", {"in_channels": 6, "out_channels": 2, "width": 4}),
                         tmp_path / "m")
    (path.parent / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="model.pt: corrupt or unreadable weights file: corrupt or not a PyTorch"):
        nl.load_model(path)


def test_a_bundle_reference_to_itself_is_named(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"a": "@b", "b": "@a", "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": "@a"}}))
    with pytest.raises(ModelError, match=r"inference.json: reference '@a' refers to itself \(@a -> @b -> @a\)"):
        nl.load_model(bundle)


def test_a_card_whose_class_names_do_not_match_the_outputs_is_refused_by_name(tmp_path):
    """Three class names for a network of two outputs would put the names on the wrong channels: refused at the
    first prediction, naming the card's field; a one-channel sigmoid model may name its background and foreground."""
    from napari_lrp.pipeline import predict_case
    from napari_lrp.samples import load_sample_case

    case = load_sample_case(1)
    base = {"architecture": {"class": "napari_lrp.models.UNet3D",
                             "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"],
            "input": {"spatial_size": None, "intensity": "zscore", "divisible": 8}}
    wrong = nl.load_model(nl.save_model(UNet3D(6, 2, width=4).eval(), {
        **base, "name": "three names", "classes": ["background", "core", "edema"], "target_class": 1},
        tmp_path / "wrong"))
    with pytest.raises(ModelError, match=r"names 3 classes .* gives 2 output channels; field 'classes'"):
        predict_case(wrong, case)
    with pytest.raises(ModelError, match="field 'classes'"):
        nl.explain(wrong, case)
    binary = nl.load_model(nl.save_model(UNet3D(6, 1, width=4).eval(), {
        **base, "name": "binary", "architecture": {"class": "napari_lrp.models.UNet3D",
                                                   "kwargs": {"in_channels": 6, "out_channels": 1, "width": 4}},
        "classes": ["background", "lesion"], "output_activation": "sigmoid"}, tmp_path / "binary"))
    assert predict_case(binary, case)[1].shape[0] == 1  # one channel, two names: the binary convention
