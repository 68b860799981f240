"""A bundle's configuration read without running code (models/bundle_config.py): MONAI's ConfigParser is the
oracle for references, macros and the expressions the zoo writes; everything else is refused by key path."""

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from napari_lrp.models import ModelError
from napari_lrp.models.bundle_config import BundleConfig, evaluate_expression

CONFIG = {
    "bundle_root": ".", "ckpt_dir": "$@bundle_root + '/models'", "spatial_size": [96, 96, 64],
    "displayable_configs": {"highres": False, "sw_batch_size": 2, "sw_overlap": 0.25},
    "pixdim": "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
    "n_dims": "$len(@spatial_size)", "dtype": "$torch.float32", "half": "$@spatial_size[0] // 2 + 1",
    "labels": {"background": 0, "spleen": 1, "liver": 2}, "n_labels": "$len(@labels)",
    "first": "@spatial_size#0", "net": {"a": 1, "b": "@#a", "c": {"d": "@##a"}},
    "both": "$@displayable_configs#sw_batch_size * 2 if not @displayable_configs#highres else 1",
    "chained": "$(1 < @n_dims <= 3) and 'yes' or 'no'", "sliced": "$@spatial_size[1:]",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "code": "$__import__('os').system('true')", "method": "$@spatial_size.copy()",
    "imports": ["$import os"], "from_train": "%configs/train.json#lr", "same_file": "%#spatial_size",
}


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(CONFIG))
    (tmp_path / "configs" / "train.json").write_text(json.dumps({"lr": 1e-4}))
    return tmp_path


@pytest.mark.parametrize("ref", ["n_dims", "pixdim", "half", "n_labels", "first", "net", "both", "chained", "sliced",
                                 "dtype", "same_file", "displayable_configs#sw_batch_size"])
def test_values_equal_monais_config_parser(bundle, ref, monkeypatch):
    ours = BundleConfig.read(bundle).get(ref)
    monkeypatch.chdir(bundle)  # MONAI reads '%file' macros from the working folder
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    assert ours == parser.get_parsed_content(ref)


def test_yaml_macros_bundle_root_and_the_device(bundle):
    import yaml

    (bundle / "configs" / "inference.json").unlink()
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(CONFIG))
    cfg = BundleConfig.read(bundle)
    assert cfg.path.name == "inference.yaml"
    assert cfg.get("from_train") == 1e-4
    assert cfg.get("ckpt_dir") == f"{bundle}/models"  # bundle_root is the folder the bundle was loaded from
    assert cfg.get("device") == "cpu"  # where it runs is napari-lrp's choice
    assert cfg.get("missing", "x") == "x"


@pytest.mark.parametrize("ref,message", [
    ("code", r"code: the expression .*__import__.* uses a call of .__import__"),
    ("method", r"method: the expression .*uses a call of '@spatial_size.copy'"),
])
def test_code_is_refused_with_the_key_path(bundle, ref, message):
    with pytest.raises(ModelError, match=message):
        BundleConfig.read(bundle).get(ref)


def test_entries_never_asked_for_are_never_evaluated(bundle):
    cfg = BundleConfig.read(bundle)
    assert cfg.get("n_dims") == 3  # 'code', 'method' and 'imports' sit in the same file


@pytest.mark.parametrize("expression,message", [
    ("import os", "an import"), ("[x for x in range(3)]", "ListComp"), ("(lambda: 1)()", "a call of"),
    ("().__class__", r"the name|Attribute"), ("open('/etc/passwd')", "a call of 'open'"),
    ("os.system('true')", "a call of 'os.system'"), ("x", "the name 'x'"), ("range(10**9)", "at most"),
    ("9**9**9", "at most 65,536 bits"), ("(2**1024)**1024", "at most 65,536 bits"),
])
def test_the_evaluator_refuses_what_is_not_data(expression, message):
    with pytest.raises(ModelError, match=message):
        evaluate_expression(expression, where="inference.json: key")


@pytest.mark.parametrize("expression,message", [
    ("lambda x: x.numpy()", "a call of 'x.numpy'"), ("lambda x: x.__class__", "the name 'x.__class__'"),
    ("lambda x: y", "the name 'y'"), ("lambda x, *rest: x", "starred"), ("lambda x=1: x", "defaults"),
    ("lambda x: [v for v in x]", "ListComp"), ("lambda x: (lambda: open)()", "a call of"),
])
def test_a_lambda_is_refused_before_it_is_called_when_its_body_is_not_data(expression, message):
    with pytest.raises(ModelError, match=message):
        evaluate_expression(expression, where="inference.json: postprocessing#transforms#3#func")


def test_a_lambda_over_tensors_computes_what_python_computes():
    """BraTS' painting of its three region channels (tumour core, whole tumour, enhancing) into labels 1, 2, 4."""
    text = "lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"
    ours = evaluate_expression(text, where="key")
    x = torch.randn(3, 5, 4, 3)
    theirs = eval(text, {"torch": torch})  # noqa: S307 - the oracle: Python's own evaluation of a known text
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert evaluate_expression("lambda a, b: a * b + 1 if a > 0 else -b", where="key")(2, 3) == 7


def test_references_outside_and_cycles(bundle):
    cfg = BundleConfig.read(bundle)
    with pytest.raises(ModelError, match=r"reference '@nothing#x' not found .*no 'nothing' under the top level"):
        cfg.resolve("@nothing#x", "network_def")
    cfg.data["loop"] = "@loop"
    with pytest.raises(ModelError, match="refers to itself"):
        cfg.get("loop")
    cfg.data["outside"] = "%../../etc/x.json#a"
    with pytest.raises(ModelError, match="outside the bundle"):
        cfg.get("outside")
    cfg.data["weights"] = "$torch.load('/etc/hostname')"
    with pytest.raises(ModelError, match="outside the bundle"):
        cfg.get("weights")


def test_torch_load_reads_arrays_inside_the_bundle_as_data(bundle):
    """DiNTS's search code (numpy arrays in a torch file) loads with weights_only=True."""
    arrays = {"node_a": np.ones((3, 2)), "arch_code_a": np.zeros((2, 2), np.int64)}
    torch.save(arrays, bundle / "models.pt")
    cfg = BundleConfig.read(bundle)
    cfg.data["arch"] = "$torch.load(@bundle_root + '/models.pt', map_location=torch.device('cuda'))"
    cfg.data["node_a"] = "$torch.from_numpy(@arch['node_a'])"
    node_a = cfg.get("node_a")
    assert isinstance(node_a, torch.Tensor) and node_a.shape == (3, 2)
