"""Cohort sweep throughput with 1 and 2 dask workers (LocalCluster, processes) on the same cohort.

The cohort is the shipped sample cases copied ``--copies`` times (so each worker has several cases).

    python benchmarks/cohort_scaling.py [--copies 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--copies", type=int, default=4)
    args = ap.parse_args(argv)
    from napari_lrp.batch import sweep_cohort
    from napari_lrp.samples import sample_case_paths, sample_model_path

    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        n = 0
        for k in range(args.copies):
            for p in sample_case_paths():
                shutil.copytree(p, cohort / f"{p.name}_{k}")
                n += 1
        rows = []
        for workers in (0, 1, 2):
            t0 = time.perf_counter()
            table = sweep_cohort(cohort, sample_model_path(), Path(tmp) / f"out{workers}", workers=workers,
                                 show_progress=False)
            dt = time.perf_counter() - t0
            assert (table.status == "ok").all()
            rows.append((workers, dt))
    print(f"{n} cases (sample cases x {args.copies}), paper preset, default grid on the heatmap\n")
    print("| workers | wall time | per case | cases / minute | speed-up vs 1 worker |")
    print("|---|---:|---:|---:|---:|")
    one = rows[1][1]
    for workers, dt in rows:
        name = "serial (in process)" if workers == 0 else f"{workers} (LocalCluster)"
        print(f"| {name} | {dt:.1f} s | {dt / n:.2f} s | {60 * n / dt:.1f} | {one / dt:.2f}x |")


if __name__ == "__main__":
    main()
