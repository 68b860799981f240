"""Cohort sweeps: LocalCluster equals serial, resumable, failures reported."""

import shutil

import numpy as np
import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.batch import sweep_cohort
from napari_lrp.samples import sample_case_paths, sample_model_path


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "cohort"
    for p in sample_case_paths()[:2]:
        shutil.copytree(p, root / p.name)
    return root


def test_local_cluster_equals_serial(cohort, tmp_path):
    serial = sweep_cohort(cohort, sample_model_path(), tmp_path / "serial", workers=0)
    parallel = sweep_cohort(cohort, sample_model_path(), tmp_path / "parallel", workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert set(serial.case) == {"case_01", "case_02"} and (serial.status == "ok").all()
    assert len(serial) == 2 * 18 * 7
    assert (tmp_path / "serial" / "table.csv").exists() and (tmp_path / "serial" / "table.parquet").exists()


def test_resume_skips_finished_cases_and_reports_a_corrupt_one(cohort, tmp_path):
    out = tmp_path / "out"
    sweep_cohort(cohort, sample_model_path(), out, workers=0)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*.csv")}
    shutil.copytree(sample_case_paths()[2], cohort / "case_03")
    bad = cohort / "case_99"
    shutil.copytree(sample_case_paths()[0], bad)
    adc = next(bad.rglob("*MR_ADC*.nii.gz"))
    adc.write_bytes(adc.read_bytes()[:200])  # truncated
    table = sweep_cohort(cohort, sample_model_path(), out, workers=0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("case_0[12].csv")} == stamps
    assert (out / "cases" / "case_03.csv").exists()
    failed = table[table.status == "failed"]
    assert list(failed.case) == ["case_99"] and "ADC" in failed.error.iloc[0]
    assert set(table[table.status == "ok"].case) == {"case_01", "case_02", "case_03"}


def dying_task(case_dir, **kwargs):
    """run_case, except that the worker process dies on a case called 'case_dies' (as when killed for memory)."""
    import os
    from pathlib import Path

    from napari_lrp.batch.cohort import run_case

    if Path(case_dir).name == "case_dies":
        os._exit(1)
    return run_case(case_dir, **kwargs)


def test_a_changed_model_or_setting_is_recomputed_not_reused(cohort, tmp_path):
    import numpy as np

    import napari_lrp as nl

    out = tmp_path / "out"
    first = sweep_cohort(cohort, sample_model_path(), out, workers=0)
    assert {"model_sha256", "settings_hash"} <= set(first.columns) and first.model_sha256.nunique() == 1
    csv = pd.read_csv(out / "table.csv", dtype=str)
    assert (csv.model_sha256 == first.model_sha256.iloc[0]).all()
    again = sweep_cohort(cohort, sample_model_path(), out, workers=0)  # same model and settings: reused
    pd.testing.assert_frame_equal(again, first)
    lrp0 = sweep_cohort(cohort, sample_model_path(), out, workers=0, preset="lrp0")
    assert lrp0.settings_hash.nunique() == 1 and lrp0.settings_hash.iloc[0] != first.settings_hash.iloc[0]
    assert not np.allclose(lrp0.mu.astype(float), first.mu.astype(float))
    with pytest.raises(ValueError, match=r"2 case\(s\) \(case_01, case_02\) were computed with another model"):
        sweep_cohort(cohort, sample_model_path(), out, workers=0, resume="strict")
    # another model (same card, other weights) is recomputed too
    other = nl.load_model(sample_model_path())
    with __import__("torch").no_grad():
        for p in other.network.parameters():
            p.mul_(0.5)
    nl.save_model(other.network, other.card, tmp_path / "other")
    swapped = sweep_cohort(cohort, tmp_path / "other", out, workers=0, preset="lrp0")
    assert swapped.model_sha256.iloc[0] != lrp0.model_sha256.iloc[0]
    assert (swapped.model_sha256 == nl.load_model(tmp_path / "other").sha256).all()


def test_a_dying_case_is_named_and_the_others_finish(cohort, tmp_path):
    shutil.copytree(cohort / "case_01", cohort / "case_dies")
    out = tmp_path / "out"
    table = sweep_cohort(cohort, sample_model_path(), out, workers=1, _task=dying_task)
    failed = table[table.status == "failed"]
    assert list(failed.case) == ["case_dies"] and "KilledWorker" in failed.error.iloc[0]
    assert "case case_dies failed" in failed.error.iloc[0]
    assert set(table[table.status == "ok"].case) == {"case_01", "case_02"}
    assert (out / "table.csv").exists() and (out / "cases" / "case_dies.failed.json").exists()


def test_a_latin1_folder_name_does_not_stop_the_sweep(cohort, tmp_path):
    import os

    latin = os.path.join(os.fsencode(cohort), b"caf\xe9")
    shutil.copytree(cohort / "case_02", os.fsdecode(latin))
    table = sweep_cohort(cohort, sample_model_path(), tmp_path / "out", workers=0)
    assert set(table.case) == {"case_01", "case_02", "café"} and (table.status == "ok").all()
    assert "café" in (tmp_path / "out" / "table.csv").read_text(encoding="utf-8")


def test_a_sampled_cohort_sweep_has_sd_columns_and_its_own_settings_hash(cohort, tmp_path):
    from napari_lrp.batch.cohort import run_settings, settings_hash

    t = sweep_cohort(cohort, sample_model_path(), tmp_path / "mc", workers=0,
                     sampling={"mc_samples": 2, "dropout": 0.1})
    assert (t.status == "ok").all() and "groundtruth_inclusivity_sd" in t.columns
    assert (t.groundtruth_inclusivity_sd.dropna() >= 0).all() and (t.groundtruth_inclusivity_sd > 0).any()
    assert settings_hash(run_settings(sampling={"tta": "flips"})) != settings_hash(run_settings())


def test_a_killed_case_is_retried_once_by_a_rerun_then_left_failed(cohort, tmp_path):
    import json

    shutil.rmtree(cohort / "case_02")
    shutil.copytree(cohort / "case_01", cohort / "case_dies")
    out = tmp_path / "out"
    for run in (1, 2, 3):
        table = sweep_cohort(cohort, sample_model_path(), out, workers=1, _task=dying_task)
        rec = json.loads((out / "cases" / "case_dies.failed.json").read_text())
        assert rec["killed"] == min(run, 2), run
        failed = table[table.status == "failed"]
        assert list(failed.case) == ["case_dies"] and (out / "table.csv").exists()
    # run 3 did not submit it (a third kill would count 3)
    assert "not tried again" in failed.error.iloc[0] and "memory_limit" in failed.error.iloc[0]


def test_memory_limit_gives_each_case_a_budget_in_its_settings(cohort, tmp_path):
    from napari_lrp.batch.cohort import run_settings, settings_hash

    shutil.rmtree(cohort / "case_02")
    t = sweep_cohort(cohort, sample_model_path(), tmp_path / "budget", workers=1, memory_limit="4GB")
    assert (t.status == "ok").all()
    assert settings_hash(run_settings(max_memory=2e9)) == t.settings_hash.iloc[0]


def test_an_nnunet_folder_sweeps_a_cohort_with_its_provenance(cohort, tmp_path):
    """The sample nnU-Net folder (both folds averaged) as the model of a sweep: rows carry the folds'
    checkpoint hash; a rerun reuses them; the table equals the API's sweep of the same case."""
    from napari_lrp.models.loading import model_sha256
    from napari_lrp.samples import sample_nnunet_path

    folder = sample_nnunet_path()
    table = sweep_cohort(cohort, folder, tmp_path / "nn", workers=0, show_progress=False)
    assert (table.status == "ok").all() and set(table.model_sha256) == {model_sha256(folder)}
    again = sweep_cohort(cohort, folder, tmp_path / "nn", workers=0, show_progress=False)
    pd.testing.assert_frame_equal(table, again)
    case = nl.load_case(sorted(cohort.iterdir())[0])
    api = nl.sweep(nl.explain(nl.load_model(folder), case, preset="paper"), placement="input")
    mine = table[table.case == case.name].reset_index(drop=True)
    np.testing.assert_allclose(mine.groundtruth_inclusivity.to_numpy(),
                               api.groundtruth_inclusivity.to_numpy(), rtol=1e-6)


def test_a_lesion_wise_cohort_sweep_from_the_command_line(cohort, tmp_path):
    """napari-lrp sweep --lesions: per case the run's rows and every lesion's, with size and status; the setting
    changes the settings' hash (a plain sweep is not reused for it)."""
    from napari_lrp.batch.cohort import run_settings, settings_hash
    from napari_lrp.cli import main

    out = tmp_path / "lesions"
    assert main(["sweep", str(cohort), "--model", str(sample_model_path()), "--workers", "0", "--lesions",
                 "--out", str(out)]) == 0
    t = pd.read_csv(out / "table.csv")
    assert (t.status == "ok").all()
    for case in ("case_01", "case_02"):
        rows = t[t.case == case]
        exp = nl.explain(nl.load_model(sample_model_path()), nl.load_case(cohort / case))
        lesions = exp.components()
        assert rows.target.nunique() == 1 + len(lesions)
        assert set(rows.target) >= {"run", "component:1", "gt-component:1"}
        lesion = rows[(rows.target == "component:1") & (rows.setting == "none") & (rows.channel == "mean")].iloc[0]
        assert lesion.voxels == lesions.voxels.iloc[0] and lesion.lesion_status in ("true positive", "false positive")
    assert settings_hash(run_settings(lesions=True)) != settings_hash(run_settings())
