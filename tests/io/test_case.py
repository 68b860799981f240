import gzip

import nibabel as nib
import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.io import CaseError, recognise
from tests.conftest import ISLES, make_case_folder, write_nifti


def test_isles_folder_loads_in_napari_order(case_folder):
    case = nl.load_case(case_folder)
    assert case.modalities == list(ISLES)
    # file shape (X, Y, Z) = (12, 10, 5) with an RAS diagonal affine -> napari (Z, Y, X)
    assert case.image.shape == (6, 5, 10, 12)
    assert case.image.dtype == np.float32
    assert case.label.dtype == np.uint8 and case.label.shape == (5, 10, 12)
    np.testing.assert_allclose(case.spacing, [4.0, 1.5, 1.5])
    raw = np.asarray(nib.load(str(next(case_folder.rglob("*MR_MTT*.nii.gz")))).dataobj)
    np.testing.assert_array_equal(case.channel("mtt"), raw.transpose(2, 1, 0))
    assert case.label.sum() == 3 * 3 * 2


def test_names_are_matched_inside_longer_names_and_case_insensitively():
    assert recognise("VSD.Brain.XX.O.MR_ADC.128020.nii") == "ADC"
    assert recognise("sub-1_tmax.nii.gz") == "Tmax"
    assert recognise("BraTS19_2013_0_1_t1ce.nii.gz") == "t1ce"
    assert recognise("BraTS19_2013_0_1_t1.nii.gz") == "t1"
    assert recognise("BraTS19_x_seg.nii.gz") == "seg"
    assert recognise("VSD.Brain.XX.O.OT.128050.nii") == "OT"
    assert recognise("patient_RCBF_map.nii") == "rCBF"
    assert recognise("anatomy.nii") is None


def test_brats_folder(tmp_path):
    root = tmp_path / "BraTS19_001"
    for m in ("flair", "t1", "t2", "t1ce"):
        write_nifti(root / f"BraTS19_001_{m}.nii.gz", np.ones((6, 6, 4)))
    write_nifti(root / "BraTS19_001_seg.nii.gz", np.zeros((6, 6, 4)), dtype=np.uint8)
    case = nl.load_case(root)
    assert case.modalities == ["t1", "t1ce", "t2", "flair"]
    assert case.label is not None


def test_list_of_files_with_label_and_given_names(tmp_path):
    a = write_nifti(tmp_path / "first.nii", np.full((4, 5, 3), 1.0))
    b = write_nifti(tmp_path / "second.nii", np.full((4, 5, 3), 2.0))
    lab = write_nifti(tmp_path / "lesion_mask.nii", np.ones((4, 5, 3)), dtype=np.uint8)
    case = nl.load_case([a, b], label=lab)
    assert case.modalities == ["first", "second"] and case.label.sum() == 60
    case = nl.load_case([a, b], modalities=["T1", "FLAIR"])
    assert case.modalities == ["T1", "FLAIR"]
    np.testing.assert_array_equal(case.channel("flair"), 2.0)


def test_4d_nifti_msd_style(tmp_path):
    data = np.stack([np.full((4, 5, 3), float(c)) for c in range(4)], axis=-1)
    p = write_nifti(tmp_path / "BRATS_001.nii.gz", data)
    case = nl.load_case(p, modalities=["FLAIR", "T1w", "t1gd", "T2w"])
    assert case.image.shape == (4, 3, 5, 4)
    np.testing.assert_array_equal(case.image[2], 2.0)


def test_save_nifti_roundtrip_same_grid_and_header(case_folder, tmp_path):
    case = nl.load_case(case_folder)
    out = nl.save_nifti(case.image[1], case, tmp_path / "out" / "mtt_copy.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_array_equal(img.affine, case.affine)
    raw = np.asarray(nib.load(str(next(case_folder.rglob("*MR_MTT*.nii.gz")))).dataobj)
    np.testing.assert_array_equal(np.asarray(img.dataobj), raw)
    multi = nib.load(str(nl.save_nifti(case.image, case, tmp_path / "all.nii")))
    assert multi.shape == (12, 10, 5, 6)


def test_save_nifti_is_atomic(case_folder, tmp_path, monkeypatch):
    case = nl.load_case(case_folder)
    target = tmp_path / "rel.nii.gz"
    nl.save_nifti(case.image[0], case, target)
    before = target.read_bytes()

    def broken_save(img, path):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError):
        nl.save_nifti(case.image[1], case, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---- bad input: one test each --------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CaseError, match="nope.nii.gz: file or folder not found"):
        nl.load_case(tmp_path / "nope.nii.gz")
    with pytest.raises(CaseError, match="gone.nii: file not found"):
        nl.load_case([tmp_path / "gone.nii"])


def test_not_nifti(tmp_path):
    p = tmp_path / "fake_ADC.nii"
    p.write_text("this is not an image")
    with pytest.raises(CaseError, match="fake_ADC.nii: not a readable NIfTI"):
        nl.load_case([p])


def test_truncated_gz(tmp_path):
    p = write_nifti(tmp_path / "ADC.nii.gz", np.random.rand(30, 30, 10))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match=r"ADC.nii.gz: (the file is truncated|not a readable)"):
        nl.load_case([p])


def test_shapes_differ(tmp_path):
    a = write_nifti(tmp_path / "ADC.nii", np.ones((4, 5, 3)))
    b = write_nifti(tmp_path / "MTT.nii", np.ones((4, 5, 4)))
    with pytest.raises(CaseError, match=r"MTT.nii: shape \(4, 5, 4\) differs from ADC.nii \(4, 5, 3\)"):
        nl.load_case([a, b])


def test_affines_differ_beyond_tolerance(tmp_path):
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    a = write_nifti(tmp_path / "ADC.nii", np.ones((4, 5, 3)), aff)
    shifted = aff.copy()
    shifted[0, 3] = 0.0005  # within 1e-3 mm: accepted
    b = write_nifti(tmp_path / "MTT.nii", np.ones((4, 5, 3)), shifted)
    nl.load_case([a, b])
    shifted[0, 3] = 0.01
    b = write_nifti(tmp_path / "MTT.nii", np.ones((4, 5, 3)), shifted)
    with pytest.raises(CaseError, match="MTT.nii: affine differs from ADC.nii by 0.01 mm"):
        nl.load_case([a, b])


def test_label_on_other_grid(tmp_path):
    a = write_nifti(tmp_path / "ADC.nii", np.ones((4, 5, 3)))
    lab = write_nifti(tmp_path / "OT.nii", np.ones((4, 5, 2)), dtype=np.uint8)
    with pytest.raises(CaseError, match="label on another grid: .*OT.nii: shape"):
        nl.load_case([a], label=lab)


def test_label_with_non_integer_values(tmp_path):
    a = write_nifti(tmp_path / "ADC.nii", np.ones((4, 5, 3)))
    lab = write_nifti(tmp_path / "OT.nii", np.full((4, 5, 3), 0.5))
    with pytest.raises(CaseError, match="OT.nii: the label has 60 non-integer voxels"):
        nl.load_case([a], label=lab)


def test_nan_and_inf_voxels(tmp_path):
    data = np.ones((4, 5, 3))
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    p = write_nifti(tmp_path / "ADC.nii", data)
    with pytest.raises(CaseError, match="ADC.nii: 2 voxels are NaN or Inf"):
        nl.load_case([p])
    case = nl.load_case([p], nonfinite="zero")
    assert np.isfinite(case.image).all() and case.image.sum() == 58


def test_2d_and_5d_data(tmp_path):
    p2 = tmp_path / "ADC.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), str(p2))
    with pytest.raises(CaseError, match=r"ADC.nii: 2D data of shape \(4, 5\)"):
        nl.load_case([p2])
    p5 = tmp_path / "MTT.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 2, 2), np.float32), np.eye(4)), str(p5))
    with pytest.raises(CaseError, match="MTT.nii: 5D data"):
        nl.load_case([p5])


def test_empty_folder_and_unrecognised_names(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(CaseError, match=r"empty: no .nii or .nii.gz files in this folder \(found: notes.txt\)"):
        nl.load_case(tmp_path / "empty")
    odd = tmp_path / "odd"
    write_nifti(odd / "scan_a.nii.gz", np.ones((3, 3, 3)))
    write_nifti(odd / "scan_b.nii.gz", np.ones((3, 3, 3)))
    with pytest.raises(CaseError, match="no recognised modality names among scan_a.nii.gz, scan_b.nii.gz"):
        nl.load_case(odd)


def test_uncompressed_and_gzip_are_the_same(tmp_path):
    a = make_case_folder(tmp_path / "a", suffix=".nii", seed=3)
    b = make_case_folder(tmp_path / "b", suffix=".nii.gz", seed=3)
    np.testing.assert_array_equal(nl.load_case(a).image, nl.load_case(b).image)
    assert gzip.open(next(b.rglob("*ADC*.nii.gz"))).read(4)  # really gzip


def test_annex_style_symlinks_hidden_files_and_absent_content(tmp_path):
    """DataLad / git-annex: every file a link into .git/annex; macOS '._' files beside them."""
    import os

    import napari_lrp as nl
    from tests.conftest import make_case_folder

    store = make_case_folder(tmp_path / "store", nested=False)
    case = tmp_path / "dataset" / "case_01"
    annex = tmp_path / "dataset" / ".git" / "annex" / "objects"
    annex.mkdir(parents=True)
    case.mkdir(parents=True)
    for i, f in enumerate(sorted(store.iterdir())):
        obj = annex / f"SHA256E-s{i}.nii.gz"
        obj.write_bytes(f.read_bytes())
        os.symlink(os.path.relpath(obj, case), case / f.name)
        (case / f"._{f.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    loaded = nl.load_case(case)
    assert loaded.modalities == ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"] and loaded.label is not None
    # a linked folder is followed too
    os.symlink(case, tmp_path / "linked")
    assert nl.load_case(tmp_path / "linked").modalities == loaded.modalities
    # content that was never fetched is named
    gone = case / sorted(p.name for p in case.iterdir() if "ADC" in p.name and not p.name.startswith("."))[0]
    os.remove(os.path.join(case, os.readlink(gone)))
    with pytest.raises(CaseError, match=r"ADC.*a link to content that is not here .*datalad get"):
        nl.load_case(case)


def test_a_list_with_a_modality_twice_is_refused(tmp_path):
    import napari_lrp as nl
    from tests.conftest import make_case_folder

    folder = make_case_folder(tmp_path / "c", nested=False, label=None)
    adc = sorted(folder.glob("*ADC*"))[0]
    copy = tmp_path / "other" / adc.name
    copy.parent.mkdir()
    copy.write_bytes(adc.read_bytes())
    with pytest.raises(CaseError, match=r"a second file for modality ADC"):
        nl.load_case([adc, copy])
    with pytest.raises(CaseError, match=r"modality names \['A', 'a'\] given twice"):
        nl.load_case([adc, sorted(folder.glob("*MTT*"))[0]], modalities=["a", "A"])
