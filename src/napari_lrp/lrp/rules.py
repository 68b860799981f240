"""LRP rules (DESIGN section 4) as small objects.

A rule turns the relevance R at a module's output into relevance at its input. It is prepared in the
forward pass (:meth:`Rule.prepare`, which may build modified forward graphs and keeps what the
backward needs) and applied in the backward pass (:meth:`Rule.relevance`), so the relevance can be
propagated many times from one forward pass. Denominators are stabilised z + eps * sign(z) with
sign(0) := 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rule", "Epsilon", "LRP0", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "Flat", "WSquare",
           "PassThrough", "WinnerTakesAll", "LINEAR_TYPES", "NORM_TYPES"]

LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d)
NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z), with sign(0) := 1 (a new tensor)."""
    return torch.where(z >= 0, eps, -eps).to(z.dtype).add_(z)


def divide_stabilised(R: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """R / (z + eps * sign z) with one temporary."""
    d = stabilise(z, eps)
    return torch.div(R, d, out=d)


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


_CONV_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def linear_vjp(module: nn.Module, x_shape, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J^T v for the module's linear map with ``weight`` (bias-free), without an autograd graph:
    one transposed convolution (or matrix product), like the input gradient of the layer."""
    if isinstance(module, nn.Linear):
        return v @ weight
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return _CONV[len(module.kernel_size)](v, weight, None, module.stride, module.padding, module.dilation,
                                              module.groups)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros" and \
            not isinstance(module.padding, str):
        return _CONV_INPUT_GRAD[len(module.kernel_size)](list(x_shape), weight, v, module.stride, module.padding,
                                                         module.dilation, module.groups)
    with torch.enable_grad():  # any other linear layer: the vjp of a fresh graph
        xx = torch.zeros(x_shape, dtype=v.dtype, device=v.device, requires_grad=True)
        (g,) = torch.autograd.grad(linear_forward(module, xx, weight, None), xx, v)
    return g


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
        if isinstance(module, LINEAR_TYPES):
            return ("linear", module, ctx.get("weight", module.weight).detach(), x.detach(), z.detach())
        return ("graph", x, z)

    def relevance(self, state, R):
        kind = state[0]
        if kind == "norm":
            _, x, z, scale = state
            return divide_stabilised(R, z, self.epsilon).mul_(x).mul_(scale)
        if kind == "linear":
            _, module, w, x, z = state
            s = divide_stabilised(R, z, self.epsilon)
            return linear_vjp(module, x.shape, w, s).mul_(x)
        _, x, z = state
        s = divide_stabilised(R, z.detach(), self.epsilon)
        (g,) = _grad(z, x, s)
        if g is None:
            return torch.zeros_like(x)
        return g.mul_(x.detach())


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


def _bounds_like(value, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim == 1 and x.ndim >= 2 and t.numel() == x.shape[1]:
        t = t.view(1, -1, *([1] * (x.ndim - 2)))
    return t.expand_as(x)


class _WeightRule(Rule):
    needs_weights = True

    @staticmethod
    def _params(module, ctx=None):
        """Weight and bias, or the folded ones in ctx (a BatchNorm folded into this layer)."""
        ctx = ctx or {}
        w = ctx.get("weight", module.weight).detach()
        b = ctx.get("bias", getattr(module, "bias", None))
        return w, (b.detach() if b is not None else None)


class Gamma(_WeightRule):
    """Contributions a_j w_jk + gamma (a_j w_jk)+, bias b + gamma b+, epsilon-stabilised.

    For outputs z_k < 0 the negative contributions are amplified instead (the generalised gamma rule of
    Andeol et al. 2021, as zennit implements it); for z_k > 0, and so for every relevant neuron of a
    ReLU network, this is exactly the formula of DESIGN section 4.
    Cost: one extra forward convolution (two for inputs of both signs), two transposed convolutions
    in the backward pass (three for inputs of both signs); with P = sum of positive contributions,
    z_pos = z + gamma (P + b+) and z_neg = z + gamma (z - b - P + b-) = (2 + gamma) z - z_pos.
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6):
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        w, b = self._params(module, ctx)
        g = self.gamma
        xd, z = x.detach(), z.detach()
        nonneg = bool((xd >= 0).all())
        with torch.no_grad():
            wp = w.clamp(min=0)
            if nonneg:
                P = linear_forward(module, xd, wp, None)
            else:
                P = linear_forward(module, xd.clamp(min=0), wp, None)
                P += linear_forward(module, xd.clamp(max=0), w.clamp(max=0), None)
            zpos = P.mul_(g).add_(z)
            if b is not None:
                zpos += g * _bias_like(b.clamp(min=0), z)
        # z_neg = (2 + g) z - z_pos (b = b+ + b-), computed when needed: two tensors kept, not three
        return (module, w, xd, nonneg, zpos, z)

    def relevance(self, state, R):
        module, w, x, nonneg, zpos, z = state
        g = self.gamma
        wp = w.clamp(min=0)
        sp = divide_stabilised(R * (z > 0), zpos, self.epsilon)
        Rn = R * (z < 0)
        if nonneg and not bool(Rn.any()):
            # no relevance on negative outputs (ReLU networks): one transposed convolution with w + g w+
            return linear_vjp(module, x.shape, w + g * wp, sp).mul_(x)
        zneg = z * (2 + g) - zpos
        sn = divide_stabilised(Rn, zneg, self.epsilon)
        B = linear_vjp(module, x.shape, wp, sp - sn)
        if nonneg:  # x (A(s+) + (1 + g) A(s-)) + g x B
            As = linear_vjp(module, x.shape, w, sp.add_(sn, alpha=1 + g))
            return As.add_(B, alpha=g).mul_(x)
        Ap = linear_vjp(module, x.shape, w, sp)
        An = linear_vjp(module, x.shape, w, sn)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        # x A(s+ + s-) + g x+ (B + A s-) + g x- (A s+ - B)
        out = (Ap + An).mul_(x)
        out += g * xp * (B + An)
        out += g * xn * (Ap - B)
        return out


def _bias_like(b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return b.view(1, -1, *([1] * (z.ndim - 2))) if z.ndim > 2 else b


class AlphaBeta(_WeightRule):
    """R_j = sum_k (alpha (a_j w_jk)+ / sum_j (a_j w_jk)+ - beta (a_j w_jk)- / sum_j (a_j w_jk)-) R_k.

    alpha - beta = 1; biases are ignored (DESIGN section 4); denominators stabilised by ``epsilon``.
    Transposed convolutions run without autograd graphs; x+ and x- are recomputed in the backward pass.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        w, _b = self._params(module, ctx)
        xd = x.detach()
        nonneg = bool((xd >= 0).all())
        with torch.no_grad():
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            xp = xd if nonneg else xd.clamp(min=0)
            zpos = linear_forward(module, xp, wp, None)
            zneg = linear_forward(module, xp, wn, None) if self.beta != 0 else None
            if not nonneg:
                xn = xd.clamp(max=0)
                zpos += linear_forward(module, xn, wn, None)
                if zneg is not None:
                    zneg += linear_forward(module, xn, wp, None)
        return (module, w, xd, nonneg, zpos, zneg)

    def relevance(self, state, R):
        module, w, x, nonneg, zpos, zneg = state
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        xp = x if nonneg else x.clamp(min=0)
        s = divide_stabilised(R, zpos, self.epsilon)
        out = linear_vjp(module, x.shape, wp, s).mul_(xp)
        if not nonneg:
            out += linear_vjp(module, x.shape, wn, s).mul_(x.clamp(max=0))
        if self.alpha != 1.0:
            out.mul_(self.alpha)
        if zneg is not None:
            s = divide_stabilised(R, zneg, self.epsilon)
            neg = linear_vjp(module, x.shape, wn, s).mul_(xp)
            if not nonneg:
                neg += linear_vjp(module, x.shape, wp, s).mul_(x.clamp(max=0))
            out.sub_(neg, alpha=self.beta)
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
        w, _b = self._params(module, ctx)
        xd = x.detach()
        low, high = self.low, self.high
        if low is None or high is None:
            dims = [0] + list(range(2, xd.ndim))
            low = xd.amin(dim=dims) if low is None else low
            high = xd.amax(dim=dims) if high is None else high
        lo, hi = _bounds_like(low, xd), _bounds_like(high, xd)
        with torch.no_grad():
            zb = (linear_forward(module, xd, w, None) - linear_forward(module, lo, w.clamp(min=0), None)
                  - linear_forward(module, hi, w.clamp(max=0), None))
        return (module, w, xd, lo, hi, zb)

    def relevance(self, state, R):
        module, w, x, lo, hi, zb = state
        s = divide_stabilised(R, zb, self.epsilon)
        out = linear_vjp(module, x.shape, w, s).mul_(x)
        out -= linear_vjp(module, x.shape, w.clamp(min=0), s).mul_(lo)
        out -= linear_vjp(module, x.shape, w.clamp(max=0), s).mul_(hi)
        return out

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
        w, _b = self._params(module, ctx)
        with torch.no_grad():
            zf = linear_forward(module, torch.ones_like(x.detach()), self._weight(w), None)
        return (module, w, tuple(x.shape), zf)

    def relevance(self, state, R):
        module, w, shape, zf = state
        return linear_vjp(module, shape, self._weight(w), divide_stabilised(R, zf, self.epsilon))


class Flat(_ConstantInputRule):
    """Flat (first layer): all weights and inputs set to one; relevance spreads evenly over the receptive field."""

    def _weight(self, w):
        return torch.ones_like(w)


class WSquare(_ConstantInputRule):
    """w-square (first layer): weights squared, inputs set to one."""

    def _weight(self, w):
        return w * w
