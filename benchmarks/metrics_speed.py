"""Metric speed: the live slider path and a full sweep, measured side by side.

1. Re-apply an output (heatmap) filter and recompute every inclusivity coefficient for a (6, 19, 192,
   192) relevance volume (the GUI slider path): median over repeats, target <= 50 ms.
2. A full default sweep (pass 10 + clamp 5 = 15 settings, filter after every block, re-propagating from
   the kept forward pass) against one LRP run on the sample case with the sample model: target <= 10x.

    python benchmarks/metrics_speed.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    import napari_lrp as nl
    from napari_lrp.analysis.sweep import sweep
    from napari_lrp.lrp.filters import default_grid
    from napari_lrp.samples import load_sample_case, load_sample_model

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    rng = np.random.default_rng(0)
    R = (rng.standard_normal((6, 19, 192, 192)) ** 3).astype(np.float32)
    image = rng.random((6, 19, 192, 192)).astype(np.float32)
    label = (rng.random((19, 192, 192)) > 0.97).astype(np.uint8)
    image_mask = nl.metrics.input_mask(image, 0.1)  # a property of the image: computed once per case
    times = []
    for i in range(args.repeats + 2):
        alpha = 0.05 + 0.9 * (i % 10) / 10
        t0 = time.perf_counter()
        Rf = nl.filters.Clamp(0, alpha)(R[None])[0]
        nl.metrics.inclusivities(Rf, image_mask, label)  # input and ground-truth, every channel
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[2:]) * 1000
    print("| measurement | value | target |")
    print("|---|---:|---:|")
    print(f"| filter + all inclusivity coefficients, (6, 19, 192, 192), median of {args.repeats} | {med:.1f} ms "
          f"| <= 50 ms |")

    model, case = load_sample_model("cpu"), load_sample_case(1)
    nl.explain(model, case, preset="paper")  # warm-up
    t0 = time.perf_counter()
    exp = nl.explain(model, case, preset="paper")
    one = time.perf_counter() - t0
    grid = default_grid(("pass", "clamp"))
    t0 = time.perf_counter()
    table = sweep(exp, placement="blocks", grid=grid, include_unfiltered=False)
    full = time.perf_counter() - t0
    print(f"| one LRP run (paper preset, sample case {case.shape}) | {one:.2f} s | |")
    print(f"| full sweep, {len(grid)} settings after every block ({len(table)} rows) | {full:.2f} s "
          f"= {full / one:.1f}x one run | <= 10x |")


if __name__ == "__main__":
    main()
