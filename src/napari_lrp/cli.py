"""The ``napari-lrp`` command line: demo, explain, sweep."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .lrp.filters import FILTER_SPEC_HELP
from .lrp.presets import PRESETS


def _virtual_display():
    """Start Xvfb when there is no display (headless runs need OpenGL on an X server)."""
    if os.environ.get("DISPLAY") or sys.platform != "linux":
        return None
    if shutil.which("Xvfb") is None:
        raise SystemExit("napari-lrp demo --headless needs a display: install xvfb (apt-get install xvfb) or set "
                         "DISPLAY")
    from pyvirtualdisplay import Display

    d = Display(visible=False, size=(1600, 1000), color_depth=24)
    d.start()
    return d


def _run_demo(args) -> int:
    """``napari-lrp demo``: napari with the sample case, the sample model and the docks (or, headless, files)."""
    if args.model not in (None, "nnunet") and not Path(args.model).exists():
        raise FileNotFoundError(f"--model {args.model}: model file or folder not found (a card, a model folder, a "
                                "bundle, an nnU-Net results folder, or 'nnunet' for the sample folder)")
    if args.headless:
        display = _virtual_display()
        try:
            from .widgets.demo import headless_demo

            for p in headless_demo(args.out, model=args.model):
                print(p)
        finally:
            if display is not None:
                display.stop()
        return 0
    import napari

    from .widgets.demo import open_demo

    open_demo(model=args.model)
    napari.run()
    return 0


def _run_explain(args) -> int:
    """``napari-lrp explain``: one case's relevance NIfTIs, prediction, coefficients and settings."""
    from .io import load_case
    from .io.atomic import check_output_folder, check_outside_inputs
    from .lrp.filters import filters_from_specs
    from .models import load_model
    from .pipeline import explain

    check_output_folder(args.out)  # before anything is computed
    check_outside_inputs(args.out, [args.case], "the case")
    case = load_case(args.case, nonfinite=args.nonfinite, label_values=args.label_value or None,
                     modalities=_modalities(args))
    model = load_model(args.model, device=args.device, fold=_fold(args.fold), mirroring=args.mirroring,
                       trust=args.trust)
    exp = explain(model, case, preset=args.preset, filters=filters_from_specs(args.filter), target=args.target,
                  mc_samples=args.mc_samples, dropout=args.dropout, seed=args.seed, tta=args.tta)
    out = Path(args.out)
    exp.save(out)
    print(exp.coefficients().to_string(index=False))
    print(f"wrote {out}")
    return 0


def _run_sweep(args) -> int:
    """``napari-lrp sweep``: the filter sweep of every case of a cohort."""
    from .batch import sweep_cohort
    from .io.atomic import check_output_folder, check_outside_inputs

    check_output_folder(args.out)
    check_outside_inputs(args.out, [args.cohort], "the cohort")
    table = sweep_cohort(args.cohort, args.model, args.out, preset=args.preset, workers=args.workers,
                         scheduler=args.scheduler, placement=args.placement, device=args.device,
                         target=args.target, label_values=args.label_value or None, nonfinite=args.nonfinite,
                         sampling={k: v for k, v in (("mc_samples", args.mc_samples), ("dropout", args.dropout),
                                                     ("tta", args.tta), ("seed", args.seed))
                                   if v is not None and not (k == "mc_samples" and v == 1)} or None,
                         resume=args.resume, lesions=args.lesions)
    failed = table[table.status == "failed"].case.unique() if "status" in table else []
    print(f"{table.case.nunique()} cases, {len(failed)} failed; table in {args.out}")
    return 0


def _run_concepts(args) -> int:
    """``napari-lrp concepts``: the reference cases of a layer's channels across a cohort."""
    from .batch import concept_references
    from .io.atomic import check_output_folder, check_outside_inputs

    check_output_folder(args.out)
    check_outside_inputs(args.out, [args.cohort], "the cohort")
    refs = concept_references(args.cohort, args.model, args.out, args.layer, top=args.top, preset=args.preset,
                              target=args.target, workers=args.workers, scheduler=args.scheduler,
                              device=args.device, crop=args.crop)
    print(f"{refs.channel.nunique()} channels of {args.layer}, {refs.case.nunique()} reference cases; "
          f"references.csv and crops/ in {args.out}")
    return 0


def _run_compare(args) -> int:
    """``napari-lrp compare``: attribution methods side by side on one case."""
    from .analysis.compare import compare, save_comparison, split_methods
    from .io import load_case
    from .io.atomic import check_output_folder, check_outside_inputs
    from .models import load_model

    check_output_folder(args.out)
    check_outside_inputs(args.out, [args.case], "the case")
    case = load_case(args.case, nonfinite=args.nonfinite, label_values=args.label_value or None,
                     modalities=_modalities(args))
    model = load_model(args.model, device=args.device)
    table, results = compare(model, case, split_methods(args.methods), target=args.target,
                             perturbation=not args.no_perturbation, sanity=args.sanity)
    path = save_comparison(table, results, args.out)
    print(table.to_string(index=False))
    print(f"wrote {path}")
    return 0


def _case_or_cohort(args):
    """The case ``args.data`` names, or None when it is a cohort: a folder that is no case (its files name no
    modality) whose sub-folders are cases. A case folder of per-modality folders (ISLES) stays a case."""
    from pathlib import Path

    from .io import load_case
    from .io.nifti import CaseError

    try:
        return load_case(args.data, nonfinite=args.nonfinite, label_values=args.label_value or None,
                         modalities=_modalities(args))
    except CaseError:
        p = Path(args.data)
        subfolders = [f for f in p.iterdir() if f.is_dir() and not f.name.startswith(".")] if p.is_dir() else []
        if not subfolders or not all(any(f.iterdir()) for f in subfolders):
            raise
        return None


def _run_evaluate(args) -> int:
    """``napari-lrp evaluate``: the scorecard of several methods on a case or a cohort."""
    from .analysis.compare import split_methods
    from .io.atomic import check_output_folder, check_outside_inputs

    check_output_folder(args.out)
    check_outside_inputs(args.out, [args.data], "the case or cohort")
    methods = split_methods(args.methods)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics != "all" else "all"
    options = {"noise": args.noise, "n_noise": args.n_noise, "n_runs": args.n_runs, "steps": args.steps,
               "n_blocks": args.n_blocks, "tolerance_mm": args.tolerance_mm, "seed": args.seed}
    case = _case_or_cohort(args)
    if case is None:
        from .batch import evaluate_cohort

        summary = evaluate_cohort(args.data, args.model, args.out, methods, metrics, target=args.target,
                                  workers=args.workers, scheduler=args.scheduler, device=args.device,
                                  label_values=args.label_value or None, nonfinite=args.nonfinite, **options)
        print(summary.drop(columns="settings").to_string(index=False))
        print(f"cohort {args.data}: scorecard.csv, scorecard.png, table.csv and cases/ in {args.out}")
        return 0
    from .batch.cohort_scorecard import scorecard_of_case, write_scorecard
    from .models import load_model

    model = load_model(args.model, device=args.device)
    table = scorecard_of_case(model, case, methods, args.target, metrics, **options)
    csv, png = write_scorecard(table, args.out)
    wide = table.pivot(index="metric", columns="method", values="value")
    print(wide.reindex(index=list(dict.fromkeys(table.metric)), columns=list(dict.fromkeys(table.method))).to_string())
    print(f"case {case.name}: wrote {csv} and {png}")
    return 0


TARGET_HELP = ("what is explained: region (default: the predicted region of the class), groundtruth, output, "
               "class:NAME, component:K (the K-th predicted lesion, largest first), gt-component:K, "
               "false-negative[:K], false-positive[:K], border:MM (a band of MM mm around the predicted surface), "
               "contrast:A-B (evidence for class A rather than B)")


def _case_options(parser) -> None:
    parser.add_argument("--label-value", type=int, action="append", default=[], metavar="V",
                        help="value of the ground-truth region in a multi-label file (repeatable); a binary "
                             "label needs none (any non-zero voxel)")
    parser.add_argument("--nonfinite", default="error", choices=["error", "zero"],
                        help="NaN/Inf voxels: refuse the case (default) or replace them by 0")


def _modalities_option(parser) -> None:
    parser.add_argument("--modalities", default=None, metavar="A,B,...",
                        help="channel names: for a case folder the channels to take, picked by name (any BraTS "
                             "spelling) in this order; for a 4D NIfTI the name of each channel in order")


def _modalities(args):
    if args.modalities is None:
        return None
    names = [m.strip() for m in args.modalities.split(",")]
    if not all(names):
        raise ValueError(f"--modalities {args.modalities!r}: an empty name; give comma-separated channel names "
                         "(e.g. t1,t1ce,t2,flair)")
    return names


def _fold(text):
    """--fold: None, 'all', N or N,M,..."""
    if text is None or text == "all":
        return text
    parts = [v.strip() for v in str(text).split(",")]
    if not all(v.isdigit() for v in parts):
        raise ValueError(f"--fold {text!r}: give a fold number N, several as N,M, or all")
    folds = [int(v) for v in parts]
    if len(set(folds)) != len(folds):
        raise ValueError(f"--fold {text!r} names a fold twice; an ensemble averages distinct folds")
    return folds[0] if len(folds) == 1 else folds


def _demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="napari with the sample case, the sample model and the widgets")
    d.add_argument("--headless", action="store_true", help="no window: write relevance NIfTIs and screenshots")
    d.add_argument("--out", default="demo_out", help="output folder for --headless (default demo_out)")
    d.add_argument("--model", default=None, help="another model for the demo: a path, or 'nnunet' for the sample "
                                                 "nnU-Net results folder (default: the sample card)")
    d.set_defaults(func=_run_demo)


def _explain_parser(sub) -> None:
    e = sub.add_parser("explain", help="explain one case", epilog=FILTER_SPEC_HELP)
    e.add_argument("case", help="case folder, NIfTI file or 4D NIfTI")
    e.add_argument("--model", required=True, help="model card, model folder, MONAI bundle or nnU-Net results folder")
    e.add_argument("--fold", default=None, help="nnU-Net folder: fold N, N,M (their ensemble) or all "
                                                "(default: every fold_N, averaged)")
    e.add_argument("--mirroring", action="store_true", help="nnU-Net folder: its test-time mirroring")
    e.add_argument("--trust", action="store_true", help="run the model's own code (a bundle's scripts/ network, a "
                                                        "pickled model) after you have read it")
    e.add_argument("--preset", default="paper", choices=list(PRESETS),
                   help="rule preset (default paper)")
    e.add_argument("--filter", action="append", default=[], help="filter spec, repeatable (see below)")
    e.add_argument("--target", default="region", help=TARGET_HELP)
    e.add_argument("--device", default="auto")
    e.add_argument("--mc-samples", type=int, default=1, metavar="T",
                   help="Monte Carlo dropout: T draws with dropout sampling (mean relevance + spread files)")
    e.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="dropout rate of the draws (a network without Dropout gets it after every activation)")
    e.add_argument("--tta", default=None, choices=["flips"], help="test-time flips of the 3 spatial axes")
    e.add_argument("--seed", type=int, default=0, help="seed of the draws")
    _case_options(e)
    _modalities_option(e)
    e.add_argument("--out", required=True)
    e.set_defaults(func=_run_explain)


def _cluster_options(parser) -> None:
    """Where a cohort command runs: a LocalCluster's workers or a scheduler, and the device."""
    parser.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: 1 per core)")
    parser.add_argument("--scheduler", default=None, help="address of an existing dask scheduler")
    parser.add_argument("--device", default="cpu")


def _sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="filter sweep over a cohort on dask.distributed")
    s.add_argument("cohort", help="folder of case folders")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--preset", default="paper", choices=list(PRESETS))
    s.add_argument("--placement", default="input", choices=["input", "blocks"])
    _cluster_options(s)
    s.add_argument("--target", default="region", help=TARGET_HELP)
    s.add_argument("--mc-samples", type=int, default=1, metavar="T", help="MC dropout draws per case ('_sd' columns)")
    s.add_argument("--dropout", type=float, default=None, metavar="P", help="dropout rate of the draws")
    s.add_argument("--tta", default=None, choices=["flips"], help="test-time flips ('_sd' columns)")
    s.add_argument("--seed", type=int, default=None, help="seed of the draws")
    s.add_argument("--lesions", action="store_true",
                   help="lesion-wise rows: every lesion of the prediction and of the ground truth explained alone "
                        "(column 'target': run, component:K, gt-component:K; with size and detected / missed)")
    s.add_argument("--resume", default="recompute", choices=["recompute", "strict"],
                   help="cases computed with another model or settings: recompute them (default) or refuse")
    _case_options(s)
    s.set_defaults(func=_run_sweep)


def _concepts_parser(sub) -> None:
    k = sub.add_parser("concepts", help="reference cases of a layer's channels across a cohort (concept relevance)")
    k.add_argument("cohort", help="folder of case folders")
    k.add_argument("--model", required=True)
    k.add_argument("--layer", required=True, help="a module name of the network, e.g. decoders.1")
    k.add_argument("--top", type=int, default=5, help="reference cases per channel (default 5)")
    k.add_argument("--crop", type=int, default=32, help="side of each crop's cube in voxels (default 32)")
    k.add_argument("--preset", default="paper", choices=list(PRESETS))
    k.add_argument("--target", default="region", help=TARGET_HELP)
    _cluster_options(k)
    k.add_argument("--out", required=True)
    k.set_defaults(func=_run_concepts)


def _compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="attribution methods side by side on one case: maps and one table")
    c.add_argument("case", help="case folder, NIfTI file or 4D NIfTI")
    c.add_argument("--model", required=True)
    c.add_argument("--methods", default="lrp:paper,gradient,gxi,ig,sg",
                   help="comma-separated specs: lrp:PRESET, gradient, gxi, ig[:N_STEPS], sg[:NT_SAMPLES], gbp, "
                        "gradcam:LAYER, occlusion[:CxZxYxX], or NAME:key=value,key=value")
    c.add_argument("--target", default="region", help=TARGET_HELP)
    c.add_argument("--device", default="auto")
    c.add_argument("--no-perturbation", action="store_true", help="skip the MoRF/LeRF region perturbation")
    c.add_argument("--sanity", action="store_true", help="add each map's similarity to an untrained copy's")
    _case_options(c)
    _modalities_option(c)
    c.add_argument("--out", required=True)
    c.set_defaults(func=_run_compare)


def _evaluate_parser(sub) -> None:
    v = sub.add_parser("evaluate", help="the scorecard (localisation, faithfulness, randomisation, robustness, "
                                        "complexity, repeatability, conservation) of several methods on a case or "
                                        "a cohort")
    v.add_argument("data", help="a case (folder, NIfTI or 4D NIfTI) or a cohort (a folder of case folders, on dask)")
    v.add_argument("--model", required=True)
    v.add_argument("--methods", default="lrp:paper,gradient,gxi,ig,sg",
                   help="comma-separated method specs, as for compare")
    v.add_argument("--metrics", default="all", help="all, or comma-separated families (localisation, faithfulness, "
                                                     "randomisation, robustness, complexity, repeatability, "
                                                     "conservation) and metric names")
    v.add_argument("--target", default="region", help=TARGET_HELP)
    v.add_argument("--noise", type=float, default=0.02, help="robustness: noise sd as a share of each channel's sd")
    v.add_argument("--n-noise", type=int, default=5, help="robustness: noisy runs per method (default 5)")
    v.add_argument("--n-runs", type=int, default=50, help="faithfulness correlation: random subsets (default 50)")
    v.add_argument("--steps", type=int, default=12, help="faithfulness: points per MoRF/LeRF curve (default 12)")
    v.add_argument("--n-blocks", type=int, default=500, help="faithfulness: about how many blocks (default 500)")
    v.add_argument("--tolerance-mm", type=float, default=0.0, help="localisation: the pointing game's tolerance")
    v.add_argument("--seed", type=int, default=0, help="seed of the subsets, the noise and re-initialised weights")
    _cluster_options(v)
    _case_options(v)
    _modalities_option(v)
    v.add_argument("--out", required=True)
    v.set_defaults(func=_run_evaluate)


def parser() -> argparse.ArgumentParser:
    """The command line's parser: demo, explain, sweep, concepts, compare, evaluate.

    Returns
    -------
    argparse.ArgumentParser
    """
    ap = argparse.ArgumentParser(prog="napari-lrp", description="Layer-wise relevance propagation for 3D "
                                 "segmentation networks.", epilog=FILTER_SPEC_HELP)
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_demo_parser, _explain_parser, _sweep_parser, _concepts_parser, _compare_parser,
                _evaluate_parser):
        add(sub)
    return ap


def main(argv=None) -> int:
    """Run the command line ``napari-lrp`` with ``argv``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 done, 2 refused (the message on stderr).
    """
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"napari-lrp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
