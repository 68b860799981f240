"""Cohort sweeps: LocalCluster equals serial, resumable, failures reported."""

import shutil

import pandas as pd
import pytest

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
