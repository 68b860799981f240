"""The one binarisation of ground truth and brain masks (io/labels.py), through load_case and explain."""

import warnings

import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.io import CaseError
from napari_lrp.io.labels import ground_truth_mask, is_brain_mask_name
from tests.conftest import make_case_folder, make_tiny_model, write_nifti


def test_binary_labels_of_any_value_mark_every_non_zero_voxel():
    for value in (1, 2, 255):
        lab = np.array([0, value, value, 0], np.uint8)
        assert ground_truth_mask(lab).tolist() == [False, True, True, False]
    assert ground_truth_mask(np.zeros(3, np.uint8)).tolist() == [False] * 3
    assert ground_truth_mask(np.array([True, False])).tolist() == [True, False]


def test_multi_label_files_need_the_values_named():
    lab = np.array([0, 1, 2, 4, 4], np.uint8)
    with pytest.raises(CaseError, match=r"seg.nii.gz: a multi-label file \(values \[1, 2, 4\]\); name the value"):
        ground_truth_mask(lab, source="seg.nii.gz")
    assert ground_truth_mask(lab, [1, 4]).tolist() == [False, True, False, True, True]
    assert ground_truth_mask(lab, 2).tolist() == [False, False, True, False, False]
    with pytest.raises(CaseError, match=r"label value\(s\) \[3\] do not occur; the file holds \[1, 2, 4\]"):
        ground_truth_mask(lab, [3])


def test_brain_mask_names():
    assert is_brain_mask_name(["sub", "01", "brainmask"]) and is_brain_mask_name(["t1", "brain", "mask"])
    assert not is_brain_mask_name(["lesion", "mask"]) and not is_brain_mask_name(["brain"])


def _relabel(folder, value):
    import nibabel as nib

    ot = next(folder.rglob("*OT*.nii.gz"))
    img = nib.load(str(ot))
    data = np.asarray(img.dataobj) * value
    write_nifti(ot, data, img.affine, np.uint8)
    return folder


def test_a_0_255_mask_gives_the_same_target_and_coefficients_as_0_1(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    ones = nl.load_case(make_case_folder(tmp_path / "a", shape=(12, 10, 5)))
    big = nl.load_case(_relabel(make_case_folder(tmp_path / "b", shape=(12, 10, 5)), 255))
    assert big.label.max() == 255 and big.ground_truth.sum() == ones.ground_truth.sum() > 0
    a = nl.explain(model, ones, preset="paper", target="groundtruth")
    b = nl.explain(model, big, preset="paper", target="groundtruth")
    np.testing.assert_array_equal(a.relevance, b.relevance)
    assert np.abs(b.relevance).max() > 0
    np.testing.assert_array_equal(a.coefficients().to_numpy(), b.coefficients().to_numpy())


def test_a_multi_label_case_needs_label_values(tmp_path):
    folder = make_case_folder(tmp_path / "c", shape=(12, 10, 5))
    import nibabel as nib

    ot = next(folder.rglob("*OT*.nii.gz"))
    img = nib.load(str(ot))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 4
    write_nifti(ot, data, img.affine, np.uint8)
    model = make_tiny_model(tmp_path / "m")
    case = nl.load_case(folder)
    with pytest.raises(CaseError, match=r"OT.*multi-label file \(values \[1, 4\]\).*label_values"):
        nl.explain(model, case, target="groundtruth")
    only4 = nl.load_case(folder, label_values=[4])
    assert only4.ground_truth.sum() == 1
    with pytest.raises(CaseError, match=r"label value\(s\) \[7\] do not occur"):
        nl.load_case(folder, label_values=7)


def test_a_brain_mask_is_not_taken_for_the_lesion(tmp_path):
    folder = make_case_folder(tmp_path / "d", shape=(12, 10, 5), label=None)
    write_nifti(folder / "sub-01_brainmask.nii.gz", np.ones((12, 10, 5)), None, np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = nl.load_case(folder)
    assert case.label is None and len(case.modalities) == 6
    assert any("brainmask.nii.gz: a brain mask" in str(w.message) for w in caught)
