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


@pytest.mark.skipif(not DEVICES, reason="no GPU here")
@pytest.mark.parametrize("device", DEVICES)
def test_gpu_tiled_run_equals_cpu_tiled_run(device):
    """Sliding windows on the GPU blend to the CPU's tiled relevance; the memory plan reads the GPU's memory."""
    from napari_lrp.models.devices import available_bytes
    from napari_lrp.pipeline.tiling import budget

    case = load_sample_case(1)
    kw = {"preset": "paper", "window": (12, 48, 48), "overlap": 0.5}
    cpu = nl.explain(nl.load_model(sample_model_path(), device="cpu"), case, **kw)
    gpu = nl.explain(nl.load_model(sample_model_path(), device=device), case, **kw)
    assert gpu.tiling["windows"] == cpu.tiling["windows"] > 1
    scale = np.abs(cpu.relevance).max()
    assert np.abs(gpu.relevance - cpu.relevance).max() <= 1e-3 * scale
    np.testing.assert_array_equal(gpu.prediction, cpu.prediction)
    if device.startswith("cuda"):
        assert budget(None, device=torch.device(device)) <= 0.5 * available_bytes(device) * 1.01


@pytest.mark.skipif(not DEVICES, reason="no GPU here")
@pytest.mark.parametrize("device", DEVICES)
def test_gpu_batched_draws_equal_one_draw_per_batch(device):
    """On an accelerator the draws run in batches sized from the device's free memory; each batch sample keeps
    its own dropout mask, so the batched relevance, probabilities and entropy equal one draw per batch."""
    from napari_lrp.samples import sample_dropout_model_path

    case = load_sample_case(1)
    model = nl.load_model(sample_dropout_model_path(), device=device)
    batched = nl.explain(model, case, preset="paper", mc_samples=6, seed=0)
    single = nl.explain(model, case, preset="paper", mc_samples=6, seed=0, batch_size=1)
    assert len(batched._run.batches) < 6 == len(single._run.batches)
    scale = np.abs(single.relevance).max()
    assert np.abs(batched.relevance - single.relevance).max() <= 1e-3 * scale
    np.testing.assert_allclose(batched.predictive_entropy, single.predictive_entropy, atol=1e-4)
    assert np.abs(batched.relevance_std).max() > 0
