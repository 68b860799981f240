"""Shared fixtures: tiny NIfTI cases and tiny models made on the fly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ISLES = ("ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP")


def write_nifti(path: Path, data, affine=None, dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 4.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(path))
    return path


def make_case_folder(root: Path, shape=(12, 10, 5), affine=None, seed=0, names=ISLES, label="OT",
                     nested=True, suffix=".nii.gz") -> Path:
    """An ISLES-style case: one file per modality (in nested folders) and a lesion label."""
    rng = np.random.default_rng(seed)
    for i, m in enumerate(names):
        stem = f"VSD.Brain.XX.O.MR_{m}.{100 + i}"
        p = root / stem / f"{stem}{suffix}" if nested else root / f"{stem}{suffix}"
        write_nifti(p, rng.random(shape) * (i + 1), affine)
    if label:
        lab = np.zeros(shape, np.uint8)
        lab[3:6, 2:5, 1:3] = 1
        stem = f"VSD.Brain.XX.O.{label}.200"
        write_nifti(root / stem / f"{stem}{suffix}" if nested else root / f"{stem}{suffix}", lab, affine, np.uint8)
    return root


@pytest.fixture
def case_folder(tmp_path) -> Path:
    return make_case_folder(tmp_path / "case_01")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def make_tiny_model(folder: Path, divisible: int = 1, seed: int = 0):
    """The paper's UNet3D at width 4 for the six ISLES modalities, saved with its card and loaded back."""
    import napari_lrp as nl
    from napari_lrp.models import UNet3D

    torch.manual_seed(seed)
    card = {"name": "tiny", "architecture": {"class": "napari_lrp.models.UNet3D",
                                             "kwargs": {"in_channels": 6, "out_channels": 2, "width": 4}},
            "modalities": list(ISLES), "input": {"spatial_size": None, "intensity": "minmax", "divisible": divisible}}
    return nl.load_model(nl.save_model(UNet3D(6, 2, width=4).eval(), card, folder))


@pytest.fixture(scope="module")
def paper_explanation(tmp_path_factory):
    """The paper preset's explanation of a tiny case (12, 10, 5) by the tiny model, every layer kept."""
    import napari_lrp as nl

    tmp = tmp_path_factory.mktemp("tiny")
    model = make_tiny_model(tmp / "m")
    case = nl.load_case(make_case_folder(tmp / "case", shape=(12, 10, 5)))
    return nl.explain(model, case, preset="paper", target="groundtruth", keep=True)


def lying_header(path: Path, claimed, gz: bool = True) -> Path:
    """A small valid NIfTI (4x4x4 float32) whose header claims ``claimed`` voxels (a 1.4 KB 'huge' file)."""
    import gzip

    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    raw = bytearray(img.header.binaryblock) + bytearray(4) + np.ones(64, np.float32).tobytes()
    dims = np.frombuffer(bytes(raw[40:56]), np.int16).copy()
    dims[1:4] = claimed
    raw[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path
