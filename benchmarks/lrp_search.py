"""LRP hyper-parameter search on the sample case: the whole search against one LRP run, and what
the reuse of the kept forward pass and the shared perturbation scores buy.

Run: python benchmarks/lrp_search.py [--gammas 0,0.25,1] [--steps 6]
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")

import napari_lrp as nl  # noqa: E402
from napari_lrp.analysis.search import lrp_search  # noqa: E402
from napari_lrp.samples import sample_case_path, sample_model_path  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gammas", default="0,0.25,1")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--figure", default=None, help="write the contour plots here (e.g. docs/search_contours.png)")
    args = ap.parse_args(argv)
    gammas = tuple(float(g) for g in args.gammas.split(","))
    model = nl.load_model(sample_model_path())
    case = nl.load_case(sample_case_path(1))
    nl.explain(model, case, preset="epsilon-gamma-box")  # warm-up
    t0 = time.perf_counter()
    base = nl.explain(model, case, preset="epsilon-gamma-box")
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = lrp_search(model, case, gammas=gammas, steps=args.steps)
    search = time.perf_counter() - t0
    n = len(res.table)
    t0 = time.perf_counter()
    for _ in range(n):  # the relevance passes alone, on the kept forward pass
        base.with_rules(res.best_rules)
    reuse = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    nl.explain(model, case, preset="epsilon-gamma-box", rules=res.best_rules)
    fresh = time.perf_counter() - t0
    print(f"sample case 1, sample model, {n} grid points (gammas {gammas} for encoder x decoder), steps {args.steps}")
    print("| measurement | s | x one LRP run | target |")
    print("|---|---:|---:|---:|")
    print(f"| one LRP run (epsilon-gamma-box) | {one:.3f} | 1.00 | |")
    print(f"| one grid point's relevance on the kept forward pass | {reuse:.3f} | {reuse / one:.2f} | |")
    print(f"| the same point as a fresh run | {fresh:.3f} | {fresh / one:.2f} | |")
    print(f"| whole search (relevance, coefficients, MoRF + LeRF per point) | {search:.2f} | {search / one:.1f} "
          "| <= 15 |")
    print(f"best: {res.best}")
    if args.figure:
        from napari_lrp.metrics.plots import plot_search

        plot_search(res.table).savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
