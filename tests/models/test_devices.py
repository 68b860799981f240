"""Device names to torch devices (models/devices.py)."""

import pytest
import torch

import napari_lrp as nl
from napari_lrp.models import ModelError, available_devices, resolve_device
from napari_lrp.models.devices import mps_available


def test_absent_device():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    with pytest.raises(ModelError, match="no CUDA GPU is available here"):
        resolve_device("cuda:0")
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_available_devices_list_what_resolves():
    devices = available_devices()
    assert devices[:2] == ["auto", "cpu"]
    assert ("mps" in devices) == mps_available()
    for d in devices:
        assert resolve_device(d).type in ("cpu", "cuda", "mps")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_device_is_what_exists():
    from napari_lrp.samples import sample_model_path

    model = nl.load_model(sample_model_path(), device="auto")
    want = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    assert model.device.type == want
