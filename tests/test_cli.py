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


def test_an_unwritable_output_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    import napari_lrp.models as models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr(models, "load_model", no_model)
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    rc = main(["explain", str(sample_case_path(1)), "--model", str(sample_model_path()), "--out", str(a_file)])
    assert rc == 2 and "out.txt: is a file; choose a folder" in capsys.readouterr().err
    rc = main(["explain", str(sample_case_path(1)), "--model", str(sample_model_path()),
               "--out", "/proc/napari-lrp-results/case"])
    assert rc == 2 and "cannot write results here" in capsys.readouterr().err
    assert a_file.read_text() == "not a folder"


def test_nonfinite_and_label_value_options(tmp_path, capsys):
    from tests.conftest import make_case_folder

    folder = make_case_folder(tmp_path / "case")
    adc = next(folder.rglob("*ADC*.nii.gz"))
    img = nib.load(str(adc))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(adc))
    card = {"name": "t", "architecture": {"class": "UNet3D", "kwargs": {"in_channels": 6, "out_channels": 2,
                                                                       "width": 4}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]}
    from napari_lrp.models import UNet3D

    model = nl.save_model(UNet3D(6, 2, width=4).eval(), card, tmp_path / "m")
    rc = main(["explain", str(folder), "--model", str(model), "--out", str(tmp_path / "o1")])
    assert rc == 2 and "--nonfinite zero" in capsys.readouterr().err
    rc = main(["explain", str(folder), "--model", str(model), "--out", str(tmp_path / "o2"), "--nonfinite", "zero",
               "--target", "groundtruth", "--label-value", "1"])
    assert rc == 0 and (tmp_path / "o2" / "settings.json").exists()
    rc = main(["explain", str(folder), "--model", str(model), "--out", str(tmp_path / "o3"), "--nonfinite", "zero",
               "--label-value", "9"])
    assert rc == 2 and "label value(s) [9] do not occur" in capsys.readouterr().err


def test_explain_with_flips_writes_the_spread(tmp_path, capsys):
    import json

    rc = main(["explain", str(sample_case_path(1)), "--model", str(sample_model_path()), "--tta", "flips",
               "--out", str(tmp_path)])
    assert rc == 0
    for name in ("predictive_entropy.nii.gz", "mutual_information.nii.gz", "relevance_std_ADC.nii.gz",
                 "coefficient_spread.csv"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "settings.json").read_text())["sampling"]["draws"] == 8


def test_explain_an_nnunet_folder_by_fold(tmp_path, capsys):
    import json

    from napari_lrp.samples import sample_nnunet_path

    case_dir = sample_case_path(1)
    rc = main(["explain", str(case_dir), "--model", str(sample_nnunet_path()), "--fold", "1", "--preset", "lrp0",
               "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    exp = nl.explain(nl.load_model(sample_nnunet_path(), fold=1), nl.load_case(case_dir), preset="lrp0")
    case = nl.load_case(case_dir)
    img = nib.load(str(tmp_path / "relevance_ADC.nii.gz"))
    np.testing.assert_array_equal(case.grid.to_napari(np.asarray(img.dataobj)), exp.relevance[0])
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["model"]["nnunet"] == {"configuration": "3d_fullres", "folds": ["fold_1"], "mirroring": False}


TINY_NET = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)
'''


def test_explain_runs_a_bundles_own_network_only_with_trust(tmp_path, capsys):
    """A bundle whose network_def names its scripts/ code: refused naming the file, explained with --trust."""
    import torch

    from tests.models.test_bundle_transforms import MODS, make_bundle

    namespace: dict = {}
    exec(compile(TINY_NET, "tiny.py", "exec"), namespace)
    net = namespace["Tiny"](6, 2)
    bundle = make_bundle(tmp_path, resample=False, network=(net, {"_target_": "scripts.tiny.Tiny", "in_channels": 6,
                                                                  "out_channels": 2}))
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "tiny.py").write_text(TINY_NET)
    args = ["explain", str(sample_case_path(1)), "--model", str(bundle), "--preset", "lrp0", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "refused")]) != 0
    err = capsys.readouterr().err
    assert "scripts/tiny.py" in err and "--trust" in err and not (tmp_path / "refused" / "settings.json").exists()
    assert main([*args, "--trust", "--out", str(tmp_path / "out")]) == 0
    exp_net = nl.load_model(bundle, trust=True, device="cpu").network
    assert type(exp_net).__name__ == "Tiny" and torch.equal(exp_net.conv.weight, net.conv.weight)
    assert (tmp_path / "out" / f"relevance_{MODS[0]}.nii.gz").exists()
