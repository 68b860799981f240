"""Single NIfTI files (io/nifti.py): names, errors that name the file, writing on a grid."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_lrp.io.nifti import CaseError, is_nifti_path, nifti_stem, read_nifti, save_on_grid
from tests.conftest import lying_header


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


def test_a_tiny_file_claiming_a_huge_volume_is_refused_before_allocating(tmp_path):
    import tracemalloc

    p = lying_header(tmp_path / "liar.nii.gz", (1100, 1100, 1100))
    assert p.stat().st_size < 2000
    tracemalloc.start()
    with pytest.raises(CaseError, match=r"liar.nii.gz: the header claims 1100x1100x1100 voxels .* cannot hold them"):
        read_nifti(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6
    raw = lying_header(tmp_path / "liar.nii", (100, 100, 100), gz=False)
    with pytest.raises(CaseError, match=r"liar.nii: the header claims 100x100x100 voxels .* the file is truncated"):
        read_nifti(raw)


def test_more_than_free_memory_is_refused_with_the_file_name(tmp_path, monkeypatch):
    import napari_lrp.io.nifti as nifti

    p = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)), str(p))
    monkeypatch.setattr(nifti, "available_memory", lambda: 1_000_000)
    with pytest.raises(CaseError,
                       match=r"big.nii.gz: reading 64x64x64 voxels needs about .* GB of memory and 0.001 GB"):
        read_nifti(p)


def test_rgb_and_singular_affines_are_named(tmp_path):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    with pytest.raises(CaseError, match=r"rgb.nii.gz: voxels of type .*RGB.*own channel"):
        read_nifti(tmp_path / "rgb.nii.gz")
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.set_sform(np.zeros((4, 4)), code=1)
    nib.save(img, str(tmp_path / "zero.nii.gz"))
    with pytest.raises(CaseError, match=r"zero.nii.gz: the affine \(sform/qform\) is singular"):
        read_nifti(tmp_path / "zero.nii.gz")
