"""The scorecard of five methods on the sample cohort: every metric family, every shipped case.

    python docs/make_scorecard.py        # writes docs/scorecard.csv, docs/scorecard_cases.csv, docs/scorecard.png

The same as ``napari-lrp evaluate sample_data/cohort --model sample_data/model/card.json --methods
lrp:paper,lrp:epsilon-gamma-box,gradient,gxi,ig:16 --out DIR``, plus a repeatability run (test-time flips of LRP),
which the cohort command records only for runs with draws.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

import napari_lrp as nl  # noqa: E402
from napari_lrp.batch import evaluate_cohort  # noqa: E402
from napari_lrp.samples import sample_case_path, sample_model_path  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ["lrp:paper", "lrp:epsilon-gamma-box", "gradient", "gxi", "ig:16"]


def main() -> None:
    cohort = sample_case_path(1).parent
    with tempfile.TemporaryDirectory() as tmp:
        summary = evaluate_cohort(cohort, sample_model_path(), tmp, METHODS, workers=0, show_progress=False)
        shutil.copy(Path(tmp) / "scorecard.png", HERE / "scorecard.png")
        cases = pd.read_csv(Path(tmp) / "table.csv")
    summary.to_csv(HERE / "scorecard.csv", index=False, float_format="%.4g")
    cases[["case", "method", "family", "metric", "value", "better", "settings"]].to_csv(
        HERE / "scorecard_cases.csv", index=False, float_format="%.4g")
    model = nl.load_model(sample_model_path(), device="cpu")
    flips = nl.explain(model, nl.load_case(sample_case_path(1)), tta="flips")
    repeat = nl.evaluate({"lrp:paper, tta=flips": flips}, metrics=["repeatability"])
    print(summary.drop(columns="settings").to_string(index=False))
    print(repeat[["method", "metric", "value", "settings"]].to_string(index=False))


if __name__ == "__main__":
    main()
