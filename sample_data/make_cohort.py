"""Deterministic generator of ISLES-2017-like stroke cases from the MNI ICBM152 template.

Anatomy: the MNI ICBM 2009a nonlinear symmetric template (T1, grey and white matter maps) that
nilearn ships (nilearn is needed only to regenerate; ``pip install -e .[dev]``).
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University; see README for the attribution.

Each case (seeded): a slight head pose (rotation, shift), an ischaemic core in a vascular territory
(smooth irregular blob of random size) and a larger perfusion deficit around it, six maps with
plausible contrasts (inside the core ADC is low, rCBF and rCBV are reduced; MTT, Tmax and TTP are
high over the larger deficit), a smooth multiplicative bias, Rician-like noise, thick slices like
ISLES (19 slices of 6.5 mm). The lesion mask OT is the core. Files follow the ISLES layout:
``case_NN/VSD.Brain.XX.O.MR_<MOD>.<id>/VSD.Brain.XX.O.MR_<MOD>.<id>.nii.gz`` (OT: ``...O.OT...``).

    python sample_data/make_cohort.py OUT_DIR --seeds 1 2 3
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

MODALITIES = ("ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP")
SHAPE = (64, 76, 19)  # (X, Y, Z) voxels
SPACING = (2.8, 2.8, 6.5)  # mm
# territory centres in MNI mm (x, y, z): MCA, ACA, PCA, left and right
TERRITORIES = {
    "left MCA": (-42, -10, 12), "right MCA": (42, -10, 12),
    "left ACA": (-10, 25, 38), "right ACA": (10, 25, 38),
    "left PCA": (-26, -68, 8), "right PCA": (26, -68, 8),
    "left deep MCA": (-24, 2, 10), "right deep MCA": (24, 2, 10),
}
#: tissue values (GM, WM, CSF) of each map, and its factor in the core and in the deficit rim
CONTRAST = {
    "ADC": ((800.0, 720.0, 3000.0), 0.55, 1.0),
    "MTT": ((4.0, 5.0, 0.5), 2.2, 1.8),
    "rCBF": ((60.0, 25.0, 2.0), 0.2, 0.55),
    "rCBV": ((4.0, 2.2, 0.2), 0.4, 0.95),
    "Tmax": ((1.0, 1.5, 0.2), 9.0, 6.0),
    "TTP": ((10.0, 11.0, 2.0), 1.8, 1.5),
}


def _nilearn_data() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


@lru_cache(maxsize=1)
def template():
    """(t1, gm, wm) float32 arrays in [0, 1] and their affine (MNI 1 mm)."""
    d = _nilearn_data()
    imgs = [nib.load(str(d / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz")) for k in ("t1", "gm", "wm")]
    arrs = [np.asarray(i.dataobj, dtype=np.float32) / 255.0 for i in imgs]
    return arrs[0], arrs[1], arrs[2], imgs[0].affine


def _rotation(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def case_affine() -> np.ndarray:
    """The output grid: axis-aligned RAS, centred on the brain."""
    aff = np.diag(list(SPACING) + [1.0])
    centre = np.array([0.0, -18.0, 14.0])
    aff[:3, 3] = centre - (np.array(SHAPE) - 1) / 2 * np.array(SPACING)
    return aff


def _smooth_field(rng, shape, sigma, amplitude):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    f = f / (np.abs(f).max() + 1e-12)
    return 1.0 + amplitude * f


def make_case(seed: int) -> dict:
    """Arrays (X, Y, Z) of the six maps and OT for one seeded case, plus affine and metadata."""
    rng = np.random.default_rng(seed)
    t1, gm, wm, taff = template()
    aff = case_affine()
    # head pose: the subject's head is rotated/shifted relative to the scanner grid
    R = _rotation(*np.deg2rad(rng.uniform(-4, 4, 3)))
    shift = rng.uniform(-4, 4, 3)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    centre = aff[:3, :3] @ ((np.array(SHAPE) - 1) / 2) + aff[:3, 3]
    mni = (world - centre) @ R.T + centre + shift
    vox = (mni - taff[:3, 3]) @ np.linalg.inv(taff[:3, :3]).T
    coords = vox.T

    def sample(a, order=1):
        return ndimage.map_coordinates(a, coords, order=order, mode="constant").reshape(SHAPE).astype(np.float32)

    T1, GM, WM = sample(t1), sample(gm), sample(wm)
    head = T1 > 0.08
    brain = (GM + WM) > 0.25
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=1))
    csf = np.clip(head.astype(np.float32) - GM - WM, 0, 1) * ndimage.binary_dilation(brain, iterations=2)

    # lesion in a vascular territory, in MNI space (so it follows the head pose)
    name = list(TERRITORIES)[int(rng.integers(len(TERRITORIES)))]
    c = np.array(TERRITORIES[name]) + rng.uniform(-6, 6, 3)
    radius = rng.uniform(9, 20)
    axes = radius * rng.uniform(0.7, 1.3, 3)
    d = (mni - c) / axes
    dist = np.sqrt((d**2).sum(axis=1)).reshape(SHAPE)
    wobble = ndimage.gaussian_filter(rng.standard_normal(SHAPE), (2, 2, 0.8))
    wobble = 0.35 * wobble / (np.abs(wobble).max() + 1e-12)
    tissue = (GM + WM) > 0.35
    core = ((dist + wobble) < 1.0) & tissue
    rim = ((dist + wobble) < rng.uniform(1.5, 2.0)) & tissue & ~core
    core_f = ndimage.gaussian_filter(core.astype(np.float32), 0.6)
    rim_f = ndimage.gaussian_filter(rim.astype(np.float32), 0.8)

    bias = _smooth_field(rng, SHAPE, (12, 12, 4), rng.uniform(0.05, 0.15))
    out = {}
    for mod in MODALITIES:
        (g, w, cs), fcore, frim = CONTRAST[mod]
        base = g * GM + w * WM + cs * csf
        val = base * (1 + (fcore - 1) * core_f + (frim - 1) * rim_f * (1 - core_f))
        val = val * bias * rng.uniform(0.9, 1.1)
        sigma = 0.03 * float(np.percentile(val[brain], 95))
        noisy = np.sqrt((val + sigma * rng.standard_normal(SHAPE)) ** 2 + (sigma * rng.standard_normal(SHAPE)) ** 2)
        noisy[~head] = 0
        out[mod] = noisy.astype(np.float32)
    out["OT"] = core.astype(np.uint8)
    return {"maps": out, "affine": aff, "territory": name, "seed": seed}


def _quantised(a: np.ndarray):
    """int16 data and slope so the stored float values are exact after scaling (keeps files small)."""
    mx = float(np.abs(a).max())
    slope = mx / 32000.0 if mx > 0 else 1.0
    q = np.round(a / slope).astype(np.int16)
    return q, slope


def write_case(seed: int, folder: str | Path) -> Path:
    """Write one case in the ISLES layout under ``folder/case_{seed:02d}``."""
    case = make_case(seed)
    root = Path(folder) / f"case_{seed:02d}"
    for i, (mod, arr) in enumerate(case["maps"].items()):
        tag = f"OT.{seed:03d}{i}" if mod == "OT" else f"MR_{mod}.{seed:03d}{i}"
        name = f"VSD.Brain.XX.O.{tag}"
        path = root / name / f"{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        if mod == "OT":
            img = nib.Nifti1Image(arr, case["affine"])
        else:
            q, slope = _quantised(arr)
            img = nib.Nifti1Image(q, case["affine"])
            img.header.set_slope_inter(slope, 0.0)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(case["affine"], code=1)
        img.set_sform(case["affine"], code=1)
        nib.save(img, str(path))
    return root


def stored_maps(seed: int) -> dict:
    """What a written case holds after int16 quantisation (for reproducibility checks)."""
    case = make_case(seed)
    out = {}
    for mod, arr in case["maps"].items():
        if mod == "OT":
            out[mod] = arr.astype(np.float32)
        else:
            q, slope = _quantised(arr)
            out[mod] = (q.astype(np.float64) * slope).astype(np.float32)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args(argv)
    for s in args.seeds:
        print(write_case(s, args.out))


if __name__ == "__main__":
    main()
