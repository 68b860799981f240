"""BatchNorm folding (lrp/folding.py): the folded parameters by hand, and zennit's canonizer as oracle."""

import torch
from torch import nn

from napari_lrp.lrp import Propagation
from napari_lrp.lrp.folding import foldable, folded_parameters

from ._zennit import import_zennit


def test_folded_parameters_hand_values():
    conv = nn.Conv3d(1, 2, 1)
    bn = nn.BatchNorm3d(2).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([1.0, 0.5]))
        bn.running_mean.copy_(torch.tensor([0.5, -0.5]))
        bn.running_var.copy_(torch.tensor([4.0 - bn.eps, 0.25 - bn.eps]))
        bn.weight.copy_(torch.tensor([3.0, -2.0]))
        bn.bias.copy_(torch.tensor([0.25, 1.0]))
    p = folded_parameters(conv, bn)  # s = gamma / sqrt(var + eps) = (1.5, -4)
    torch.testing.assert_close(p["weight"].flatten(), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(p["bias"], torch.tensor([1.5 * 0.5 + 0.25, -4 * 1.0 + 1.0]))
    x = torch.randn(1, 1, 2, 2, 2)
    torch.testing.assert_close(bn(conv(x)), nn.functional.conv3d(x, p["weight"], p["bias"]))
    assert foldable(conv, conv(x), bn)
    assert not foldable(conv, torch.zeros(1, 3, 2, 2, 2), bn)  # channel count differs


def test_batchnorm_is_folded_into_the_convolution_like_zennit_canonizer():
    """an eval BatchNorm right after a convolution is folded into it (gamma then sees W' = s W)."""
    import_zennit()
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                        nn.Conv3d(4, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(-1.5, 1.5)  # negative scales flip the sign of folded weights
                m.bias.uniform_(-0.5, 0.5)
    net = net.double().eval()
    x = torch.randn(1, 2, 6, 6, 6, dtype=torch.float64)
    start = net(x).detach()
    prop = Propagation(net, x, rules="epsilon-gamma-box", bounds=(-3.0, 3.0))
    assert prop.folded == [("0", "1"), ("3", "4")]
    got = prop.propagate(start).relevance
    xx = x.clone().requires_grad_(True)
    comp = EpsilonGammaBox(low=torch.full_like(x, -3.0), high=torch.full_like(x, 3.0),
                           canonizers=[SequentialMergeBatchNorm()])
    with comp.context(net) as m:
        (want,) = torch.autograd.grad(m(xx), xx, start)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    # the model is unchanged and the paper preset (norms pass relevance) does not fold
    assert torch.equal(net(x), start)
    assert Propagation(net, x, rules="paper").folded == []
