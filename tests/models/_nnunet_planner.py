"""nnU-Net v2 results folders made by nnU-Net's own tools: a generated BraTS-like cohort (four channels, two
nested regions), nnU-Net's fingerprint extraction and experiment planner (default, or ResEnc M), and a
checkpoint written as nnU-Net's trainer writes it (random weights from nnU-Net's own network builder)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

CHANNELS = ["T1", "T1ce", "T2", "FLAIR"]
BRATS_SUFFIXES = ["t1", "t1ce", "t2", "flair"]
#: region-based labels as nnU-Net's BraTS datasets declare them: lists of label values, and their order
REGION_LABELS = {"background": 0, "whole lesion": [1, 2], "lesion core": [2]}
SHAPE = (40, 44, 36)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def _cohort_case(rng: np.random.Generator):
    """Four channels and a nested two-label lesion inside a zero-background 'brain'."""
    brain = np.zeros(SHAPE, bool)
    brain[4:-4, 5:-5, 3:-3] = True
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    c = np.array(SHAPE) // 2 + rng.integers(-4, 5, 3)
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + ((xx - c[2]) * 1.5) ** 2)
    label = np.zeros(SHAPE, np.uint8)
    label[(r < 9) & brain] = 1
    label[(r < 4.5) & brain] = 2
    images = [(brain * (100 + 20 * ch) + label * (40 * (ch + 1)) + rng.normal(0, 5, SHAPE) * brain)
              .astype(np.float32) for ch in range(4)]
    return images, label


def write_case_folder(folder: Path, seed: int = 7, affine: np.ndarray = AFFINE) -> Path:
    """One case as BraTS 2021 names its files (``<case>_t1.nii.gz``, ..., ``<case>_seg.nii.gz``); another
    ``affine`` than the cohort's (another spacing) makes nnU-Net resample it to the plan's spacing."""
    images, label = _cohort_case(np.random.default_rng(seed))
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, image in zip(BRATS_SUFFIXES, images):
        nib.save(nib.Nifti1Image(image, affine), folder / f"{folder.name}_{suffix}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / f"{folder.name}_seg.nii.gz")
    return folder


def case_files(folder: Path) -> list[str]:
    """The case's image files in nnU-Net's channel order (_0000 .. _0003)."""
    return [str(folder / f"{folder.name}_{suffix}.nii.gz") for suffix in BRATS_SUFFIXES]


def planned_results_folders(root: Path, planners=("ExperimentPlanner", "nnUNetPlannerResEncM"),
                            dataset_id: int = 3) -> dict[str, Path]:
    """Results folders ``Dataset00N_BraTSLike/nnUNetTrainer__<plans>__3d_fullres`` with fold_0, one per planner,
    from one fingerprint of one cohort.

    Parameters
    ----------
    root : Path
        Where nnUNet_raw, nnUNet_preprocessed and nnUNet_results are made.
    planners : sequence of str
        'ExperimentPlanner' (nnU-Net's default) and/or 'nnUNetPlannerResEncM'.
    dataset_id : int
        The dataset's number.
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    paths = {key: root / key for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    saved = {key: os.environ.get(key) for key in paths}
    os.environ.update({key: str(p) for key, p in paths.items()})
    try:
        name = f"Dataset{dataset_id:03d}_BraTSLike"
        raw = paths["nnUNet_raw"] / name
        (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
        (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(3):
            images, label = _cohort_case(rng)
            for ch, image in enumerate(images):
                nib.save(nib.Nifti1Image(image, AFFINE), raw / "imagesTr" / f"BraTSLike_{i:03d}_{ch:04d}.nii.gz")
            nib.save(nib.Nifti1Image(label, AFFINE), raw / "labelsTr" / f"BraTSLike_{i:03d}.nii.gz")
        dataset = {"channel_names": {str(i): c for i, c in enumerate(CHANNELS)}, "labels": REGION_LABELS,
                   "regions_class_order": [1, 2], "numTraining": 3, "file_ending": ".nii.gz"}
        (raw / "dataset.json").write_text(json.dumps(dataset))
        extract_fingerprint_dataset(dataset_id, num_processes=1, verbose=False, show_progress_bar=False)
        classes = {"ExperimentPlanner": ExperimentPlanner, "nnUNetPlannerResEncM": nnUNetPlannerResEncM}
        folders = {}
        for planner in planners:
            _plans, identifier = plan_experiment_dataset(dataset_id, classes[planner])
            folders[planner] = _results_folder(paths, name, identifier, dataset)
        return folders
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _results_folder(paths: dict, name: str, identifier: str, dataset: dict) -> Path:
    """The results folder of one plans file: plans, dataset, fingerprint and a trainer-written fold_0."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pre = paths["nnUNet_preprocessed"] / name
    out = paths["nnUNet_results"] / name / f"nnUNetTrainer__{identifier}__3d_fullres"
    (out / "fold_0").mkdir(parents=True)
    plans = json.loads((pre / f"{identifier}.json").read_text())
    shutil.copy(pre / f"{identifier}.json", out / "plans.json")
    shutil.copy(paths["nnUNet_raw"] / name / "dataset.json", out / "dataset.json")
    shutil.copy(pre / "dataset_fingerprint.json", out / "dataset_fingerprint.json")
    cm = PlansManager(plans).get_configuration("3d_fullres")
    torch.manual_seed(0)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, len(CHANNELS), 2, allow_init=True,
                                 deep_supervision=True)
    # as nnUNetTrainer.save_checkpoint writes it
    torch.save({"network_weights": net.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
                "logging": {}, "_best_ema": None, "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
               out / "fold_0" / "checkpoint_final.pth")
    return out
