"""Methods side by side: spec parsing, the table, the CLI."""

import pandas as pd
import pytest

import napari_lrp as nl
from napari_lrp.analysis.compare import compare, parse_method, split_methods
from napari_lrp.cli import main
from napari_lrp.samples import sample_case_path, sample_model_path


def test_specs_parse():
    assert parse_method("lrp:paper") == ("lrp", {"preset": "paper"})
    assert parse_method("ig:16") == ("integrated_gradients", {"n_steps": 16})
    assert parse_method("gradcam:encoders.3") == ("gradcam", {"layer": "encoders.3"})
    assert parse_method("occlusion:6x4x8x8") == ("occlusion", {"sliding_window_shapes": (6, 4, 8, 8)})
    assert parse_method("ig:n_steps=8,baselines=blurred") == ("integrated_gradients",
                                                             {"n_steps": 8, "baselines": "blurred"})
    with pytest.raises(ValueError, match="unknown method 'shap'"):
        parse_method("shap")
    assert split_methods("lrp:paper,ig:n_steps=8,baselines=blurred,gradcam:encoders.3") == [
        "lrp:paper", "ig:n_steps=8,baselines=blurred", "gradcam:encoders.3"]


def test_compare_table_and_cli(tmp_path, capsys):
    model = nl.load_model(sample_model_path())
    case = nl.load_case(sample_case_path(1))
    methods = ["lrp:paper", "gradient", "gradcam:encoders.3"]
    table, results = compare(model, case, methods, n_blocks=200, steps=6)
    assert list(table.method) == methods + ["random"]
    assert set(table.columns) >= {"seconds", "input_inclusivity", "groundtruth_inclusivity", "morf_auc", "lerf_auc"}
    lrp = table[table.method == "lrp:paper"].iloc[0]
    rnd = table[table.method == "random"].iloc[0]
    assert lrp.morf_auc < rnd.morf_auc < lrp.lerf_auc  # LRP's most relevant blocks matter most
    assert results["gradcam:encoders.3"].method == "gradcam"
    rc = main(["compare", str(sample_case_path(1)), "--model", str(sample_model_path()), "--methods",
               "lrp:paper,gxi", "--no-perturbation", "--out", str(tmp_path / "cmp")])
    assert rc == 0
    written = pd.read_csv(tmp_path / "cmp" / "table.csv")
    assert list(written.method) == ["lrp:paper", "gxi"]
    assert (tmp_path / "cmp" / "lrp_paper" / "relevance_sum.nii.gz").exists()
    assert (tmp_path / "cmp" / "gxi" / "settings.json").exists()
