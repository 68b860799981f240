"""Every rule on a single Conv3d / ConvTranspose3d equals a dense reimplementation from the Jacobian."""

import pytest
import torch
from torch import nn

from napari_lrp.lrp import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus, propagate


def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


def dense_jacobian(layer, x, weight=None):
    """J (K, J) of the layer's linear part (bias removed), computed by autograd on the flat input."""
    w = layer.weight if weight is None else weight
    n = x.numel()
    basis = torch.eye(n, dtype=x.dtype).view(n, *x.shape[1:])  # column j of J is the map applied to e_j
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            out = nn.functional.linear(basis, w)
        elif isinstance(layer, nn.ConvTranspose3d):
            out = nn.functional.conv_transpose3d(basis, w, None, layer.stride, layer.padding, layer.output_padding)
        else:
            out = nn.functional.conv3d(basis, w, None, layer.stride, layer.padding)
    return out.reshape(n, -1).T


def oracle(rule, layer, x, R):
    xv = x.flatten()
    J = dense_jacobian(layer, x)
    b = torch.zeros(J.shape[0], dtype=x.dtype) if layer.bias is None else layer(x).detach().flatten() - J @ xv
    z = J @ xv + b
    Rk = R.flatten()
    C = J * xv[None, :]  # contributions C[k, j] = a_j w_jk
    if isinstance(rule, Epsilon):
        out = (C / _stab(z, rule.epsilon)[:, None] * Rk[:, None]).sum(0)
    elif isinstance(rule, Gamma):
        g = rule.gamma
        Cp, Cn = C.clamp(min=0), C.clamp(max=0)
        num_p, num_n = C + g * Cp, C + g * Cn
        den_p = num_p.sum(1) + b + g * b.clamp(min=0)
        den_n = num_n.sum(1) + b + g * b.clamp(max=0)
        sp = (z > 0) * Rk / _stab(den_p, rule.epsilon)
        sn = (z < 0) * Rk / _stab(den_n, rule.epsilon)
        out = (num_p * sp[:, None] + num_n * sn[:, None]).sum(0)
    elif isinstance(rule, AlphaBeta):  # includes ZPlus
        Cp, Cn = C.clamp(min=0), C.clamp(max=0)
        out = rule.alpha * (Cp / _stab(Cp.sum(1), rule.epsilon)[:, None] * Rk[:, None]).sum(0)
        if rule.beta:
            out = out - rule.beta * (Cn / _stab(Cn.sum(1), rule.epsilon)[:, None] * Rk[:, None]).sum(0)
    elif isinstance(rule, ZBox):
        l = torch.full_like(xv, rule.low)  # noqa: E741
        h = torch.full_like(xv, rule.high)
        Z = C - J.clamp(min=0) * l[None] - J.clamp(max=0) * h[None]
        out = (Z / _stab(Z.sum(1), rule.epsilon)[:, None] * Rk[:, None]).sum(0)
    elif isinstance(rule, (Flat, WSquare)):
        w = torch.ones_like(layer.weight) if isinstance(rule, Flat) else layer.weight**2
        Jm = dense_jacobian(layer, x, w)
        out = (Jm / _stab(Jm.sum(1), rule.epsilon)[:, None] * Rk[:, None]).sum(0)
    else:
        raise AssertionError(rule)
    return out.view_as(x)


RULES = [Epsilon(1e-9), Epsilon(0.5), Gamma(0.25, 1e-6), AlphaBeta(2, 1, 1e-6), AlphaBeta(1, 0, 1e-6),
         ZPlus(1e-6), ZBox(-1.5, 2.0, 1e-6), Flat(1e-6), WSquare(1e-6)]


@pytest.mark.parametrize("rule", RULES, ids=repr)
@pytest.mark.parametrize("kind", ["conv", "convT"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_rule_equals_dense_oracle(rule, kind, bias, stride):
    torch.manual_seed(1)
    if kind == "conv":
        layer = nn.Conv3d(2, 3, 3, stride=stride, padding=1, bias=bias)
    else:
        layer = nn.ConvTranspose3d(2, 3, 2 if stride == 2 else 3, stride=stride, padding=0 if stride == 2 else 1,
                                   bias=bias)
    layer = layer.double().eval()
    x = torch.randn(1, 2, 4, 4, 3, dtype=torch.float64)
    if isinstance(rule, ZBox):
        x = x.clamp(-1.5, 2.0)
    R = torch.randn_like(layer(x))
    got = propagate(layer, x, R, rules={type(layer): rule})
    want = oracle(rule, layer, x, R)
    scale = want.abs().max()
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(scale)), float((got - want).abs().max() / scale)


@pytest.mark.parametrize("rule", RULES, ids=repr)
def test_linear_on_tokens_takes_its_bias_on_the_feature_axis(rule):
    """nn.Linear on (batch, tokens, features) with as many tokens as features (where a bias on the wrong
    axis raises no error): every rule equals the dense oracle."""
    torch.manual_seed(3)
    layer = nn.Linear(4, 4).double().eval()
    x = torch.randn(1, 4, 4, dtype=torch.float64)
    if isinstance(rule, ZBox):
        x = x.clamp(-1.5, 2.0)
    R = torch.randn_like(layer(x))
    got = propagate(layer, x, R, rules={nn.Linear: rule})
    want = oracle(rule, layer, x, R).view_as(x)
    scale = want.abs().max()
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(scale)), float((got - want).abs().max() / scale)


def test_nonnegative_input_takes_the_fast_path_with_the_same_result():
    torch.manual_seed(2)
    layer = nn.Conv3d(2, 3, 3, padding=1).double().eval()
    x = torch.rand(1, 2, 4, 4, 3, dtype=torch.float64)
    R = torch.randn_like(layer(x))
    for rule in (Gamma(0.25, 1e-6), ZPlus(1e-6), AlphaBeta(2, 1, 1e-6)):
        assert torch.allclose(propagate(layer, x, R, rules={nn.Conv3d: rule}), oracle(rule, layer, x, R), rtol=1e-6,
                              atol=1e-9)


def test_alphabeta_rejects_alpha_minus_beta_not_one():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2, 2)


@pytest.mark.parametrize("rule", [Gamma(0.25, 1e-6), AlphaBeta(2, 1, 1e-6), ZPlus(1e-6), Epsilon(0.1)], ids=repr)
@pytest.mark.parametrize("kind", ["conv", "convT"])
def test_float32_rules_on_onednn_kernels_match_the_float64_oracle(rule, kind):
    """float32 runs on the oneDNN kernels; the 3x3x3 convolution (4 x 27 = 108 contributions per output)
    forms z+ from z and |x| |w| (one convolution), the 2x2x2 stride-2 transposed one (4 contributions)
    sums signed parts explicitly; the float64 oracle from the same parameters agrees to float32
    rounding. (Epsilon with a small epsilon amplifies the rounding of near-zero z: not a kernel matter.)"""
    torch.manual_seed(3)
    layer = (nn.Conv3d(4, 3, 3, padding=1) if kind == "conv" else nn.ConvTranspose3d(4, 3, 2, stride=2)).eval()
    x = torch.nn.functional.leaky_relu(torch.randn(1, 4, 4, 8, 8), 0.2)
    R = torch.rand_like(layer(x))
    got = propagate(layer, x, R, rules={type(layer): rule}).double()
    want = oracle(rule, layer.double(), x.double(), R.double())
    err = float((got - want).abs().max() / want.abs().max())
    assert err < 1e-5, err


def test_zplus_float32_never_negative_where_positive_parts_are_below_rounding():
    """Outputs whose only positive contribution is tiny: (z - b + |x||w|)/2 has a rounding error larger
    than the true z+ and can come out below 0, which would flip the sign of their relevance; the
    engine clamps z+ at 0, so z+ relevance stays non-negative."""
    torch.manual_seed(4)
    layer = nn.Conv3d(64, 1, 1).eval()  # 64 contributions per output: the one-convolution path
    with torch.no_grad():
        layer.weight.abs_()
        layer.bias.fill_(5.0)
    x = -torch.rand(1, 64, 4, 9, 9) - 1  # all contributions negative ...
    x[0, 0] = 1e-7  # ... except a tiny one at every output
    R = torch.rand_like(layer(x))
    got = propagate(layer, x, R, rules={nn.Conv3d: ZPlus(1e-9)})
    assert float(got.min()) >= 0
