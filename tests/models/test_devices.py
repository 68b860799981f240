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


def test_available_bytes_reads_the_memory_where_tensors_live(monkeypatch):
    """A CUDA device's free memory bounds what runs there (the host's RAM may be larger or smaller); the CPU
    and MPS read the host's available memory."""
    import psutil

    from napari_lrp.models.devices import available_bytes

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=7 * 2**30))
    assert available_bytes("cpu") == available_bytes(None) == 7 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (3 * 2**30, 80 * 2**30))
    assert available_bytes("cuda:0") == 3 * 2**30
    assert available_bytes(torch.device("cuda", 1)) == 3 * 2**30
    # a window's LRP that fits the host but not the GPU it would run on is refused with the GPU's figures
    from napari_lrp.models.network_guard import check_allocation

    check_allocation(2 * 2**30, "one window", "model", "fix")
    with pytest.raises(ModelError, match=r"one window needs about 2.15 GB, .*\(3.22 GB free\)"):
        check_allocation(2 * 2**30, "one window", "model", "fix", torch.device("cuda"))
