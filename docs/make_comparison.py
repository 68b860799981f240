"""Attribution methods compared on the sample cohort: every method on every shipped case, one CSV and a figure.

    python docs/make_comparison.py        # writes docs/comparison.csv and docs/comparison.png

Guided backpropagation is left out: the sample model's activations are LeakyReLU, which Captum's guided
backpropagation does not modify (``explain(method="guided_backprop")`` refuses it, naming them).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import napari_lrp as nl  # noqa: E402
from napari_lrp.analysis.compare import compare  # noqa: E402
from napari_lrp.samples import sample_case_paths, sample_model_path  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ["lrp:paper", "lrp:epsilon-gamma-box", "lrp:lrp0", "gradient", "gxi", "ig:16", "sg:8",
           "gradcam:encoders.3", "occlusion:6x5x16x16"]


def main() -> None:
    model = nl.load_model(sample_model_path())
    tables = []
    for path in sample_case_paths():
        case = nl.load_case(path)
        table, _ = compare(model, case, METHODS)
        table.insert(0, "case", case.name)
        tables.append(table)
        print(table.to_string(index=False))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(HERE / "comparison.csv", index=False, float_format="%.4f")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, col, title in zip(axes, ("morf_auc", "lerf_auc"), ("MoRF AUC (lower: more faithful)",
                                                               "LeRF AUC (higher: more faithful)")):
        pivot = table.pivot(index="method", columns="case", values=col).loc[METHODS + ["random"]]
        pivot.plot.barh(ax=ax)
        ax.set_title(title)
        ax.set_xlabel("area under the normalised score curve")
        ax.invert_yaxis()
    fig.suptitle("napari-lrp: methods on the sample cohort (region perturbation, 500 blocks, mean fill)")
    fig.tight_layout()
    fig.savefig(HERE / "comparison.png", dpi=110)
    lrp = table[table.method.str.startswith("lrp")]
    rnd = table[table.method == "random"].set_index("case").morf_auc
    below = all(row.morf_auc < rnd[row.case] for row in lrp.itertuples())
    print(f"every LRP preset's MoRF AUC below random's on every case: {below}")


if __name__ == "__main__":
    main()
