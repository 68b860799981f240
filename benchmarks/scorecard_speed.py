"""The scorecard's cost per metric family, as a ratio to the passes each structurally needs, measured side by
side on the sample case: robustness against one run per noise sample, randomisation against one run per
randomised step, faithfulness against one forward pass per curve point or subset (counted by a hook on the
network), localisation and complexity against one run.

Run: python benchmarks/scorecard_speed.py [--method lrp|gradient_x_input] [--repeat 3] [--width 16]

``--width W`` explains with the paper's UNet3D at width W (random weights) instead of the sample model (width 8,
a very light network): the fixed costs of the rank correlations and sorts then weigh as they do for real models.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

import napari_lrp as nl  # noqa: E402
import napari_lrp.metrics.perturbation as perturbation  # noqa: E402
from napari_lrp.lrp.kernels import onednn_convolutions  # noqa: E402
from napari_lrp.pipeline import explain_again  # noqa: E402
from napari_lrp.samples import sample_case_path, sample_model_path  # noqa: E402


def best_of(repeat, fn):
    """The shortest of ``repeat`` timings of fn() (s), and its last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def counted_forwards(exp, fn):
    """fn()'s time and how many forward passes of the network it made."""
    calls = [0]
    handle = exp.prepared_input.network.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, calls[0]
    finally:
        handle.remove()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="lrp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-noise", type=int, default=5)
    ap.add_argument("--width", type=int, default=None, help="a UNet3D of this width with random weights")
    args = ap.parse_args(argv)
    model = nl.load_model(sample_model_path(), device="cpu")
    if args.width:
        import tempfile

        from napari_lrp.models import UNet3D

        torch.manual_seed(0)
        card = {**model.card.to_dict(), "name": f"UNet3D width {args.width}, random weights"}
        card["architecture"] = {"class": "napari_lrp.models.UNet3D",
                                "kwargs": {"in_channels": 6, "out_channels": 2, "width": args.width}}
        card.pop("weights")
        folder = tempfile.mkdtemp()
        model = nl.load_model(nl.save_model(UNet3D(6, 2, width=args.width).eval(), card, folder), device="cpu")
    case = nl.load_case(sample_case_path(1))
    # a network with random weights predicts no lesion: its runs explain the ground truth instead
    exp = nl.explain(model, case, method=args.method, target="groundtruth" if args.width else "region")
    region = exp.target_region()
    run, _ = best_of(args.repeat, lambda: explain_again(exp, target=region))
    prep = exp.prepared_input

    def forward():
        with torch.no_grad(), onednn_convolutions():
            prep.network(prep.x)

    forward_s, _ = best_of(args.repeat, forward)
    rows = []

    def family(name, metrics, needed_s, what, **options):
        seconds, _ = best_of(args.repeat, lambda: nl.evaluate(exp, metrics=metrics, **options))
        rows.append((name, seconds, needed_s, what))

    family("robustness (both sensitivities)", ["robustness"], args.n_noise * run, f"{args.n_noise} runs",
           n_noise=args.n_noise)
    family("random-logit test", ["random_logit"], run, "1 run")
    family("model randomisation (all layers)", ["model_randomisation"], run, "1 run")
    for name, metrics, options in (("MoRF + LeRF (mean fill)", ["morf_auc", "lerf_auc"], {}),
                                   ("faithfulness correlation", ["faithfulness_correlation"], {"n_runs": 50})):
        seconds, calls = counted_forwards(exp, lambda m=metrics, o=options: nl.evaluate(exp, metrics=m, **o))
        rows.append((name, seconds, calls * forward_s, f"{calls} forward passes"))
    # ROAD needs one imputation (a sparse linear solve) per curve point besides its forward pass: timed alone
    imputing = [0.0, 0]
    imputed = perturbation.imputed

    def timed_imputation(*a, **k):
        t0 = time.perf_counter()
        try:
            return imputed(*a, **k)
        finally:
            imputing[0] += time.perf_counter() - t0
            imputing[1] += 1

    perturbation.imputed = timed_imputation
    try:
        seconds, calls = counted_forwards(exp, lambda: nl.evaluate(exp, metrics=["road_morf_auc", "road_lerf_auc"]))
    finally:
        perturbation.imputed = imputed
    rows.append(("ROAD MoRF + LeRF (noisy linear imputation)", seconds, calls * forward_s + imputing[0],
                 f"{calls} forward passes + {imputing[1]} imputations ({imputing[0]:.2f} s alone)"))
    family("localisation (5 metrics)", ["localisation"], run, "0.05 x 1 run (target)")
    family("complexity (2 metrics)", ["complexity"], run, "0.05 x 1 run (target)")
    print(f"sample case 1 {case.shape}, {model.card.name}, method {args.method}, CPU, best of {args.repeat}; one run "
          f"{run:.3f} s, one forward pass {forward_s:.4f} s")
    print("| metric family | s | structurally needed | s needed | ratio | target |")
    print("|---|---:|---|---:|---:|---:|")
    for name, seconds, needed, what in rows:
        target = "<= 0.05" if "0.05" in what else "<= 1.2"
        print(f"| {name} | {seconds:.3f} | {what.replace(' (target)', '')} | {needed:.3f} | "
              f"{seconds / needed:.3f} | {target} |")


if __name__ == "__main__":
    main()
