"""Attention and token layers: a ViT-style block against lxt (the AttnLRP authors' package) and
CP-LRP against an analytic identity, hand values of the softmax and LayerNorm rules, functional forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_lrp.lrp import presets as presets_module
from napari_lrp.lrp import propagate
from napari_lrp.lrp.engine import Propagation
from napari_lrp.lrp.presets import Preset
from napari_lrp.lrp.rules import Epsilon, Softmax


class Block(nn.Module):
    """Pre-norm transformer block on tokens (batch, tokens, features): LayerNorm, multi-head softmax
    attention with q k^T and att v as matrix products, a residual, LayerNorm, MLP (GELU), a residual.
    ``functional=True`` uses F.layer_norm / torch.einsum / F.softmax for the same maps; ``bias=False``
    and ``act=nn.ReLU`` make it piecewise linear once the attention weights and the std are constants."""

    def __init__(self, d=8, heads=2, bias=True, act=nn.GELU, functional=False):
        super().__init__()
        self.h, self.functional = heads, functional
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=bias), nn.LayerNorm(d, bias=bias)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=bias), nn.Linear(d, d, bias=bias)
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d, bias=bias), act(), nn.Linear(2 * d, d, bias=bias)
        self.softmax = nn.Softmax(dim=-1)
        for p in self.parameters():  # weights away from the identity, so the rules differ visibly
            nn.init.normal_(p, 0.0, 0.6) if p.ndim > 1 else nn.init.normal_(p, 0.1, 0.3)

    def attention(self, h, detach=False):
        b, t, d = h.shape
        q, k, v = self.qkv(h).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        scale = 1.0 / math.sqrt(d // self.h)
        if self.functional:
            att = F.softmax(torch.einsum("bhxd,bhyd->bhxy", q, k) * scale, dim=-1)
            o = torch.einsum("bhxy,bhyd->bhxd", att.detach() if detach else att, v)
        else:
            att = self.softmax(q @ k.transpose(-1, -2) * scale)
            o = (att.detach() if detach else att) @ v
        return self.proj(o.transpose(1, 2).reshape(b, t, d))

    def norm(self, ln, x, detach=False):
        if not detach:
            return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps) if self.functional else ln(x)
        mean = x.mean(-1, keepdim=True)
        std = (x.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt().detach()
        y = (x - mean) / std * ln.weight
        return y if ln.bias is None else y + ln.bias

    def forward(self, x, detach=False):
        x = x + self.attention(self.norm(self.ln1, x, detach), detach)
        return x + self.fc2(self.act(self.fc1(self.norm(self.ln2, x, detach))))


def lxt_relevance(block: Block, x, start, eps=1e-12):
    """The same block built from lxt's explicit AttnLRP functions; its input gradient is the relevance."""
    lf = pytest.importorskip("lxt.explicit.functional")
    lr = pytest.importorskip("lxt.explicit.rules")

    def lin(m, h):
        return lf.linear_epsilon(h, m.weight, m.bias, eps)

    def ln(m, h):
        return lf.layer_norm_grad_fn.apply(h, m.weight, m.bias, m.eps, eps)

    x = x.detach().clone().requires_grad_(True)
    b, t, d = x.shape
    q, k, v = lin(block.qkv, ln(block.ln1, x)).reshape(b, t, 3, block.h, d // block.h).permute(2, 0, 3, 1, 4)
    scale = 1.0 / math.sqrt(d // block.h)
    att = lf.softmax(lf.mul2(lf.matmul(q, k.transpose(-1, -2), False, eps), scale), -1)
    o = lf.matmul(att, v, False, eps).transpose(1, 2).reshape(b, t, d)
    y = lf.add2(x, lin(block.proj, o), False, eps)
    mlp = lin(block.fc2, lr.identity(block.act, lin(block.fc1, ln(block.ln2, y))))
    out = lf.add2(y, mlp, False, eps)
    out.backward(start)
    return x.grad


@pytest.mark.parametrize("functional", [False, True], ids=["modules", "functional"])
def test_attnlrp_agrees_with_lxt_on_a_vit_block(functional):
    torch.manual_seed(0)
    block = Block(functional=functional).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    start = torch.randn(2, 5, 8, dtype=torch.float64)
    R, ledger = propagate(block, x, start, rules="lrp0", return_ledger=True, strict=True)
    expected = lxt_relevance(block, x, start)
    err = float((R - expected).abs().max() / expected.abs().max())
    assert err < 1e-9, err
    assert abs(ledger.unaccounted) < 1e-12 and ledger.unhandled == {}
    # the rules differ from a plain gradient x input by far more than the tolerance
    xg = x.clone().requires_grad_(True)
    y = block(xg)
    (g,) = torch.autograd.grad(y, xg, start / y.detach())
    assert float((g * x - expected).abs().max() / expected.abs().max()) > 0.05


@pytest.fixture
def exact_cp_lrp(monkeypatch):
    """CP-LRP with every stabiliser at zero (LRP-0), registered for this test only."""
    monkeypatch.setitem(presets_module._REGISTRY, "cp-lrp-0",
                        lambda b: Preset("cp-lrp-0", [], None, attention="cp-lrp", product_epsilon=0.0))
    return "cp-lrp-0"


@pytest.mark.parametrize("functional", [False, True], ids=["modules", "functional"])
def test_cp_lrp_equals_gradient_x_input_with_attention_and_std_constant(functional, exact_cp_lrp):
    """Bias-free, ReLU: with the attention weights and the LayerNorm std held constant the block is
    piecewise linear and homogeneous in x, so CP-LRP's LRP-0 is gradient x input of that network (seeded
    with start / output, the LRP-0 message at the output)."""
    torch.manual_seed(1)
    block = Block(bias=False, act=nn.ReLU, functional=functional).double().eval()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    start = torch.randn(1, 6, 8, dtype=torch.float64)
    R, ledger = propagate(block, x, start, rules=exact_cp_lrp, return_ledger=True, strict=True)
    xg = x.clone().requires_grad_(True)
    y = block(xg, detach=True)
    (g,) = torch.autograd.grad(y, xg, start / y.detach())
    expected = g * x
    assert float((R - expected).abs().max() / expected.abs().max()) < 1e-10
    assert abs(float(R.sum()) - float(start.sum())) < 1e-9 * float(start.abs().sum())  # conserves
    assert abs(ledger.unaccounted) < 1e-12


def test_softmax_rule_hand_values():
    """R_in = x (R - s sum R), by hand on three scores."""
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    s = torch.softmax(x, -1)
    R = torch.tensor([[0.5, 1.0, 0.25]], dtype=torch.float64)
    rule = Softmax()
    out = rule.relevance(rule.prepare(nn.Softmax(dim=-1), x, s, {}), R)
    total = 1.75
    expected = [x[0, i].item() * (R[0, i].item() - s[0, i].item() * total) for i in range(3)]
    assert torch.allclose(out[0], torch.tensor(expected, dtype=torch.float64), atol=1e-15)


def test_layer_norm_rule_hand_values():
    """AttnLRP LayerNorm: the centring is differentiated, the std held constant:
    R_i = x_i (v_i - mean v), v = gamma / std * R / y; the relevance lost is the bias share sum beta R / y."""
    ln = nn.LayerNorm(4).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        ln.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.tensor([[1.0, 3.0, -2.0, 0.5]], dtype=torch.float64)
    y = ln(x).detach()
    R = torch.tensor([[1.0, -0.5, 2.0, 0.25]], dtype=torch.float64)
    rule = Epsilon(0.0)
    out = rule.relevance(rule.prepare(ln, x, y, {}), R)
    std = math.sqrt(float(x.var(unbiased=False)) + ln.eps)
    v = [ln.weight[i].item() / std * R[0, i].item() / y[0, i].item() for i in range(4)]
    vbar = sum(v) / 4
    expected = torch.tensor([x[0, i].item() * (v[i] - vbar) for i in range(4)], dtype=torch.float64)
    assert torch.allclose(out[0], expected, atol=1e-13)
    absorbed = float(R.sum() - out.sum())
    assert abs(absorbed - float((ln.bias.detach() * R[0] / y[0]).sum())) < 1e-12


def test_parameter_operand_of_an_add_is_a_constant_absorbed():
    """A position bias taken from a parameter table (it has a grad_fn in plain torch) is a constant: its
    share of the sum is absorbed and booked, none of the relevance goes to the parameter."""

    class PositionBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64))
            self.index = torch.tensor([2, 0, 3, 1])

        def forward(self, x):
            return x + self.table[self.index]

    net = PositionBias()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    y = net(x).detach()
    R, ledger = propagate(net, x, y, rules="lrp0", return_ledger=True, strict=True)
    assert torch.allclose(R, x)  # R_x = x / y * y
    assert abs(ledger.absorbed - float(net.table.detach()[net.index].sum())) < 1e-12 and abs(ledger.unaccounted) < 1e-15
    assert net.table.requires_grad  # restored after the forward


def test_three_operand_einsum_is_reported():
    class Triple(nn.Module):
        def forward(self, x):
            return torch.einsum("bi,bi,bi->bi", x, x * 2, x + 1)

    x = torch.rand(1, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match="einsum"):
        propagate(Triple(), x, torch.ones(1, 3, dtype=torch.float64))


def test_cp_lrp_gives_queries_and_keys_no_relevance():
    torch.manual_seed(2)
    block = Block().double().eval()
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    prop = Propagation(block, x, rules="cp-lrp")
    res = prop.propagate(torch.ones_like(prop.output), keep=["qkv"])
    R_qkv = res.kept["qkv"].reshape(1, 4, 3, 8)
    assert float(R_qkv[:, :, :2].abs().max()) == 0.0 and float(R_qkv[:, :, 2].abs().max()) > 0
    res = Propagation(block, x, rules="attnlrp").propagate(torch.ones_like(prop.output), keep=["qkv"])
    assert float(res.kept["qkv"].reshape(1, 4, 3, 8)[:, :, :2].abs().max()) > 0


@pytest.mark.parametrize("fused", [False, True], ids=["einsum", "scaled_dot_product_attention"])
def test_attnlrp_agrees_with_lxt_on_monai_unetr_transformer_block(fused):
    """UNETR's own block (monai.networks.blocks.TransformerBlock: LayerNorm, SABlock with einops rearranges
    and einsum attention, or the fused F.scaled_dot_product_attention, MLP with GELU) against lxt on its
    weights."""
    from types import SimpleNamespace

    from monai.networks.blocks import TransformerBlock

    torch.manual_seed(4)
    block = TransformerBlock(hidden_size=8, mlp_dim=16, num_heads=2, dropout_rate=0.0, qkv_bias=True,
                             use_flash_attention=fused).double().eval()
    for p in block.parameters():
        nn.init.normal_(p, 0.0, 0.6) if p.ndim > 1 else nn.init.normal_(p, 0.1, 0.3)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    start = torch.randn(2, 5, 8, dtype=torch.float64)
    R, ledger = propagate(block, x, start, rules="lrp0", return_ledger=True, strict=True)
    same = SimpleNamespace(h=block.attn.num_heads, ln1=block.norm1, qkv=block.attn.qkv, proj=block.attn.out_proj,
                           ln2=block.norm2, fc1=block.mlp.linear1, act=block.mlp.fn, fc2=block.mlp.linear2)
    expected = lxt_relevance(same, x, start)
    assert float((R - expected).abs().max() / expected.abs().max()) < 1e-9
    assert ledger.unhandled == {} and abs(ledger.unaccounted) < 1e-12


def test_fused_attention_with_a_causal_mask_books_the_masked_scores():
    class Causal(nn.Module):
        def forward(self, x):
            return F.scaled_dot_product_attention(x, x * 0.5, x, is_causal=True)

    x = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    y = Causal()(x)
    R, ledger = propagate(Causal(), x, y, rules="lrp0", return_ledger=True, strict=True)
    assert bool(torch.isfinite(R).all()) and abs(ledger.unaccounted) < 1e-12 and ledger.unhandled == {}
