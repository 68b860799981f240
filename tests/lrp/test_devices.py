"""The GPU path gives the CPU's relevance (runs only where CUDA or MPS exists)."""

import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.models.devices import mps_available
from napari_lrp.samples import load_sample_case, sample_model_path

DEVICES = [d for d, ok in (("cuda", torch.cuda.is_available()), ("mps", mps_available())) if ok]


@pytest.mark.skipif(not DEVICES, reason="no GPU here")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", ["paper", "epsilon-gamma-box", "lrp0"])
def test_gpu_relevance_equals_cpu(device, preset):
    case = load_sample_case(1)
    cpu = nl.explain(nl.load_model(sample_model_path(), device="cpu"), case, preset=preset)
    gpu_model = nl.load_model(sample_model_path(), device=device)
    assert next(gpu_model.network.parameters()).device.type == device
    gpu = nl.explain(gpu_model, case, preset=preset)
    np.testing.assert_array_equal(gpu.prediction, cpu.prediction)
    scale = np.abs(cpu.relevance).max()
    assert np.abs(gpu.relevance - cpu.relevance).max() <= 1e-3 * scale
    re = gpu.refilter({"input": nl.filters.Clamp(0, 0.2)})
    assert np.isfinite(re.relevance).all()
