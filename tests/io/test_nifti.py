"""Single NIfTI files (io/nifti.py): names, errors that name the file, writing on a grid."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_lrp.io.nifti import CaseError, is_nifti_path, nifti_stem, read_nifti, save_on_grid


def test_names():
    assert is_nifti_path("a/B.NII.GZ") and is_nifti_path("x.nii") and not is_nifti_path("x.nrrd")
    assert nifti_stem("dir/VSD.Brain.XX.O.MR_ADC.100.nii.gz") == "VSD.Brain.XX.O.MR_ADC.100"


def test_read_gives_data_and_grid(tmp_path):
    affine = np.diag([1.5, 2.0, 4.0, 1.0])
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "a.nii.gz"))
    got, grid = read_nifti(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(got, data)
    assert grid.shape == (2, 3, 4) and np.allclose(grid.affine, affine)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CaseError, match="missing.nii.gz: file not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    with pytest.raises(CaseError, match="is a folder"):
        read_nifti(tmp_path)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(CaseError, match="bad.nii.gz: not a readable NIfTI"):
        read_nifti(bad)


def test_save_on_grid_round_trips_in_file_order(tmp_path):
    affine = np.diag([-1.5, 2.0, 4.0, 1.0])  # an LAS file: napari order differs from file order
    data = np.random.rand(3, 4, 5).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "in.nii.gz"))
    _, grid = read_nifti(tmp_path / "in.nii.gz")
    out = save_on_grid(grid.to_napari(data), grid, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    assert np.allclose(img.affine, affine)
