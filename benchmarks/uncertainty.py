"""Uncertainty-aware relevance on the sample model: cost of T draws against one LRP run, and where the
predictive entropy sits (lesion border vs lesion interior vs the rest of the brain).

MC dropout runs the sample model fine-tuned with dropout 0.1 (``sample_dropout_model_path()``, its own
Dropout modules) and, for comparison, the plain sample model with dropout of rate p inserted after every
activation (``dropout=p``; an approximation: it was not trained with it); the flips need no dropout.
Run: python benchmarks/uncertainty.py [--draws 20] [--p 0.1] [--case 1] [--device cpu|cuda]
(on a GPU the draws run in batches sized from its free memory; the table gives the batches.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

import napari_lrp as nl
from napari_lrp.samples import sample_case_path, sample_dropout_model_path, sample_model_path


def regions(case, tau_x: float = 0.1):
    """Boolean (Z, Y, X) masks: lesion border (one voxel in-plane on either side of the ground-truth
    boundary), lesion interior (the rest of the lesion) and brain (image above tau_x of its maximum,
    away from the lesion)."""
    gt = case.ground_truth
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)  # in-plane: the slices are 6.5 mm thick
    dil, ero = ndimage.binary_dilation(gt, st), ndimage.binary_erosion(gt, st)
    border = dil & ~ero
    img = case.image.max(0)
    brain = (img > tau_x * img.max()) & ~ndimage.binary_dilation(gt, st, iterations=3)
    return {"lesion border": border, "lesion interior": ero, "brain": brain}


def timed(fn, repeats: int = 3, warm: bool = False):
    """Median seconds of ``repeats`` calls and the last result; ``warm``: one untimed call first (on a GPU the
    first batch of a new size picks its kernels)."""
    times = []
    out = fn() if warm else None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--case", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    model = nl.load_model(sample_model_path(), device=args.device)
    case = nl.load_case(sample_case_path(args.case))
    nl.explain(model, case, preset="paper")  # warm-up
    t_one, _ = timed(lambda: nl.explain(model, case, preset="paper"))
    dropout_model = nl.load_model(sample_dropout_model_path(), device=args.device)
    gpu = args.device != "cpu"
    t_mc, mc = timed(lambda: nl.explain(dropout_model, case, preset="paper", mc_samples=args.draws, seed=0),
                     repeats=1 + 2 * gpu, warm=gpu)
    t_ins, ins = timed(lambda: nl.explain(model, case, preset="paper", mc_samples=args.draws, dropout=args.p,
                                          seed=0), repeats=1 + 2 * gpu, warm=gpu)
    t_tta, tta = timed(lambda: nl.explain(model, case, preset="paper", tta="flips"), repeats=1 + 2 * gpu, warm=gpu)
    print(f"sample case {args.case} {case.shape}, sample model, {args.device}"
          + (", CPU threads as torch sets them" if args.device == "cpu" else ""))
    print("| run | s | x one LRP run | target | batches |")
    print("|---|---:|---:|---:|---:|")
    print(f"| one LRP run (paper) | {t_one:.2f} | 1.00 | | |")
    print(f"| MC dropout T = {args.draws}, dropout model (p = 0.1) | {t_mc:.2f} | {t_mc / t_one:.2f} | <= 8 "
          f"| {len(mc._run.batches)} |")
    print(f"| MC dropout T = {args.draws}, sample model + inserted p = {args.p} | {t_ins:.2f} "
          f"| {t_ins / t_one:.2f} | | {len(ins._run.batches)} |")
    print(f"| flips (8 draws) | {t_tta:.2f} | {t_tta / t_one:.2f} | | {len(tta._run.batches)} |")
    masks = regions(case)
    print()
    print("| run | " + " | ".join(f"entropy {k} (nats)" for k in masks) + " | border > interior and brain |")
    print("|---|" + "---:|" * (len(masks) + 1))
    for name, exp in ((f"MC dropout T={args.draws}, dropout model", mc),
                      (f"MC dropout T={args.draws}, inserted p={args.p}", ins), ("flips", tta)):
        means = {k: float(exp.predictive_entropy[m].mean()) for k, m in masks.items()}
        ok = means["lesion border"] > max(means["lesion interior"], means["brain"])
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in means.values()) + f" | {'yes' if ok else 'NO'} |")
    print()
    brain = masks["brain"]
    spread = float(mc.relevance_std.sum(0)[brain].mean() / np.abs(mc.relevance.sum(0))[brain].mean())
    print(f"mean relevance sd / mean |relevance| inside the brain: MC {spread:.3f}")


if __name__ == "__main__":
    main()
