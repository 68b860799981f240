import nibabel as nib
import numpy as np

import napari_lrp as nl
from napari_lrp.cli import main
from napari_lrp.samples import sample_case_path, sample_model_path


def test_explain_writes_niftis_on_the_input_grid(tmp_path, capsys):
    case_dir = sample_case_path(1)
    rc = main(["explain", str(case_dir), "--model", str(sample_model_path()), "--preset", "paper",
               "--filter", "clamp:0:0.2@input", "--out", str(tmp_path)])
    assert rc == 0
    case = nl.load_case(case_dir)
    exp = nl.explain(nl.load_model(sample_model_path()), case, preset="paper",
                     filters={"input": nl.filters.Clamp(0, 0.2)})
    src = nib.load(str(next(case_dir.rglob("*MR_ADC*.nii.gz"))))
    for c, m in enumerate(exp.modalities):
        img = nib.load(str(tmp_path / f"relevance_{m}.nii.gz"))
        np.testing.assert_array_equal(img.affine, src.affine)
        assert img.shape == src.shape
        np.testing.assert_array_equal(case.grid.to_napari(np.asarray(img.dataobj)), exp.relevance[c])
    for name in ("prediction.nii.gz", "coefficients.csv", "settings.json", "relevance_sum.nii.gz"):
        assert (tmp_path / name).exists()
    assert "groundtruth_inclusivity" in capsys.readouterr().out


def test_bad_case_is_one_clear_line(tmp_path, capsys):
    rc = main(["explain", str(tmp_path / "missing"), "--model", str(sample_model_path()), "--out", str(tmp_path)])
    assert rc == 2
    assert "missing: file or folder not found" in capsys.readouterr().err


def test_help_documents_the_filter_spec(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert "clamp:0:0.2@input" in capsys.readouterr().out
