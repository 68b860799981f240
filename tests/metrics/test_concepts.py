"""Concept relevance (metrics/concepts.py): channel relevance equals zennit's relevance at the layer,
conditional heatmaps equal zennit-crp's CondAttribution (one channel, a channel set, two layers), and the
conditional maps of all channels of a layer every path crosses add up to the full map."""

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

import napari_lrp as nl
from napari_lrp.io import Case
from napari_lrp.io.orientation import Grid
from napari_lrp.lrp import Epsilon
from napari_lrp.models import UNet3D
from tests.lrp._zennit import import_zennit
from tests.lrp.test_engine import ConcatUNet


def _case(shape=(2, 8, 8, 8), seed=0) -> Case:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(shape).astype(np.float32)
    label = np.zeros(shape[1:], np.uint8)
    label[2:5, 2:6, 3:6] = 1
    grid = Grid(affine=np.diag([1.0, 1.0, 1.0, 1.0]), shape=shape[1:][::-1])
    return Case(image=image, modalities=[f"m{i}" for i in range(shape[0])], label=label, grid=grid, name="c")


@pytest.fixture(scope="module")
def concat_run():
    torch.manual_seed(0)
    net = ConcatUNet().double().eval()
    case = _case()
    rules = {nn.Conv3d: Epsilon(1e-6), nn.ConvTranspose3d: Epsilon(1e-6)}
    exp = nl.explain(net, case, preset="lrp0", rules=rules, target="output", keep=True)
    return net, case, exp


def _zennit_composite():
    import_zennit()
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon as ZEps
    from zennit.rules import Pass as ZPass
    from zennit.types import Activation, Convolution

    return LayerMapComposite([(Activation, ZPass()), (Convolution, ZEps(1e-6))])


def _x(exp):
    return exp._run.prepared.x.detach().clone().double()


def test_channel_relevance_equals_zennits_relevance_at_the_layer(concat_run):
    net, case, exp = concat_run
    x = _x(exp).requires_grad_(True)
    store = {}

    def keep(_module, _args, out):
        out.retain_grad()
        store["e2"] = out

    handle = net.e2.register_forward_hook(keep)
    with _zennit_composite().context(net) as m:
        y = m(x)
        y.backward(y.detach())  # the 'output' target: the output itself as the start relevance
    handle.remove()
    want = store["e2"].grad[0].sum(dim=(1, 2, 3)).numpy()
    table = exp.concepts("e2")
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(table.relevance.to_numpy(), want, atol=1e-6 * scale)
    assert table.share.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(table.positive + table.negative, table.relevance, atol=1e-12 * scale)


@pytest.mark.parametrize("conditions", [{"e2": [3]}, {"e2": [1, 4, 6]}, {"d1": [0, 2]},
                                        {"d1": [0, 2], "e2": [3, 5]}])
def test_conditional_heatmaps_equal_zennit_crp(concat_run, conditions):
    import_zennit()
    crp = pytest.importorskip("crp.attribution")

    class PerChannel(crp.CondAttribution):  # the heatmap per input channel, not summed
        def heatmap_modifier(self, data, on_device=None):
            return data.grad.detach()

    net, case, exp = concat_run
    x = _x(exp).requires_grad_(True)
    start = exp._run.start.double()
    # zennit-crp masks from the output down in the order the layers are given (the last layer first)
    order = sorted(conditions, key=["e1", "pool", "e2", "up", "d1", "head"].index, reverse=True)
    attribution = PerChannel(net, no_param_grad=False)
    res = attribution(x, [{name: conditions[name] for name in order}], _zennit_composite(), init_rel=start)
    want = res.heatmap[0].numpy()
    got = exp.conditional(dict(conditions))
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(got, want, atol=1e-6 * scale)


def _completeness(exp, layer, n_channels):
    full = exp.relevance.astype(np.float64)
    total = sum(exp.conditional(layer, c).astype(np.float64) for c in range(n_channels))
    np.testing.assert_allclose(total, full, atol=1e-6 * float(np.abs(full).max()))


@pytest.mark.parametrize("make, layer", [
    (lambda: UNet3D(2, 2, width=4), "encoders.0"),
    (lambda: UNet3D(2, 2, width=4), "decoders.2"),
    (lambda: UNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                  num_res_units=1), "model.0"),
])
def test_all_channels_of_a_layer_every_path_crosses_add_up_to_the_full_map(make, layer):
    torch.manual_seed(1)
    net = make().double().eval()
    case = _case((2, 16, 16, 16))
    exp = nl.explain(net, case, preset="epsilon-plus-flat", target="groundtruth")
    n = int(exp._run.propagation.outputs[layer].shape[1])
    _completeness(exp, layer, n)


def test_channel_relevance_reads_the_kept_pass_and_ranks_channels(concat_run):
    net, case, exp = concat_run
    calls = []
    prop = exp._run.propagation
    original = prop.propagate
    prop.propagate = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        table = exp.concepts("d1")
    finally:
        prop.propagate = original
    assert not calls  # every channel of a kept layer from the run's one backward pass
    assert list(table.channel) == list(range(4))
    assert np.isnan(table.activation_in).all()  # the 'output' target has no region


def test_activation_inside_and_outside_the_target_region_by_hand():
    torch.manual_seed(2)
    net = ConcatUNet().double().eval()
    case = _case()
    exp = nl.explain(net, case, preset="lrp0", target="groundtruth", keep=["e1"])
    table = exp.concepts("e1")
    act = exp._run.propagation.outputs["e1"][0].detach().numpy()
    inside = case.ground_truth
    np.testing.assert_allclose(table.activation_in, act[:, inside].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(table.activation_out, act[:, ~inside].mean(axis=1), rtol=1e-12)


def test_concept_measures_sort_channels_by_what_they_look_at(concat_run):
    net, case, exp = concat_run
    m = exp.concept_measures("e2", channels=[0, 1])
    assert list(m.channel) == [0, 1] and "groundtruth_inclusivity" in m.columns


def test_runs_without_a_forward_pass_to_condition_are_refused():
    torch.manual_seed(3)
    net = ConcatUNet().double().eval()
    case = _case()
    other = nl.explain(net, case, method="gradient", target="output")
    with pytest.raises(ValueError, match="needs a single LRP run"):
        other.concepts("e2")
    exp = nl.explain(net, case, preset="lrp0", target="output")
    with pytest.raises(ValueError, match="'e9' names no layer"):
        exp.conditional("e9", 0)
    with pytest.raises(ValueError, match="channel 99 does not exist"):
        exp.conditional("e2", 99)


def test_a_tiled_run_conditions_every_window_and_adds_up():
    torch.manual_seed(4)
    net = UNet3D(2, 2, width=4).double().eval()
    case = _case((2, 16, 16, 16))
    exp = nl.explain(net, case, preset="epsilon-plus-flat", target="groundtruth", window=(8, 16, 16), overlap=0.5)
    assert exp.tiling["windows"] == 3
    _completeness(exp, "encoders.0", exp.layer_shapes["encoders.0"][1])
    table = exp.concepts("encoders.0")
    # the channels' relevance over the windows: at the first block every path crosses, it is the whole input's
    assert table.relevance.sum() == pytest.approx(float(exp.unfiltered_relevance.astype(np.float64).sum()),
                                                  rel=1e-5)  # the map on the case grid is float32
    # the mean activations inside / outside the target over the windows' layer voxels: by hand from each window
    act_in, act_out, n_in, n_out = 0.0, 0.0, 0, 0
    region = torch.as_tensor(case.label > 0, dtype=torch.float64)
    for start in (0, 4, 8):  # the three windows of 8 slices, half overlapping
        part = case.image[None, :, start:start + 8].astype(np.float64)
        out = {}

        def keep(_module, _inputs, output, out=out):
            out["a"] = output[0].detach()  # returning nothing: a hook's return value replaces the output

        hook = net.encoders[0].register_forward_hook(keep)
        net(torch.as_tensor(part))
        hook.remove()
        m = region[start:start + 8].numpy()  # encoders.0 keeps the window's grid here
        a = out["a"].numpy()
        act_in, act_out = act_in + a[:, m > 0].sum(1), act_out + a[:, m == 0].sum(1)
        n_in, n_out = n_in + int((m > 0).sum()), n_out + int((m == 0).sum())
    np.testing.assert_allclose(table.activation_in, act_in / n_in, rtol=1e-10)
    np.testing.assert_allclose(table.activation_out, act_out / n_out, rtol=1e-10)


def test_the_sample_nnunet_folder_conditions_on_the_case_grid():
    from napari_lrp.samples import sample_case_path, sample_nnunet_path

    model = nl.load_model(sample_nnunet_path(), fold=0)
    exp = nl.explain(model, nl.load_case(sample_case_path(1)), preset="epsilon-plus-flat")
    layer = "encoder.stages.0"  # every path from the output to the input crosses the first stage
    n = exp.layer_shapes[layer][1]
    _completeness(exp, layer, n)  # the pipeline runs in float32: 3e-7 of max |R| measured
