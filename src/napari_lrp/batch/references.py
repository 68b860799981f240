"""Reference cases across a cohort (relevance maximisation, Achtibat et al. 2023): for each channel of a layer,
the cases and locations where it receives the most relevance for the target, with its conditional heatmap
there as a small NIfTI crop.

Each case runs as a task of :func:`~napari_lrp.batch.cohort.sweep_cohort` (dask.distributed, resumable in the
same way: a case's table is reused when the model and these settings, the layer included, are unchanged):
``cases/<case>.csv`` holds one row per channel (relevance at the layer, its share, and the location of the
channel's largest relevance in mm). Then ``references.csv`` ranks, per channel, the ``top`` cases by that
relevance, and ``crops/`` holds the conditional heatmap (sum over the modalities) of each reference in a cube
of ``crop`` voxels around its location, on the case file's own grid (affine and orientation), one file each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import load_case
from ..io.atomic import replacing
from ..lrp.names import check_placements
from ..pipeline import explain
from .cohort import (
    cached_model,
    case_folders,
    case_name,
    case_task,
    sweep_cohort,
)

__all__ = ["concept_references", "run_concept_case"]


def _layer_location_mm(exp, layer: str, channel: int) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """World position (napari Z, Y, X mm) and case-grid voxel of the channel's largest relevance at ``layer``."""
    placed = exp.kept_on_case_grid(layer)
    R = placed.relevance[channel]
    idx = np.unravel_index(int(np.argmax(R)), R.shape)
    mm = tuple(float(t + i * s) for t, i, s in zip(placed.translate, idx, placed.scale))
    spacing, origin = exp.case.grid.spacing, exp.case.grid.translate
    shape = exp.relevance.shape[1:]
    voxel = tuple(int(np.clip(round((m - o) / sp), 0, n - 1)) for m, o, sp, n in zip(mm, origin, spacing, shape))
    return mm, voxel


def run_concept_case(case_dir: str, model_path: str, out_dir: str, preset: str = "paper", placement: str = "input",
                     device: str = "cpu", settings: dict | None = None, model_sha256: str = "") -> dict:
    """One case's channel relevance at ``settings['layer']`` (a task of ``sweep_cohort``).

    Writes cases/<name>.csv (case, channel, relevance, abs_share, location_z/y/x_mm, voxel_z/y/x, status, the
    model's identity and the settings' hash) or cases/<name>.failed.json.

    Parameters
    ----------
    case_dir, model_path, out_dir, preset, placement, device, settings, model_sha256
        As for :func:`~napari_lrp.batch.cohort.run_case`.

    Returns
    -------
    dict
        The task's report.
    """
    layer = settings["layer"]

    def channel_table(case):
        exp = explain(cached_model(str(model_path), device, model_sha256), case, preset=settings["preset"],
                      target=settings["target"], keep=[layer])
        table = exp.concepts(layer)[["channel", "relevance", "abs_share"]]
        where = [_layer_location_mm(exp, layer, int(c)) for c in table.channel]
        for axis, k in (("z", 0), ("y", 1), ("x", 2)):
            table[f"location_{axis}_mm"] = [w[0][k] for w in where]
            table[f"voxel_{axis}"] = [w[1][k] for w in where]
        return table, exp.model.sha256

    return case_task(case_dir, out_dir, settings, model_sha256, channel_table)


def _write_crop(exp, layer: str, channel: int, voxel: tuple[int, int, int], crop: int, path: Path) -> Path:
    """The channel's conditional heatmap (sum over the modalities) in a cube around ``voxel`` (napari order),
    written on the case file's grid: the file's orientation, its affine shifted to the cube's corner."""
    import nibabel as nib

    total = exp.conditional(layer, [channel]).sum(axis=0)
    grid = exp.case.grid
    marker = np.zeros(total.shape, dtype=np.uint8)
    marker[voxel] = 1
    file_total, file_marker = grid.from_napari(total), grid.from_napari(marker)
    centre = np.argwhere(file_marker)[0]
    lo = [int(max(0, c - crop // 2)) for c in centre]
    hi = [int(min(n, a + crop)) for a, n in zip(lo, file_total.shape)]
    cube = np.ascontiguousarray(file_total[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    affine = np.asarray(grid.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(lo, dtype=np.float64) + affine[:3, 3]
    with replacing(path) as tmp:
        nib.save(nib.Nifti1Image(cube, affine), str(tmp))
    return path


def concept_references(cohort, model, out, layer: str, top: int = 5, preset: str = "paper",
                       target: str = "region", workers: int | None = None, scheduler: str | None = None,
                       device: str = "cpu", crop: int = 32, resume: str = "recompute",
                       show_progress: bool = True) -> pd.DataFrame:
    """For each channel of ``layer``: the ``top`` cases of ``cohort`` where it receives the most relevance.

    Parameters
    ----------
    cohort : path
        A folder of case folders.
    model : path
        The model (card, bundle or nnU-Net folder whose runs keep a forward pass: a card).
    out : path
        The results folder: cases/, references.csv, crops/.
    layer : str
        A module name of the network.
    top : int
        References per channel.
    preset, target : str
        As for :func:`napari_lrp.explain` (a researcher's target spec too).
    workers, scheduler, device, resume, show_progress
        As for :func:`~napari_lrp.batch.cohort.sweep_cohort`.
    crop : int
        The side of each crop's cube, in voxels.

    Returns
    -------
    DataFrame
        references.csv: channel, rank (1 = most relevance), case, relevance, abs_share, location_z/y/x_mm (napari
        world mm), crop (the file under crops/), layer, case_folder (the case's folder, for opening it).
    """
    if int(top) < 1 or int(crop) < 1:
        raise ValueError(f"top={top!r} and crop={crop!r} must be whole numbers >= 1")
    network = cached_model(str(model), device).network  # the layer is checked before any case runs
    check_placements([layer], [n for n, _m in network.named_modules()], "layer", type(network).__name__)
    table = sweep_cohort(cohort, model, out, preset=preset, workers=workers, scheduler=scheduler, device=device,
                         target=target, resume=resume, show_progress=show_progress, _task=run_concept_case,
                         extra_settings={"layer": layer, "kind": "concept references"})
    ok = table[table.status == "ok"] if "status" in table else table
    if ok.empty:
        raise ValueError(f"{out}: no case of {cohort} gave the relevance at {layer!r}; see cases/*.failed.json")
    refs = (ok.sort_values(["channel", "relevance"], ascending=[True, False]).groupby("channel").head(int(top))
            .copy())
    refs["rank"] = refs.groupby("channel").cumcount() + 1
    out = Path(out)
    folders = {case_name(c): c for c in case_folders(cohort)}
    crops = []
    for held_case, rows in refs.groupby("case", sort=False):
        exp = explain(cached_model(str(model), device), load_case(folders[held_case]), preset=preset, target=target,
                      keep=[layer])
        for _i, r in rows.iterrows():
            path = out / "crops" / f"{layer}_ch{int(r.channel)}_rank{int(r['rank'])}_{held_case}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_crop(exp, layer, int(r.channel), (int(r.voxel_z), int(r.voxel_y), int(r.voxel_x)), crop, path)
            crops.append((r.name, str(path.relative_to(out))))
    refs["crop"] = pd.Series(dict(crops))
    refs["layer"] = layer
    refs["case_folder"] = [str(Path(folders[c]).resolve()) for c in refs.case]
    cols = ["channel", "rank", "case", "relevance", "abs_share", "location_z_mm", "location_y_mm", "location_x_mm",
            "crop", "layer", "case_folder"]
    refs = refs[cols].reset_index(drop=True)
    with replacing(out / "references.csv") as tmp:
        refs.to_csv(tmp, index=False)
    return refs
