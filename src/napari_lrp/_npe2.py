"""Thin npe2 contributions: reader, writers and sample data (no computation lives here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import CaseError, Grid, grid_from_layer, load_case, save_nifti
from .io.nifti import is_nifti_path
from .layerdata import case_layer_data


def _guard_current_viewer() -> None:
    """The viewer that is opening a case shows one case: older case layers go once the new ones are in."""
    try:
        import napari

        from .widgets._layers import guard_one_case

        viewer = napari.current_viewer()
        if viewer is not None:
            guard_one_case(viewer)
    except Exception:  # noqa: BLE001 - reading must not fail for lack of a viewer
        pass


def _read(path):
    paths = path if isinstance(path, list) else [path]
    if len(paths) == 1:
        case = load_case(paths[0])
    else:
        case = load_case(paths)
    _guard_current_viewer()
    return case_layer_data(case)


def get_reader(path):
    """npe2 reader: a case folder, one NIfTI file (3D or 4D) or a list of NIfTI files."""
    paths = path if isinstance(path, list) else [path]
    if all(os.path.isdir(p) for p in paths) and len(paths) == 1:
        if any(is_nifti_path(p) for p in Path(paths[0]).rglob("*")):
            return _read
        return None
    if all(is_nifti_path(p) for p in paths):
        return _read
    return None


def _grid_of(meta: dict, data_shape) -> Grid:
    md = meta.get("metadata") or {}
    grid = md.get("napari_lrp_grid")
    if isinstance(grid, Grid) and tuple(grid.napari_shape) == tuple(data_shape[-3:]):
        return grid
    return grid_from_layer(meta.get("scale", (1, 1, 1)), meta.get("translate", (0, 0, 0)), data_shape[-3:])


def _write(path: str, data, meta: dict) -> list[str]:
    data = np.asarray(data)
    if data.ndim < 3:
        raise CaseError(f"{path}: only 3D (or 4D) layers can be written as NIfTI, got shape {data.shape}")
    if not (path.lower().endswith(".nii") or path.lower().endswith(".nii.gz")):
        path = path + ".nii.gz"
    save_nifti(data, _grid_of(meta, data.shape), path)
    return [path]


def write_image(path: str, data, meta: dict) -> list[str]:
    """npe2 writer for one image layer to .nii/.nii.gz on the layer's original grid."""
    return _write(path, data, meta)


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 writer for one labels layer (uint8 if it fits)."""
    data = np.asarray(data)
    if data.max(initial=0) <= 255 and data.min(initial=0) >= 0:
        data = data.astype(np.uint8)
    return _write(path, data, meta)


def _sample(i: int):
    from .samples import sample_case_path

    case = load_case(sample_case_path(i))
    _guard_current_viewer()
    return case_layer_data(case)


def sample_case_1():
    return _sample(1)


def sample_case_2():
    return _sample(2)


def sample_case_3():
    return _sample(3)
