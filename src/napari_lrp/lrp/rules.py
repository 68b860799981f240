"""LRP rules as small objects.

A rule turns the relevance R at a module's output into relevance at its input. It is prepared in the
forward pass (:meth:`Rule.prepare`, which may build modified forward graphs and keeps what the
backward needs) and applied in the backward pass (:meth:`Rule.relevance`), so the relevance can be
propagated many times from one forward pass. Denominators are stabilised z + eps * sign(z) with
sign(0) := 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .types import LINEAR_TYPES, NORM_TYPES

__all__ = ["Rule", "Epsilon", "LRP0", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "Flat", "WSquare",
           "PassThrough", "Routing", "WinnerTakesAll", "Softmax", "stabilise"]



def stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps sign(z), with sign(0) := 1 (a new tensor).

    eps = 0 (LRP-0) touches only exact zeros, which become the dtype's smallest normal number, so every
    other z is left exact.

    Parameters
    ----------
    z : torch.Tensor
        The denominators.
    eps : float
        The stabiliser.

    Returns
    -------
    torch.Tensor
    """
    d = z + 0.0
    if eps == 0:
        return d.masked_fill_(d == 0, torch.finfo(d.dtype).tiny)
    torch.copysign(torch.tensor(eps, dtype=z.dtype, device=z.device), d, out=d)
    return d.add_(z)


def divide_stabilised(R: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """R / (z + eps sign z) with one temporary.

    Parameters
    ----------
    R : torch.Tensor
        The numerators.
    z : torch.Tensor
        The denominators, like R.
    eps : float
        The stabiliser (see :func:`stabilise`).

    Returns
    -------
    torch.Tensor
    """
    d = stabilise(z, eps)
    return torch.div(R, d, out=d)


def linear_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The module's linear map with other parameters (Conv / ConvTranspose of any dimension, Linear).

    Parameters
    ----------
    module : torch.nn.Module
        The layer (its hyper-parameters: stride, padding, groups).
    x : torch.Tensor
        The input.
    weight : torch.Tensor
        The weights used instead of the layer's.
    bias : torch.Tensor or None
        The bias used instead.

    Returns
    -------
    torch.Tensor
    """
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: kernels.conv_transpose3d}[len(module.kernel_size)]
        return fn(x, weight, bias, module.stride, module.padding, module.output_padding, module.groups,
                  module.dilation)
    if isinstance(module, nn.Conv3d) and module.padding_mode == "zeros":
        return kernels.conv3d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(x, weight, bias)
    raise TypeError(f"{type(module).__name__} is not a linear layer (Conv, ConvTranspose or Linear)")


_CONV_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: kernels.conv3d_input}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: kernels.conv3d}


def linear_vjp(module: nn.Module, x_shape, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J^T v for the module's linear map with ``weight`` (bias-free), without an autograd graph.

    One transposed convolution (or matrix product), like the input gradient of the layer.

    Parameters
    ----------
    module : torch.nn.Module
        The layer.
    x_shape : tuple of int
        Its input's shape.
    weight : torch.Tensor
        The weights.
    v : torch.Tensor
        Shaped like the layer's output.

    Returns
    -------
    torch.Tensor
        Shaped ``x_shape``.
    """
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
        """At forward time: what the backward step of this rule will need (the state).

        Parameters
        ----------
        module : torch.nn.Module or None
            The layer (None for a functional operation).
        x : torch.Tensor
            Its input.
        z : torch.Tensor
            Its output.
        ctx : dict
            What the engine knows of the call (folded parameters, a functional operation's arguments).

        Returns
        -------
        object
            The state :meth:`relevance` receives.
        """
        return (x, z)

    def relevance(self, state, R: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """At backward time: the relevance at the layer's input from the relevance at its output.

        Parameters
        ----------
        state : object
            What :meth:`prepare` returned.
        R : torch.Tensor
            Relevance at the output, shaped like z.

        Returns
        -------
        torch.Tensor
            Relevance at the input, shaped like x.
        """
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
    average pooling, interpolation. For Instance/GroupNorm the statistics of this input are held
    constant (a per-channel affine map). For LayerNorm (tokens) the AttnLRP rule (Achtibat et al. 2024,
    as lxt): the centring x - mean(x) is a linear map and only the standard deviation is held constant,
    R = x (v - mean(v)) with v = gamma / std * R / z over the normalised axes."""

    needs_own_graph = True

    def __init__(self, epsilon: float = 1e-9):
        self.epsilon = float(epsilon)

    def prepare(self, module, x, z, ctx):
        if isinstance(module, nn.LayerNorm) or "layer_norm" in ctx:
            shape, weight, eps = ctx["layer_norm"] if "layer_norm" in ctx else (
                module.normalized_shape, module.weight, module.eps)
            xd = x.detach()
            dims = tuple(range(xd.ndim - len(shape), xd.ndim))
            scale = torch.rsqrt(xd.var(dim=dims, unbiased=False, keepdim=True) + eps)
            if weight is not None:
                scale = scale * weight.detach()
            return ("layernorm", xd, z.detach(), scale, dims)
        if isinstance(module, NORM_TYPES):
            return ("norm", x.detach(), z.detach(), _norm_scale(module, x.detach()))
        if isinstance(module, LINEAR_TYPES):
            return ("linear", module, ctx.get("weight", module.weight).detach(), x.detach(), z.detach())
        return ("graph", x, z)

    def relevance(self, state, R):
        kind = state[0]
        if kind == "layernorm":
            _, x, z, scale, dims = state
            v = divide_stabilised(R, z, self.epsilon).mul_(scale)
            return v.sub_(v.mean(dim=dims, keepdim=True)).mul_(x)
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
    """LRP-0: R_j = sum_k a_j w_jk / z_k R_k. Only exact zeros z_k = 0 are stabilised (to sign(0) * tiny,
    the dtype's smallest normal number), so on bias-free piecewise-linear networks LRP-0 equals
    gradient x input to round-off."""

    def __init__(self):
        super().__init__(0.0)


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
    raise TypeError(f"no norm scale for {type(module).__name__}")


class PassThrough(Rule):
    """Relevance passes unchanged (activations, dropout in eval, norms in the paper preset)."""

    def prepare(self, module, x, z, ctx):
        if x.shape != z.shape:
            raise ValueError(f"PassThrough needs equal input and output shapes, got {tuple(x.shape)} -> "
                             f"{tuple(z.shape)}")
        return None

    def relevance(self, state, R):
        return R


class Routing(Rule):
    """Operations that only move values (padding, cropping): relevance follows the indices (the operation's
    own backward). Relevance that lands on values the forward added (padding) is absorbed and booked."""

    needs_own_graph = True

    def relevance(self, state, R):
        x, z = state
        (g,) = _grad(z, x, R)
        return torch.zeros_like(x) if g is None else g


class Softmax(Rule):
    """Softmax attention (AttnLRP, Achtibat et al. 2024, Proposition 3.1; lxt's rule): a Taylor decomposition
    at the input x with the bias absorbed, R_in = x (R - s sum_dim R), s the softmax output along ``dim``.
    Not conservative: what the linearisation's bias takes is booked in the ledger as absorbed. Masked
    scores (-inf) get no relevance."""

    def __init__(self, dim: int = -1):
        self.dim = dim

    def prepare(self, module, x, z, ctx):
        dim = ctx.get("dim", getattr(module, "dim", None))
        dim = self.dim if dim is None else dim
        xd = x.detach()
        return (torch.where(torch.isneginf(xd), torch.zeros((), dtype=xd.dtype, device=xd.device), xd),
                z.detach(), dim)

    def relevance(self, state, R):
        x, s, dim = state
        return (R - s * R.sum(dim=dim, keepdim=True)).mul_(x)


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


#: contributions per output below which P and N are summed explicitly (see _positive_part)
IDENTITY_MIN_FAN_IN = 64


def _fan_in(module: nn.Module, w: torch.Tensor) -> float:
    """Contributions per output of a linear layer: in-channels per group times kernel volume (divided
    by the stride volume for a transposed convolution)."""
    if isinstance(module, nn.Linear):
        return float(w.shape[1])
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return w.shape[0] / module.groups * math.prod(w.shape[2:]) / math.prod(module.stride)
    return float(w.shape[1] * math.prod(w.shape[2:]))


def _nonnegative(x: torch.Tensor) -> bool:
    return x.numel() == 0 or bool(x.min() >= 0)


def _positive_part(module, w, b, x, z, nonneg, negative=True, xabs=None):
    """P = sum_j (a_j w_jk)+ and N = sum_j (a_j w_jk)- (bias-free), from the forward output z.

    With inputs of both signs P = (z - b + C) / 2 and N = (z - b - C) / 2 with C = sum_j |a_j| |w_jk|:
    one convolution instead of two (x+ w+ and x- w-), exact up to rounding of order eps * C (P is
    clamped at 0 and N at 0 so that rounding never flips a sign). That rounding matters where an output
    has few contributions (a 2x2x2 stride-2 transposed convolution from 8 channels: P off by up to 8e-4
    relative in float32; 32 channels 6e-6, 64 channels 1e-6), so layers with fewer than
    ``IDENTITY_MIN_FAN_IN`` contributions per output take the two exact convolutions.
    Non-negative inputs: P = x w+ exactly. Returns (P, N); N is None unless ``negative``.
    """
    with torch.no_grad():
        if not nonneg and _fan_in(module, w) < IDENTITY_MIN_FAN_IN:
            xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
            P = linear_forward(module, xp, wp, None).add_(linear_forward(module, xn, wn, None))
            N = linear_forward(module, xp, wn, None).add_(linear_forward(module, xn, wp, None)) if negative else None
            return P, N
        if nonneg:
            P = linear_forward(module, x, w.clamp(min=0), None)
            if not negative:
                return P, None
            N = torch.sub(z, P)
            return P, (N if b is None else N.sub_(_bias_like(b, z, module)))
        C = linear_forward(module, x.abs() if xabs is None else xabs, w.abs(), None)
        N = None
        if negative:
            N = torch.sub(z, C)
            if b is not None:
                N.sub_(_bias_like(b, z, module))
            N.mul_(0.5).clamp_(max=0)
        P = C.add_(z)
        if b is not None:
            P.sub_(_bias_like(b, z, module))
        return P.mul_(0.5).clamp_(min=0), N


class SignedState:
    """What a sign-splitting rule keeps from the forward pass (x, z, weights); the modified forward
    quantities are computed at the first propagation and cached, unless the engine marks the state
    as used once (``keep = False``, a one-shot run), when they are temporaries the rule may overwrite."""

    __slots__ = ("module", "w", "b", "x", "z", "cache", "keep")

    def __init__(self, module, w, b, x, z):
        self.module, self.w, self.b, self.x, self.z = module, w, b, x, z
        self.cache = None
        self.keep = True


class _SignedRule(_WeightRule):
    """A rule that splits contributions by sign: its state keeps the weights, the input and the output."""

    def prepare(self, module, x, z, ctx):
        w, b = self._params(module, ctx)
        return SignedState(module, w, b, x.detach(), z.detach())


class Gamma(_SignedRule):
    """Contributions a_j w_jk + gamma (a_j w_jk)+, bias b + gamma b+, epsilon-stabilised.

    For outputs z_k < 0 the negative contributions are amplified instead (the generalised gamma rule of
    Andeol et al. 2021, as zennit implements it); for z_k > 0, and so for every relevant neuron of a
    ReLU network, this is exactly the textbook gamma rule.
    With P, N the sums of positive and negative contributions: z_pos = z + gamma (P + b+),
    z_neg = z + gamma (N + b-); s+ = R [z > 0] / z_pos, s- = R [z < 0] / z_neg, and
    R_in = (1 + gamma/2) x A(s+ + s-) + gamma/2 |x| |A|(s+ - s-), A the transposed layer, |A| with |w|.
    Cost: one extra forward convolution and two transposed ones (one when the input is non-negative
    and no relevance sits on negative outputs, as in ReLU networks).
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6):
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)


    def _denominators(self, st: SignedState):
        """(non-negative input?, d, |x| or None) with d = z_pos where z > 0, z_neg where z < 0, stabilised
        by eps sign(z), and inf where z = 0 (no relevance); sign(d) = sign(z). d is cached, |x| is not.

        With Q = P + b+: z_pos = z + g Q and z_neg = z + g (N + b-) = z + g (z - Q), so
        d = z + g sign(z) Q + g min(z, 0) + eps sign(z).
        """
        if st.cache is None:
            g, z, b = self.gamma, st.z, st.b
            nonneg = _nonnegative(st.x)
            xabs = None if nonneg else st.x.abs()
            Q, _ = _positive_part(st.module, st.w, b, st.x, z, nonneg, negative=False, xabs=xabs)
            if b is not None:
                Q.add_(_bias_like(b.clamp(min=0), z, st.module))
            sign = torch.sign(z)
            d = Q.mul_(sign).mul_(g).add_(z).add_(z.clamp(max=0), alpha=g).add_(sign, alpha=self.epsilon)
            d.masked_fill_(z == 0, float("inf"))
            if st.keep:
                st.cache = (nonneg, d)
            return nonneg, d, xabs
        nonneg, d = st.cache
        return nonneg, d, None

    def relevance(self, state, R):
        st = state
        module, w, x, z = st.module, st.w, st.x, st.z
        nonneg, d, xabs = self._denominators(st)
        g = self.gamma
        if nonneg and not bool(((z < 0) & (R != 0)).any()):
            # no relevance on negative outputs (ReLU networks): one transposed convolution with w + g w+
            s = torch.div(R, d, out=None if st.keep else d)
            return linear_vjp(module, x.shape, w + g * w.clamp(min=0), s).mul_(x)
        # R_in = (1 + g/2) x A(s+ + s-) + g/2 |x| |A|(s+ - s-), with s+ - s- = R / |d|; the |x| term first,
        # so that at most two input-sized tensors are alive at a time
        D = linear_vjp(module, x.shape, w.abs() * (g / 2), torch.div(R, d.abs()))
        D.mul_(x if nonneg else (x.abs() if xabs is None else xabs))
        del xabs
        s = torch.div(R, d, out=None if st.keep else d)
        out = linear_vjp(module, x.shape, w * (1 + g / 2), s).mul_(x)
        return out.add_(D)


def _bias_like(b: torch.Tensor, z: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The bias shaped to add to the layer's output z: along the last axis for Linear (also on token
    sequences (batch, tokens, features)), along the channel axis 1 for convolutions."""
    if isinstance(module, nn.Linear) or z.ndim <= 2:
        return b
    return b.view(1, -1, *([1] * (z.ndim - 2)))


class AlphaBeta(_SignedRule):
    """R_j = sum_k (alpha (a_j w_jk)+ / sum_j (a_j w_jk)+ - beta (a_j w_jk)- / sum_j (a_j w_jk)-) R_k.

    alpha - beta = 1; biases are ignored; denominators stabilised by ``epsilon``.
    Cost: one extra forward convolution (the sums of positive and negative contributions both follow
    from z and sum |a_j| |w_jk|), and per sign part one transposed convolution with w+ and, for inputs
    of both signs, one with w-; transposed convolutions run without autograd graphs.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {alpha}, {beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.epsilon = float(epsilon)


    def _denominators(self, st: SignedState):
        if st.cache is None:
            nonneg = _nonnegative(st.x)
            P, N = _positive_part(st.module, st.w, st.b, st.x, st.z, nonneg, negative=self.beta != 0)
            # P >= 0, so its stabilised form is P + eps (sign(0) := 1); kept stabilised
            cache = (nonneg, P.add_(self.epsilon), N)
            if st.keep:
                st.cache = cache
            return cache
        return st.cache

    def relevance(self, state, R):
        module, w, x = state.module, state.w, state.x
        nonneg, zpos, zneg = self._denominators(state)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        out = self._part(module, x, nonneg, wp, wn, torch.div(R, zpos, out=None if state.keep else zpos))
        if self.alpha != 1.0:
            out.mul_(self.alpha)
        if zneg is not None:
            neg = self._part(module, x, nonneg, wn, wp, divide_stabilised(R, zneg, self.epsilon))
            out.sub_(neg, alpha=self.beta)
        return out

    @staticmethod
    def _part(module, x, nonneg, w_for_pos, w_for_neg, s):
        """x+ A_{w_for_pos}(s) + x- A_{w_for_neg}(s) = x * where(x >= 0, A_pos s, A_neg s)."""
        a = linear_vjp(module, x.shape, w_for_pos, s)
        if nonneg:
            return a.mul_(x)
        b = linear_vjp(module, x.shape, w_for_neg, s)
        return torch.where(x >= 0, a, b, out=a).mul_(x)

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
        w, b = self._params(module, ctx)
        xd = x.detach()
        low, high = self.low, self.high
        if low is None or high is None:
            dims = [0] + list(range(2, xd.ndim))
            low = xd.amin(dim=dims) if low is None else low
            high = xd.amax(dim=dims) if high is None else high
        lo, hi = _bounds_like(low, xd), _bounds_like(high, xd)
        with torch.no_grad():  # x w from the layer's output z (bias removed): two convolutions, not three
            zb = z.detach() - _bias_like(b, z, module) if b is not None else z.detach().clone()
            zb -= linear_forward(module, lo, w.clamp(min=0), None)
            zb -= linear_forward(module, hi, w.clamp(max=0), None)
        return (module, w, xd, lo, hi, zb)

    def relevance(self, state, R):
        # x A(s) - l A+(s) - h A-(s) = (x - l) A+(s) + (x - h) A-(s): two transposed convolutions
        module, w, x, lo, hi, zb = state
        s = divide_stabilised(R, zb, self.epsilon)
        out = linear_vjp(module, x.shape, w.clamp(min=0), s).mul_(x - lo)
        return out.add_(linear_vjp(module, x.shape, w.clamp(max=0), s).mul_(x - hi))

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
