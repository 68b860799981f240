"""npe2 contributions under a virtual display: reader, writers, sample data, manifest."""

import nibabel as nib
import numpy as np
import pytest

import napari_lrp as nl
from tests.conftest import ISLES, write_nifti
from tests.io.test_orientation import _affine


def test_manifest_validates():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-lrp")
    assert pm.name == "napari-lrp"
    assert {s.display_name for s in pm.contributions.sample_data} == {"Stroke case 1", "Stroke case 2",
                                                                      "Stroke case 3"}


def test_reader_opens_a_case_folder(make_napari_viewer, case_folder):
    viewer = make_napari_viewer()
    layers = viewer.open(str(case_folder), plugin="napari-lrp")
    assert [ly.name for ly in layers] == list(ISLES) + ["ground truth"]
    case = nl.load_case(case_folder)
    for ly in layers[:6]:
        assert ly.__class__.__name__ == "Image"
        assert ly.colormap.name == "gray"
        np.testing.assert_allclose(ly.scale, [4.0, 1.5, 1.5])
        np.testing.assert_array_equal(ly.metadata["affine"], case.affine)
        assert ly.metadata["napari_lrp_grid"].header is not None
    lab = layers[-1]
    assert lab.__class__.__name__ == "Labels" and lab.data.dtype == np.uint8
    assert str(lab.units[0]) in ("millimeter", "mm")


@pytest.mark.parametrize("kind", ["RAS", "LPS", "oblique"])
def test_marked_voxel_world_position_and_writer(make_napari_viewer, tmp_path, kind):
    aff = _affine(kind)
    data = np.zeros((9, 8, 6), np.float32)
    data[3, 5, 2] = 1
    src = write_nifti(tmp_path / "scan_ADC.nii.gz", data, aff)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(src), plugin="napari-lrp")
    idx = np.argwhere(layer.data == 1)[0]
    world = np.asarray(layer.data_to_world(idx))
    grid = layer.metadata["napari_lrp_grid"]
    true = aff[:3, :3] @ np.array([3, 5, 2]) + aff[:3, 3]
    if kind != "oblique":
        np.testing.assert_allclose(world[::-1], true, atol=1e-4)
    np.testing.assert_allclose(grid.napari_to_world(idx), true, atol=1e-4)
    out = tmp_path / "written.nii.gz"
    layer.save(str(out), plugin="napari-lrp")
    back = nib.load(str(out))
    assert np.asarray(back.dataobj)[3, 5, 2] == 1 and np.asarray(back.dataobj).sum() == 1
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)


def test_labels_writer(make_napari_viewer, case_folder, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open(str(case_folder), plugin="napari-lrp")
    out = tmp_path / "ot.nii.gz"
    layers[-1].save(str(out), plugin="napari-lrp")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    src = next(case_folder.rglob("*OT*.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(nib.load(str(src)).dataobj))


@pytest.mark.parametrize("i", [1, 2, 3])
def test_sample_menu_opens_each_case(make_napari_viewer, i):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-lrp", f"stroke_case_{i}")
    names = [ly.name for ly in viewer.layers]
    assert names == ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP", "ground truth"]
    assert viewer.layers["ground truth"].data.max() == 1
