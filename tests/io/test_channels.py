"""Channels by name, never by position (io/channels.py, io/case.py, models/preprocess.py): every BraTS
release's spelling is one channel; a folder's files are picked by name; a model's channels are matched to
the case's by name."""

import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.cli import main
from napari_lrp.io import CaseError
from napari_lrp.io.channels import canonical_channel, match_channels
from napari_lrp.models import ModelError, UNet3D
from napari_lrp.models.preprocess import match_modalities
from tests.conftest import write_nifti

SHAPE = (10, 9, 6)
#: BraTS file name suffixes per release, in the canonical order t1, t1ce, t2, flair
RELEASES = {
    "2021": ("t1", "t1ce", "t2", "flair"),
    "2023": ("t1n", "t1c", "t2w", "t2f"),
}


def _brats_folder(root, release, seed=0):
    """A BraTS case as the release lays it out: one file per sequence, each filled with its own constant
    (t1 = 1, t1ce = 2, t2 = 3, flair = 4) so a swapped channel shows."""
    prefix = "BraTS2021_00000_" if release == "2021" else "BraTS-GLI-00000-000-"
    for value, suffix in enumerate(RELEASES[release], start=1):
        write_nifti(root / f"{prefix}{suffix}.nii.gz", np.full(SHAPE, float(value)))
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:6, 3:6, 2:4] = 1
    write_nifti(root / f"{prefix}seg.nii.gz", lab, dtype=np.uint8)
    return root


@pytest.mark.parametrize("spellings", [("t1", "T1n", "t1w", "T1-native"), ("t1ce", "T1c", "T1Gd", "t1_gd"),
                                       ("t2", "T2w", "T2"), ("flair", "FLAIR", "t2f", "T2-FLAIR")])
def test_every_release_spelling_is_one_channel(spellings):
    assert len({canonical_channel(s) for s in spellings}) == 1


def test_isles_names_stay_distinct():
    isles = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]
    assert len({canonical_channel(n) for n in isles}) == 6


@pytest.mark.parametrize("release", list(RELEASES))
def test_a_brats_folder_of_each_release_loads_with_each_file_on_its_channel(tmp_path, release):
    case = nl.load_case(_brats_folder(tmp_path / "case", release))
    assert case.modalities == ["t1", "t1ce", "t2", "flair"]
    assert [float(case.image[c].mean()) for c in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert case.label is not None and case.label.sum() == 18


@pytest.mark.parametrize("order", [["T1c", "T1", "T2", "FLAIR"], ["flair", "t2w", "t1n", "T1Gd"], ["t2", "t1"]])
def test_load_case_modalities_picks_a_folders_files_by_name_not_position(tmp_path, order):
    case = nl.load_case(_brats_folder(tmp_path / "case", "2023"), modalities=order)
    value = {"t1": 1.0, "t1ce": 2.0, "t2": 3.0, "flair": 4.0}
    assert case.modalities == order  # named as the user wrote them
    assert [float(case.image[c].mean()) for c in range(len(order))] == [value[canonical_channel(m)] for m in order]


def test_a_name_the_folder_lacks_is_refused_by_name(tmp_path):
    with pytest.raises(CaseError, match="missing: DWI"):
        nl.load_case(_brats_folder(tmp_path / "case", "2021"), modalities=["t1", "DWI"])


def test_a_list_of_files_takes_the_ith_name_for_the_ith_file(tmp_path):
    files = [write_nifti(tmp_path / f"a{i}.nii.gz", np.full(SHAPE, float(i))) for i in range(2)]
    case = nl.load_case(files, modalities=["T2", "FLAIR"])
    assert case.modalities == ["T2", "FLAIR"] and float(case.image[1].mean()) == 1.0


def test_the_zoo_brats_bundles_channel_order_is_met_by_name():
    # the MONAI Model Zoo's brats_mri_segmentation: channel_def T1c, T1, T2, FLAIR; a BraTS 2021 case's order
    assert match_modalities(["t1", "t1ce", "t2", "flair"], ["T1c", "T1", "T2", "FLAIR"]) == [1, 0, 2, 3]
    # the Decathlon / nnU-Net Dataset001 names against a BraTS 2023 case
    assert match_modalities(["t1n", "t1c", "t2w", "t2f"], ["FLAIR", "T1w", "t1gd", "T2w"]) == [3, 0, 1, 2]
    with pytest.raises(ModelError, match="missing: FLAIR"):
        match_modalities(["t1", "t1ce", "t2"], ["T1c", "T1", "T2", "FLAIR"])
    with pytest.raises(ValueError, match="same channel under different names"):
        match_channels(["t1", "T1n", "t2"], ["t1", "t2"])


def test_a_model_run_feeds_each_channel_by_name(tmp_path):
    """A card whose modalities are in the zoo bundle's order explains a BraTS 2023 folder with the right file
    on each input channel: the first layer sees exactly the channels it would see by hand."""
    card = {"name": "brats", "architecture": {"class": "napari_lrp.models.UNet3D",
                                              "kwargs": {"in_channels": 4, "out_channels": 2, "width": 4}},
            "modalities": ["T1c", "T1", "T2", "FLAIR"], "input": {"intensity": "none", "divisible": 1}}
    model = nl.load_model(nl.save_model(UNet3D(4, 2, width=4).eval(), card, tmp_path / "m"))
    case = nl.load_case(_brats_folder(tmp_path / "case", "2023"))
    exp = nl.explain(model, case, target="groundtruth")
    np.testing.assert_array_equal(exp.input_image[:, 0, 0, 0], [2.0, 1.0, 3.0, 4.0])


def test_a_one_channel_folder_of_any_name_loads(tmp_path):
    write_nifti(tmp_path / "case" / "image.nii.gz", np.ones(SHAPE))
    case = nl.load_case(tmp_path / "case")
    assert case.modalities == ["image"]
    assert match_modalities(case.modalities, ["CT"]) == [0]


def test_cli_modalities_picks_channels_by_name(tmp_path, capsys):
    from napari_lrp.models import UNet3D as Net

    card = {"name": "two", "architecture": {"class": "napari_lrp.models.UNet3D",
                                            "kwargs": {"in_channels": 2, "out_channels": 2, "width": 4}},
            "modalities": ["FLAIR", "T1"], "input": {"intensity": "none", "divisible": 1}}
    nl.save_model(Net(2, 2, width=4).eval(), card, tmp_path / "m")
    case_dir = _brats_folder(tmp_path / "case", "2023")
    rc = main(["explain", str(case_dir), "--model", str(tmp_path / "m"), "--modalities", "t2f,t1n",
               "--target", "groundtruth", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["explain", str(case_dir), "--model", str(tmp_path / "m"), "--modalities", "t2f,DWI",
               "--out", str(tmp_path / "out2")])
    assert rc == 2 and "missing: DWI" in capsys.readouterr().err
