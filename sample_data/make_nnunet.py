"""Make the sample nnU-Net v2 results folder: plans and dataset JSON for the sample cohort and a
``dynamic_network_architectures`` PlainConvUNet trained briefly on CPU, two folds.

    python sample_data/make_nnunet.py [--iterations 250]

Writes ``sample_data/nnunet/Dataset001_SampleStroke/nnUNetTrainer__nnUNetPlans__3d_fullres/`` with
``dataset.json``, ``plans.json`` (nnU-Net 2.4+ format: 3d_fullres at the cohort's spacing 6.5 x 2.8 x 2.8 mm,
patch 16 x 64 x 64, ZScore over the non-zero region, nnU-Net's resampling kwargs) and
``fold_0``/``fold_1``/``checkpoint_final.pth`` as nnU-Net writes it (``network_weights``, ``init_args``,
``trainer_name``, ``inference_allowed_mirroring_axes``, numpy numbers in ``logging``; no optimizer state).
Training cases (seeds 100.., as sample_data/train.py) are pre-processed by napari-lrp's nnU-Net
pre-processing (tested against nnunetv2's); each fold trains on half of them with its own seed. Prints the
held-out Dice of each fold and of the ensemble on the three shipped cases.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "nnunet" / "Dataset001_SampleStroke" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
PATCH = [16, 64, 64]


def plans_and_dataset(cases) -> tuple[dict, dict]:
    """plans.json and dataset.json for the sample cohort; ``cases``: (C, Z, Y, X) arrays for the intensity
    properties (foreground = the lesion, as nnU-Net's fingerprint)."""
    sys.path.insert(0, str(HERE))
    from make_cohort import MODALITIES

    props = {}
    for c in range(len(MODALITIES)):
        fg = np.concatenate([img[c][seg > 0] for img, seg in cases]).astype(np.float64)
        props[str(c)] = {"max": float(fg.max()), "mean": float(fg.mean()), "median": float(np.median(fg)),
                         "min": float(fg.min()), "percentile_00_5": float(np.percentile(fg, 0.5)),
                         "percentile_99_5": float(np.percentile(fg, 99.5)), "std": float(fg.std())}
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": PATCH, "median_image_size_in_voxels": [19.0, 76.0, 64.0], "spacing": [6.5, 2.8, 2.8],
        "normalization_schemes": ["ZScoreNormalization"] * len(MODALITIES),
        "use_mask_for_norm": [True] * len(MODALITIES),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    plans = {"dataset_name": "Dataset001_SampleStroke", "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [6.5, 2.8, 2.8],
             "original_median_shape_after_transp": [19, 76, 64], "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": config},
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": props}
    dataset = {"channel_names": {str(i): m for i, m in enumerate(MODALITIES)},
               "labels": {"background": 0, "lesion": 1}, "numTraining": len(cases), "file_ending": ".nii.gz",
               "name": "napari-lrp sample stroke cohort (synthetic)"}
    return plans, dataset


def _raw(seeds):
    sys.path.insert(0, str(HERE))
    from make_cohort import MODALITIES, make_case

    out = []
    for s in seeds:
        c = make_case(s)
        img = np.transpose(np.stack([c["maps"][m] for m in MODALITIES]), (0, 3, 2, 1)).astype(np.float32)
        seg = np.transpose(c["maps"]["OT"], (2, 1, 0)).astype(np.int64)
        out.append((img, seg))
    return out


def _preprocess(img, seg, plan):
    """nnU-Net's pre-processing of one training case at the target spacing (no resampling needed)."""
    from napari_lrp.models.nnunet import nonzero_box

    mask, bbox = nonzero_box(img)
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    x = plan.normalise(img[(slice(None),) + sl], mask[sl])
    y = seg[sl]
    pads = [(0, max(p - s, 0)) for p, s in zip(PATCH, x.shape[1:])]
    return np.pad(x, [(0, 0)] + pads), np.pad(y, pads)


def train_fold(data, seed: int, iterations: int, plans: dict, dataset: dict):
    from monai.losses import DiceCELoss

    from napari_lrp.models.nnunet import build_nnunet_network

    torch.manual_seed(seed)
    cfg = plans["configurations"]["3d_fullres"]
    net = build_nnunet_network(cfg, 6, 2, "make_nnunet")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(seed)
    losses = []
    net.train()
    for it in range(iterations):
        xb, yb = [], []
        for _ in range(2):
            x, y = data[rng.integers(len(data))]
            if rng.random() < 0.33 and (y > 0).any():  # nnU-Net's foreground oversampling
                c = np.argwhere(y > 0)[rng.integers(int((y > 0).sum()))]
                start = [int(np.clip(ci - p // 2, 0, s - p)) for ci, p, s in zip(c, PATCH, y.shape)]
            else:
                start = [int(rng.integers(0, s - p + 1)) for p, s in zip(PATCH, y.shape)]
            sl = tuple(slice(a, a + p) for a, p in zip(start, PATCH))
            xb.append(x[(slice(None),) + sl])
            yb.append(y[sl])
        xb = torch.from_numpy(np.stack(xb))
        yb = torch.from_numpy(np.stack(yb))[:, None]
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(np.float64(loss.item()))
        if (it + 1) % 50 == 0:
            print(f"  fold seed {seed} iteration {it + 1}: loss {loss.item():.4f}")
    net.eval()
    return {"network_weights": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": seed, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": iterations, "logging": {"train_losses": losses}, "_best_ema": None}


def main(argv=None):
    import napari_lrp as nl
    from napari_lrp.models.nnunet import NnUNetPlan
    from napari_lrp.pipeline import predict_case
    from napari_lrp.samples import sample_case_paths

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=250)
    ap.add_argument("--train-cases", type=int, default=48)
    args = ap.parse_args(argv)
    t0 = time.time()
    raw = _raw(range(100, 100 + args.train_cases))
    plans, dataset = plans_and_dataset(raw)
    cfg = plans["configurations"]["3d_fullres"]
    plan = NnUNetPlan(folder="make_nnunet", configuration="3d_fullres", transpose_forward=(0, 1, 2),
                      transpose_backward=(0, 1, 2), spacing=tuple(cfg["spacing"]), patch_size=tuple(PATCH),
                      normalization_schemes=cfg["normalization_schemes"], use_mask_for_norm=cfg["use_mask_for_norm"],
                      intensity_properties=plans["foreground_intensity_properties_per_channel"],
                      data_resampling=cfg["resampling_fn_data_kwargs"],
                      probability_resampling=cfg["resampling_fn_probabilities_kwargs"], mirror_axes=(0, 1, 2))
    data = [_preprocess(img, seg, plan) for img, seg in raw]
    half = len(data) // 2
    tmp = Path(tempfile.mkdtemp(prefix=".nnunet-", dir=HERE))
    out = tmp / FOLDER.relative_to(HERE / "nnunet")
    out.mkdir(parents=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold, part in ((0, data[:half]), (1, data[half:])):
        ckpt = train_fold(part, fold, args.iterations, plans, dataset)
        (out / f"fold_{fold}").mkdir()
        torch.save(ckpt, out / f"fold_{fold}" / "checkpoint_final.pth")
        print(f"fold {fold} trained ({time.time() - t0:.0f} s)")
    for fold in (0, 1, None):
        model = nl.load_model(out, fold=fold)
        dices = []
        for path in sample_case_paths():
            case = nl.load_case(path)
            pred, _logits, _ = predict_case(model, case)
            gt = case.ground_truth
            dices.append(2 * float((pred.astype(bool) & gt).sum()) / float(pred.astype(bool).sum() + gt.sum()))
        print(f"fold {fold if fold is not None else '0+1'}: held-out Dice " + " ".join(f"{d:.3f}" for d in dices))
    target = HERE / "nnunet"
    if target.exists():
        shutil.rmtree(target)
    (tmp).rename(target)
    print(f"wrote {FOLDER} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
