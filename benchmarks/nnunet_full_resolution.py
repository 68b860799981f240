"""An nnU-Net v2 results folder on a BraTS-size case: time and peak resident memory of one relevance run.

The sample folder's plans with a 64^3 patch and the case's own spacing (1 mm: no resampling), random weights
(timing and memory only), a synthetic 6-channel case of 155 x 240 x 240 voxels. Each run in a fresh process.

Run: python benchmarks/nnunet_full_resolution.py [--patch 64] [--shape 155,240,240]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(folder: str, shape: tuple[int, int, int]) -> None:
    import numpy as np
    import torch

    import napari_lrp as nl
    from napari_lrp.io.case import Case
    from napari_lrp.io.orientation import Grid

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    brain = (z**2 + y**2 + x**2) < 0.8
    image = np.stack([(brain * (1 + 0.1 * c) + 0.05 * rng.standard_normal(shape, dtype=np.float32)) * brain
                      for c in range(6)]).astype(np.float32)
    label = (((z - 0.2) ** 2 + (y - 0.1) ** 2 + x**2) < 0.04).astype(np.uint8)
    grid = Grid(affine=np.diag([1.0, 1.0, 1.0, 1.0]), shape=shape[::-1])
    case = Case(image=image, modalities=["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"], label=label, grid=grid,
                name="brats-size")
    model = nl.load_model(folder, fold=0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    exp = nl.explain(model, case, preset="epsilon-gamma-box", target="ground truth")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gb": peak, "windows": exp.tiling["windows"],
                      "unaccounted": exp.ledger.unaccounted}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--shape", default="155,240,240")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if args.child:
        return child(args.child, shape)
    import torch

    from napari_lrp.models.nnunet import build_nnunet_network
    from napari_lrp.samples import sample_nnunet_path

    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(sample_nnunet_path(), folder)
    plans = json.loads((folder / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    cfg["patch_size"] = [args.patch] * 3
    cfg["spacing"] = [1.0, 1.0, 1.0]
    cfg["architecture"]["arch_kwargs"]["strides"] = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    cfg["architecture"]["arch_kwargs"]["kernel_sizes"] = [[3, 3, 3]] * 3
    (folder / "plans.json").write_text(json.dumps(plans))
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    torch.manual_seed(0)
    ckpt["network_weights"] = build_nnunet_network(cfg, 6, 2, "benchmark").state_dict()
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), "--shape", args.shape],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    print(f"nnU-Net folder (PlainConvUNet 8-16-32, patch {args.patch}^3, step 0.5), case 6 x {shape}, "
          "epsilon-gamma-box, CPU, fresh process")
    print("| run | seconds | peak RSS GB | windows | unaccounted |")
    print("|---|---:|---:|---:|---:|")
    print(f"| nnU-Net folder, fold 0 | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['windows']} | "
          f"{r['unaccounted']:.1e} |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
