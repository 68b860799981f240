"""The oneDNN convolution kernels equal torch's convolutions (float64 reference) for every geometry."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_lrp.lrp import Propagation, kernels

GEOMETRIES = [  # (in, out, kernel, stride, padding, dilation, groups, output_padding)
    (6, 16, 3, 1, 1, 1, 1, 0),
    (4, 6, 3, 1, 2, 2, 2, 0),
    (4, 6, 3, 2, 1, 1, 1, 1),
    (8, 8, 2, 2, 0, 1, 1, 0),
    (4, 6, (1, 3, 3), 1, (0, 1, 1), 1, 1, 0),
    (3, 5, 3, 1, 0, 1, 1, 0),
]


def _rel(a, b):
    return float((a.double() - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_kernels_equal_torch_convolutions(geometry):
    ci, co, k, s, p, d, g, op = geometry
    torch.manual_seed(0)
    ks = (k,) * 3 if isinstance(k, int) else k
    x = torch.randn(1, ci, 5, 7, 9, dtype=torch.float64)
    w = torch.randn(co, ci // g, *ks, dtype=torch.float64)
    b = torch.randn(co, dtype=torch.float64)
    ref = F.conv3d(x, w, b, s, p, d, g)
    assert _rel(kernels.conv3d(x.float(), w.float(), b.float(), s, p, d, g), ref) < 1e-6
    v = torch.randn_like(ref)
    ref_t = torch.nn.grad.conv3d_input(x.shape, w, v, s, p, d, g)
    got_t = kernels.conv3d_input(x.shape, w.float(), v.float(), s, p, d, g)
    assert got_t.shape == x.shape and _rel(got_t, ref_t) < 1e-6
    wt = torch.randn(ci, co // g, *ks, dtype=torch.float64)
    ref_tt = F.conv_transpose3d(x, wt, b, s, p, op, g, d)
    assert _rel(kernels.conv_transpose3d(x.float(), wt.float(), b.float(), s, p, op, g, d), ref_tt) < 1e-6
    # float64 goes to torch's own functions unchanged
    assert torch.equal(kernels.conv3d(x, w, b, s, p, d, g), ref)


def test_onednn_convolutions_gradient_equals_torch_gradient():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(8, 4, 3, stride=2, padding=1),
                        nn.ConvTranspose3d(4, 2, 2, stride=2)).eval()
    x = torch.randn(1, 3, 6, 10, 10, requires_grad=True)
    (g_ref,) = torch.autograd.grad(net(x).square().sum(), x)
    with kernels.onednn_convolutions():
        y = net(x)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        wg = torch.autograd.grad(net(x).sum(), net[0].weight)[0]  # weight gradients still flow
    assert _rel(g, g_ref.double()) < 1e-5
    assert _rel(wg, torch.autograd.grad(net(x).sum(), net[0].weight)[0].double()) < 1e-5


def test_engine_forward_runs_on_the_kernels_and_matches_the_module():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose3d(4, 2, 2, stride=2)).eval()
    x = torch.randn(1, 2, 4, 6, 6)
    calls = []
    original = torch.mkldnn_convolution

    def counting(*args):
        calls.append(args[0].shape)
        return original(*args)

    torch.mkldnn_convolution = counting
    try:
        prop = Propagation(net, x)
    finally:
        torch.mkldnn_convolution = original
    assert calls, "the engine's forward did not use the oneDNN kernel"
    with torch.no_grad():
        assert _rel(prop.output, net(x).double()) < 1e-6


def test_input_gradient_with_few_channels_takes_torchs_onednn_transposed_kernel():
    """32 -> 3 channels on 8x96x9 (N*C*D*H = 24576 > 20480): torch's oneDNN transposed kernel path."""
    torch.manual_seed(3)
    x = torch.randn(1, 3, 8, 96, 9, dtype=torch.float64)
    w = torch.randn(32, 3, 3, 3, 3, dtype=torch.float64)
    v = torch.randn(1, 32, 8, 96, 9, dtype=torch.float64)
    ref = torch.nn.grad.conv3d_input(x.shape, w, v, 1, 1)
    assert _rel(kernels.conv3d_input(x.shape, w.float(), v.float(), 1, 1), ref) < 1e-6


def test_onednn_convolutions_bind_keyword_arguments():
    torch.manual_seed(4)
    x = torch.randn(1, 3, 4, 6, 6)
    w = torch.randn(5, 3, 3, 3, 3)
    wt = torch.randn(3, 2, 2, 2, 2)
    with kernels.onednn_convolutions():
        a = F.conv3d(input=x, weight=w, padding=1)
        b = F.conv_transpose3d(x, wt, stride=2)
    assert _rel(a, F.conv3d(x.double(), w.double(), padding=1)) < 1e-6
    assert _rel(b, F.conv_transpose3d(x.double(), wt.double(), stride=2)) < 1e-6
