import nibabel as nib
import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.io.orientation import Grid
from tests.conftest import write_nifti


def _rot(deg_x, deg_z):
    ax, az = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def _affine(kind):
    zooms = np.diag([0.9, 0.9, 6.0])
    a = np.eye(4)
    if kind == "RAS":
        a[:3, :3] = zooms
    elif kind == "LAS":
        a[:3, :3] = np.diag([-1, 1, 1]) @ zooms
    elif kind == "LPS":
        a[:3, :3] = np.diag([-1, -1, 1]) @ zooms
    elif kind == "oblique":
        a[:3, :3] = _rot(12, 20) @ np.diag([-1, 1, 1]) @ zooms
    a[:3, 3] = [30.0, -20.0, 10.0]
    return a


MARKS = [(3, 5, 2), (7, 1, 4)]


@pytest.mark.parametrize("kind", ["RAS", "LAS", "LPS", "oblique"])
def test_marked_voxel_round_trip(tmp_path, kind):
    aff = _affine(kind)
    data = np.zeros((9, 8, 6), np.float32)
    for v, ijk in enumerate(MARKS, start=1):
        data[ijk] = v
    src = write_nifti(tmp_path / "VSD_ADC.nii.gz", data, aff)
    case = nl.load_case([src])
    grid = case.grid
    idx = [tuple(np.argwhere(case.image[0] == v)[0]) for v in (1, 2)]
    for (ijk, zyx) in zip(MARKS, idx):
        true_world = aff[:3, :3] @ np.array(ijk) + aff[:3, 3]
        np.testing.assert_allclose(grid.napari_to_world(zyx), true_world, atol=1e-4)
    napari_world = [grid.translate + np.array(z) * grid.spacing for z in idx]
    if kind != "oblique":
        # napari world (Z, Y, X) is RAS+ world (S, A, R) exactly
        for ijk, w in zip(MARKS, napari_world):
            np.testing.assert_allclose(w[::-1], aff[:3, :3] @ np.array(ijk) + aff[:3, 3], atol=1e-4)
    else:
        # obliquity is dropped (scanner-aligned frame): distances in mm are kept
        d_true = np.linalg.norm(aff[:3, :3] @ (np.array(MARKS[0]) - np.array(MARKS[1])))
        np.testing.assert_allclose(np.linalg.norm(napari_world[0] - napari_world[1]), d_true, rtol=1e-6)
    np.testing.assert_allclose(sorted(case.spacing), sorted([0.9, 0.9, 6.0]), rtol=1e-6)
    out = nl.save_nifti(case.image[0], case, tmp_path / "back.nii.gz")
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    written = np.asarray(back.dataobj)
    for v, ijk in enumerate(MARKS, start=1):
        assert written[ijk] == v
    np.testing.assert_array_equal(written, data)


def test_grid_shape_mismatch_is_reported():
    g = Grid(np.eye(4), (4, 5, 6))
    with pytest.raises(ValueError, match="does not match the case grid"):
        g.from_napari(np.zeros((2, 2, 2)))
