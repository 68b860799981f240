"""Bad inputs as archives, scanners and colleagues hand them over: every one is refused with a message
that names the file and the problem, and no input or earlier output is changed."""

import gzip
import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.cli import main
from napari_lrp.io import CaseError
from napari_lrp.models import ModelError, UNet3D
from tests.conftest import ISLES, lying_header, make_case_folder, write_nifti

SHAPE = (12, 10, 5)


def _nii(path, data=None, affine=None, dtype=np.float32):
    return write_nifti(path, np.random.default_rng(0).random(SHAPE) if data is None else data, affine, dtype)


def _case(tmp, **kw):
    return make_case_folder(tmp / "case", shape=SHAPE, **kw)


def _load(target, **kw):
    return lambda: nl.load_case(target, **kw)


def _card(tmp, **change):
    d = {"name": "t", "architecture": {"class": "napari_lrp.models.UNet3D",
                                       "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
         "modalities": list(ISLES)}
    folder = tmp / "model"
    nl.save_model(UNet3D(6, 2, width=4).eval(), dict(d), folder)  # a valid model, then the card is spoilt
    d.update(change)
    (folder / "card.json").write_text(json.dumps(d))
    return folder / "card.json"


def _model(target):
    return lambda: nl.load_model(target)


def _bundle(tmp, config, write_config=True):
    b = tmp / "bundle"
    (b / "configs").mkdir(parents=True)
    (b / "models").mkdir()
    if write_config:
        (b / "configs" / "inference.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return b


def _first(folder, token):
    return next(p for p in sorted(folder.rglob("*.nii.gz")) if token in p.name)


# ---- each builder makes one bad input in tmp and returns (action, file named in the message, problem)


def missing_file(t):
    return _load(t / "nope.nii.gz"), "nope.nii.gz", "file or folder not found"


def not_nifti_name(t):
    (t / "scan.txt").write_text("x")
    return _load(t / "scan.txt"), "scan.txt", "not a NIfTI file name"


def truncated_gz(t):
    p = _nii(t / "ADC.nii.gz")
    p.write_bytes(p.read_bytes()[:200])
    return _load(p), "ADC.nii.gz", "truncated|corrupt|not a readable"


def random_bytes_nifti(t):
    (t / "ADC.nii.gz").write_bytes(np.random.default_rng(1).bytes(3000))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "not a readable NIfTI"


def garbage_header_gz(t):
    (t / "ADC.nii.gz").write_bytes(gzip.compress(b"garbage" * 100))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "not a readable NIfTI"


def huge_header_gz(t):
    return _load(lying_header(t / "ADC.nii.gz", (1100, 1100, 1100))), "ADC.nii.gz", "cannot hold them"


def huge_header_raw(t):
    return _load(lying_header(t / "ADC.nii", (300, 300, 300), gz=False)), "ADC.nii", "the file is truncated"


def rgb24(t):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(t / "ADC.nii.gz"))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "RGB"


def zero_sform(t):
    img = nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4))
    img.set_sform(np.zeros((4, 4)), code=1)
    nib.save(img, str(t / "ADC.nii.gz"))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "affine .* singular"


def nan_voxels(t):
    d = np.ones(SHAPE, np.float32)
    d[0, 0, 0] = np.nan
    return _load(_nii(t / "ADC.nii.gz", d)), "ADC.nii.gz", "NaN or Inf.*nonfinite"


def two_d(t):
    nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), str(t / "ADC.nii.gz"))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "2D data"


def five_d(t):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 2, 2), np.float32), np.eye(4)), str(t / "ADC.nii.gz"))
    return _load(t / "ADC.nii.gz"), "ADC.nii.gz", "5D data"


def label_not_integer(t):
    c = _case(t)
    _nii(_first(c, "OT"), np.full(SHAPE, 0.5), None, np.float32)
    return _load(c), "OT", "non-integer voxels"


def label_out_of_range(t):
    c = _case(t)
    _nii(_first(c, "OT"), np.full(SHAPE, 300), None, np.int16)
    return _load(c), "OT", r"label values must lie in 0\.\.255"


def label_other_grid(t):
    c = _case(t)
    _nii(_first(c, "OT"), np.zeros((6, 6, 6)), None, np.uint8)
    return _load(c), "OT", "label on another grid"


def shapes_differ(t):
    c = _case(t)
    _nii(_first(c, "MTT"), np.zeros((6, 6, 6)))
    return _load(c), "MTT", "shape .* differs"


def affines_differ(t):
    c = _case(t)
    _nii(_first(c, "MTT"), None, np.diag([2.0, 2.0, 4.0, 1.0]))
    return _load(c), "MTT", "affine differs"


def empty_folder(t):
    (t / "empty").mkdir()
    return _load(t / "empty"), "empty", "no .nii or .nii.gz files"


def unrecognised_names(t):
    # two images with no known name (one alone is a one-channel case named after its file)
    _nii(t / "f" / "scan_a.nii.gz")
    _nii(t / "f" / "scan_b.nii.gz")
    return _load(t / "f"), "scan_a.nii.gz", "no recognised modality names"


def two_labels(t):
    c = _case(t)
    _nii(c / "lesion_seg.nii.gz", np.zeros(SHAPE), None, np.uint8)
    return _load(c), "case", "two label files"


def modality_twice_in_folder(t):
    c = _case(t)
    _nii(c / "extra_ADC_copy.nii.gz")
    return _load(c), "case", "two files for modality ADC"


def modality_twice_in_list(t):
    a = _nii(t / "a" / "MR_ADC.nii.gz")
    b = _nii(t / "b" / "MR_ADC.nii.gz")
    return _load([a, b]), "MR_ADC.nii.gz", "a second file for modality ADC"


def names_count_mismatch(t):
    return _load([_nii(t / "MR_ADC.nii.gz")], modalities=["a", "b"]), "MR_ADC.nii.gz", "2 modality names given"


def names_twice(t):
    return (_load([_nii(t / "MR_ADC.nii.gz"), _nii(t / "MR_MTT.nii.gz")], modalities=["x", "X"]),
            "MR_ADC.nii.gz", "given twice")


def broken_annex_link(t):
    c = _case(t, nested=False)
    adc = _first(c, "ADC")
    target = t / "annex" / "obj"
    adc.unlink()
    os.symlink(target, adc)
    return _load(c), "ADC", "link to content that is not here"


def multi_label_without_values(t):
    c = _case(t)
    d = np.zeros(SHAPE, np.uint8)
    d[1, 1, 1], d[2, 2, 2] = 1, 2
    _nii(_first(c, "OT"), d, None, np.uint8)
    case = nl.load_case(c)
    return lambda: case.ground_truth, "OT", r"multi-label file \(values \[1, 2\]\)"


def label_value_absent(t):
    return _load(_case(t), label_values=[3]), "OT", r"label value\(s\) \[3\] do not occur"


def label_values_without_label(t):
    return _load(_case(t, label=None), label_values=[1]), "case", "no label file"


def four_d_in_list(t):
    a = _nii(t / "MR_ADC.nii.gz")
    b = write_nifti(t / "MR_MTT.nii.gz", np.ones(SHAPE + (2,)))
    return _load([a, b]), "MR_MTT.nii.gz", "4D file of shape"


def card_invalid_json(t):
    p = _card(t)
    p.write_text("{not json")
    return _model(p), "card.json", "not valid JSON"


def card_not_object(t):
    p = _card(t)
    p.write_text("[1, 2]")
    return _model(p), "card.json", "must be a JSON object"


def card_lacks_modalities(t):
    p = _card(t)
    d = json.loads(p.read_text())
    del d["modalities"]
    p.write_text(json.dumps(d))
    return _model(p), "card.json", "lacks modalities"


def card_unknown_field(t):
    return _model(_card(t, colour="red")), "card.json", "unknown model card fields"


def card_input_string(t):
    return _model(_card(t, input="minmax")), "card.json", "field 'input'"


def card_kwargs_list(t):
    return (_model(_card(t, architecture={"class": "UNet3D", "kwargs": [6, 2]})), "card.json",
            "field 'architecture.kwargs'")


def card_integer_modalities(t):
    return _model(_card(t, modalities=[1, 2, 3, 4, 5, 6])), "card.json", "field 'modalities.0'"


def card_target_class_word(t):
    return _model(_card(t, target_class="one")), "card.json", "field 'target_class'"


def card_weights_absolute(t):
    return _model(_card(t, weights="/etc/passwd")), "card.json", "field 'weights'"


def card_zero_spatial_size(t):
    return _model(_card(t, input={"spatial_size": [0, 0, 0]})), "card.json", "field 'input.spatial_size'"


def card_not_allow_listed(t):
    return (_model(_card(t, architecture={"class": "os.system", "kwargs": {}})), "card.json",
            "not on the allow-list")


def card_download_url(t):
    arch = {"class": "monai.networks.nets.HoVerNet", "kwargs": {"pretrained_url": "file:///etc/hosts"}}
    return _model(_card(t, architecture=arch)), "card.json", "never downloads"


def card_huge_width(t):
    arch = {"class": "UNet3D", "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4096}}
    return _model(_card(t, architecture=arch)), "card.json", "million parameters"


def weights_missing(t):
    p = _card(t)
    (p.parent / "model.pt").unlink()
    return _model(p), "model.pt", "weights file not found"


def weights_random_bytes(t):
    p = _card(t)
    (p.parent / "model.pt").write_bytes(np.random.default_rng(2).bytes(5000))
    return _model(p), "model.pt", "not a PyTorch file"


def weights_pickled_model(t):
    p = _card(t)
    torch.save(UNet3D(6, 2, width=4), p.parent / "model.pt")
    return _model(p), "model.pt", "would run code from the file"


def weights_torchscript(t):
    p = _card(t)
    torch.jit.save(torch.jit.trace(UNet3D(6, 2, width=4).eval(), torch.rand(1, 6, 8, 16, 16)),
                   str(p.parent / "model.pt"))
    return _model(p), "model.pt", "TorchScript"


def weights_other_channels(t):
    arch = {"class": "UNet3D", "kwargs": {"in_channels": 4, "out_channels": 2, "width": 4}}
    return _model(_card(t, architecture=arch)), "card.json", "takes 4 input channels but the card lists 6"


def weights_keys_differ(t):
    p = _card(t)
    sd = UNet3D(6, 2, width=4).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, p.parent / "model.pt")
    return _model(p), "model.pt", "unexpected keys"


def bundle_no_config(t):
    return _model(_bundle(t, None, write_config=False)), "bundle", "configs/ holds none of inference.json"


def bundle_invalid_json(t):
    return _model(_bundle(t, "{oops")), "inference.json", "not valid JSON"


def bundle_expression(t):
    cfg = {"network_def": {"_target_": "UNet", "spatial_dims": "$int(open('/etc/hostname').read())"}}
    return _model(_bundle(t, cfg)), "inference.json", "network_def#spatial_dims: the expression .* a call of .open"


def bundle_self_reference(t):
    cfg = {"a": "@a", "network_def": {"_target_": "UNet", "spatial_dims": "@a"}}
    return _model(_bundle(t, cfg)), "inference.json", "refers to itself"


def bundle_no_network(t):
    return _model(_bundle(t, {"something": 1})), "inference.json", "no network_def"


def out_is_a_file(t):
    c, p = _case(t), _card(t)
    (t / "out.txt").write_text("x")

    def run():
        if main(["explain", str(c), "--model", str(p), "--out", str(t / "out.txt")]) == 2:
            raise NotADirectoryError(t / "out.txt")
    return run, "out.txt", ""


BUILDERS = [missing_file, not_nifti_name, truncated_gz, random_bytes_nifti, garbage_header_gz, huge_header_gz,
            huge_header_raw, rgb24, zero_sform, nan_voxels, two_d, five_d, label_not_integer, label_out_of_range,
            label_other_grid, shapes_differ, affines_differ, empty_folder, unrecognised_names, two_labels,
            modality_twice_in_folder, modality_twice_in_list, names_count_mismatch, names_twice, broken_annex_link,
            multi_label_without_values, label_value_absent, label_values_without_label, four_d_in_list,
            card_invalid_json, card_not_object, card_lacks_modalities, card_unknown_field, card_input_string,
            card_kwargs_list, card_integer_modalities, card_target_class_word, card_weights_absolute,
            card_zero_spatial_size, card_not_allow_listed, card_download_url, card_huge_width, weights_missing,
            weights_random_bytes, weights_pickled_model, weights_torchscript, weights_other_channels,
            weights_keys_differ, bundle_no_config, bundle_invalid_json, bundle_expression, bundle_self_reference,
            bundle_no_network, out_is_a_file]


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir"
    return out


def test_the_table_has_at_least_40_inputs():
    assert len(BUILDERS) >= 40


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_each_bad_input_is_refused_by_name_and_nothing_changes(build, tmp_path):
    # an earlier result beside the inputs must survive every refusal
    earlier = tmp_path / "earlier_results"
    earlier.mkdir()
    (earlier / "coefficients.csv").write_text("channel,mu\nADC,0.1\n")
    action, file_token, problem = build(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises((CaseError, ModelError, ValueError, OSError)) as info:
        action()
    message = str(info.value)
    assert file_token in message, message
    assert not problem or __import__("re").search(problem, message), message
    assert "Traceback" not in message
    assert _snapshot(tmp_path) == before
