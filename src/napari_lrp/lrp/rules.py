"""LRP rules (DESIGN section 4) as small objects.

A rule turns the relevance R at a module's output into relevance at its input. It is prepared in the
forward pass (:meth:`Rule.prepare`, which may build modified forward graphs and keeps what the
backward needs) and applied in the backward pass (:meth:`Rule.relevance`), so the relevance can be
propagated many times from one forward pass. Denominators are stabilised z + eps * sign(z) with
sign(0) := 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rule", "Epsilon", "LRP0", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "Flat", "WSquare",
           "PassThrough", "WinnerTakesAll", "LINEAR_TYPES", "NORM_TYPES"]

LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d)
NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z), with sign(0) := 1."""
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def linear_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The module's linear map with other parameters (Conv/ConvTranspose any dimension, Linear)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(module.kernel_size)]
        return fn(x, weight, bias, module.stride, module.padding, module.output_padding, module.groups,
                  module.dilation)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(x, weight, bias)
    raise TypeError(f"{type(module).__name__} is not a linear layer (Conv, ConvTranspose or Linear)")


def _grad(outputs, inputs, grad_outputs):
    return torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True)


class Rule:
    """Base class. ``prepare(module, x, z, ctx)`` at forward time -> state; ``relevance(state, R)``."""

    #: rules that need a layer with weights (Conv, ConvTranspose, Linear)
    needs_weights = False
    #: rules that read the module's own autograd graph from its input to its output
    needs_own_graph = False

    def prepare(self, module: nn.Module | None, x: torch.Tensor, z: torch.Tensor, ctx: dict):
        return (x, z)

    def relevance(self, state, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


class Epsilon(Rule):
    """R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k, for any module that is a linear (affine) map of
    its input (it uses the module's own Jacobian): Conv, ConvTranspose, Linear, BatchNorm in eval,
    average pooling, interpolation. For Instance/Group/LayerNorm the statistics of this input are held
    constant (a per-channel affine map)."""

    needs_own_graph = True

    def __init__(self, epsilon: float = 1e-9):
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        if isinstance(module, NORM_TYPES):
            return ("norm", x.detach(), z.detach(), _norm_scale(module, x.detach()))
        return ("graph", x, z)

    def relevance(self, state, R):
        if state[0] == "norm":
            _, x, z, scale = state
            return scale * x * (R / stabilise(z, self.epsilon))
        _, x, z = state
        s = R / stabilise(z.detach(), self.epsilon)
        (g,) = _grad(z, x, s)
        if g is None:
            return torch.zeros_like(x)
        return x.detach() * g


class LRP0(Epsilon):
    """LRP-0: the epsilon rule with only a tiny stabiliser (1e-9) against division by zero."""

    def __init__(self):
        super().__init__(1e-9)


def _norm_scale(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Elementwise dy/dx of a norm layer with this input's statistics held constant, shaped like x."""
    if isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
        if module.track_running_stats and not module.training and module.running_var is not None:
            var = module.running_var.view(1, -1, *([1] * (x.ndim - 2)))
        else:
            var = x.var(dim=tuple(range(2, x.ndim)), unbiased=False, keepdim=True)
        scale = torch.rsqrt(var + module.eps)
        if module.affine:
            scale = scale * module.weight.detach().view(1, -1, *([1] * (x.ndim - 2)))
        return scale.expand_as(x)
    if isinstance(module, nn.GroupNorm):
        n, c = x.shape[:2]
        g = x.reshape(n, module.num_groups, -1)
        var = g.var(dim=2, unbiased=False, keepdim=True)
        scale = torch.rsqrt(var + module.eps).expand_as(g).reshape(x.shape)
        if module.affine:
            scale = scale * module.weight.detach().view(1, -1, *([1] * (x.ndim - 2)))
        return scale
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(x.ndim - len(module.normalized_shape), x.ndim))
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        scale = torch.rsqrt(var + module.eps).expand_as(x)
        if module.elementwise_affine and module.weight is not None:
            scale = scale * module.weight.detach()
        return scale
    raise TypeError(f"no norm scale for {type(module).__name__}")


class PassThrough(Rule):
    """Relevance passes unchanged (activations, dropout in eval, norms in the paper preset)."""

    def prepare(self, module, x, z, ctx):
        if x.shape != z.shape:
            raise ValueError(f"PassThrough needs equal input and output shapes, got {tuple(x.shape)} -> {tuple(z.shape)}")
        return None

    def relevance(self, state, R):
        return R


class WinnerTakesAll(Rule):
    """Max pooling: the relevance of each output goes to the input that won the max."""

    needs_own_graph = True

    def relevance(self, state, R):
        x, z = state
        (g,) = _grad(z, x, R)
        return torch.zeros_like(x) if g is None else g


def _split(x: torch.Tensor, nonneg: bool):
    xp = x.clamp(min=0).requires_grad_(True)
    xn = None if nonneg else x.clamp(max=0).requires_grad_(True)
    return xp, xn


def _bounds_like(value, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 1 and x.ndim >= 2 and t.numel() == x.shape[1]:
        t = t.view(1, -1, *([1] * (x.ndim - 2)))
    return t.expand_as(x).clone()


class _WeightRule(Rule):
    needs_weights = True

    @staticmethod
    def _params(module):
        w = module.weight.detach()
        b = module.bias.detach() if getattr(module, "bias", None) is not None else None
        return w, b


class Gamma(_WeightRule):
    """Contributions a_j w_jk + gamma (a_j w_jk)+, bias b + gamma b+, epsilon-stabilised.

    For outputs z_k < 0 the negative contributions are amplified instead (the generalised gamma rule of
    Andeol et al. 2021, as zennit implements it); for z_k > 0, and so for every relevant neuron of a
    ReLU network, this is exactly the formula of DESIGN section 4.
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6):
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        w, b = self._params(module)
        g = self.gamma
        xd = x.detach()
        nonneg = bool((xd >= 0).all())
        xp, xn = _split(xd, nonneg)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        bp = None if b is None else b + g * b.clamp(min=0)
        bn = None if b is None else b + g * b.clamp(max=0)
        # positive-output denominator: x+ (w + g w+) + x- (w + g w-) + b + g b+
        zpos = linear_forward(module, xp, w + g * wp, bp)
        zneg = linear_forward(module, xp, w + g * wn, bn)
        if xn is not None:
            zpos = zpos + linear_forward(module, xn, w + g * wn, None)
            zneg = zneg + linear_forward(module, xn, w + g * wp, None)
        return (xp, xn, zpos, zneg, z.detach() > 0, z.detach() < 0)

    def relevance(self, state, R):
        xp, xn, zpos, zneg, ispos, isneg = state
        inputs = (xp,) if xn is None else (xp, xn)
        spos = R * ispos / stabilise(zpos.detach(), self.epsilon)
        sneg = R * isneg / stabilise(zneg.detach(), self.epsilon)
        gp = _grad(zpos, inputs, spos)
        gn = _grad(zneg, inputs, sneg)
        out = xp.detach() * (gp[0] + gn[0])
        if xn is not None:
            out = out + xn.detach() * (gp[1] + gn[1])
        return out


class AlphaBeta(_WeightRule):
    """R_j = sum_k (alpha (a_j w_jk)+ / sum_j (a_j w_jk)+ - beta (a_j w_jk)- / sum_j (a_j w_jk)-) R_k.

    alpha - beta = 1; biases are ignored (DESIGN section 4); denominators stabilised by ``epsilon``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        w, _b = self._params(module)
        xd = x.detach()
        nonneg = bool((xd >= 0).all())
        xp, xn = _split(xd, nonneg)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        zpos = linear_forward(module, xp, wp, None)
        if xn is not None:
            zpos = zpos + linear_forward(module, xn, wn, None)
        zneg = None
        if self.beta != 0:
            zneg = linear_forward(module, xp, wn, None)
            if xn is not None:
                zneg = zneg + linear_forward(module, xn, wp, None)
        return (xp, xn, zpos, zneg)

    def relevance(self, state, R):
        xp, xn, zpos, zneg = state
        inputs = (xp,) if xn is None else (xp, xn)
        gp = _grad(zpos, inputs, R / stabilise(zpos.detach(), self.epsilon))
        out = self.alpha * (xp.detach() * gp[0])
        if xn is not None:
            out = out + self.alpha * (xn.detach() * gp[1])
        if zneg is not None:
            gn = _grad(zneg, inputs, R / stabilise(zneg.detach(), self.epsilon))
            out = out - self.beta * (xp.detach() * gn[0])
            if xn is not None:
                out = out - self.beta * (xn.detach() * gn[1])
        return out

    def __repr__(self):
        return f"{type(self).__name__}(alpha={self.alpha}, beta={self.beta}, epsilon={self.epsilon})"


class ZPlus(AlphaBeta):
    """z-plus: only positive contributions (a_j w_jk)+ (alpha = 1, beta = 0), bias ignored; it never
    creates negative relevance from non-negative relevance."""

    def __init__(self, epsilon: float = 1e-6):
        super().__init__(1.0, 0.0, epsilon)

    def __repr__(self):
        return f"ZPlus(epsilon={self.epsilon})"


class ZBox(_WeightRule):
    """z-box for the first layer: R_i = sum_j (x_i w_ij - l_i w_ij+ - h_i w_ij-) / z_j R_j.

    ``low``/``high``: bounds of the input, scalars or one value per input channel; None takes the
    per-channel minimum and maximum of the input itself.
    """

    def __init__(self, low=None, high=None, epsilon: float = 1e-6):
        self.low = low
        self.high = high
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        w, _b = self._params(module)
        xd = x.detach()
        low, high = self.low, self.high
        if low is None or high is None:
            dims = [0] + list(range(2, xd.ndim))
            low = xd.amin(dim=dims) if low is None else low
            high = xd.amax(dim=dims) if high is None else high
        xi = xd.clone().requires_grad_(True)
        lo = _bounds_like(low, xd).requires_grad_(True)
        hi = _bounds_like(high, xd).requires_grad_(True)
        zb = (linear_forward(module, xi, w, None) - linear_forward(module, lo, w.clamp(min=0), None)
              - linear_forward(module, hi, w.clamp(max=0), None))
        return (xi, lo, hi, zb)

    def relevance(self, state, R):
        xi, lo, hi, zb = state
        s = R / stabilise(zb.detach(), self.epsilon)
        gx, gl, gh = _grad(zb, (xi, lo, hi), s)
        return xi.detach() * gx + lo.detach() * gl + hi.detach() * gh

    def __repr__(self):
        return f"ZBox(low={self.low!r}, high={self.high!r}, epsilon={self.epsilon})"

    def __eq__(self, other):
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))


class _ConstantInputRule(_WeightRule):
    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = float(epsilon)

    def _weight(self, w):  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, module, x, z, ctx):
        w, _b = self._params(module)
        ones = torch.ones_like(x.detach()).requires_grad_(True)
        zf = linear_forward(module, ones, self._weight(w), None)
        return (ones, zf)

    def relevance(self, state, R):
        ones, zf = state
        (g,) = _grad(zf, ones, R / stabilise(zf.detach(), self.epsilon))
        return g


class Flat(_ConstantInputRule):
    """Flat (first layer): all weights and inputs set to one; relevance spreads evenly over the receptive field."""

    def _weight(self, w):
        return torch.ones_like(w)


class WSquare(_ConstantInputRule):
    """w-square (first layer): weights squared, inputs set to one."""

    def _weight(self, w):
        return w * w


@dataclass(frozen=True)
class Residual:
    """y = a + b: R_a = a / (y + eps sign y) R, R_b = b / (y + eps sign y) R."""

    epsilon: float = 1e-9
