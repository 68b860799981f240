"""The relevance engine: forward once, propagate relevance many times.

Mechanism (DESIGN section 4): the relevance itself is what autograd carries backwards. In the one
forward pass every module with a rule returns its output through an identity autograd Function whose
backward turns the relevance at the module's output into the relevance at its input with the rule.
Functional operations inside ``forward`` methods (residual ``+``, ``F.interpolate``, ``F.relu``,
functional pooling) are caught by a ``TorchFunctionMode`` and wrapped the same way; ``torch.cat``,
slicing, padding and reshaping need nothing because autograd routes relevance by index and sums it
at forks. Every module's inputs also pass an identity "tap" whose backward applies the filter attached
to that module (read at backward time) and whose output-side twin records kept relevance, so a new
filter setting or a new start relevance costs one backward pass and no forward pass.

Every propagation returns a ledger: per rule application the relevance received and handed on, per
filter the relevance before and after; what is missing was absorbed (biases, stabilisers, filters).
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import kernels
from .filters import Filter, Identity
from .rules import (
    LINEAR_TYPES,
    NORM_TYPES,
    Epsilon,
    Flat,
    Gamma,
    PassThrough,
    Rule,
    WinnerTakesAll,
    ZBox,
    ZPlus,
    stabilise,
)

__all__ = ["Propagation", "PropagationResult", "Ledger", "propagate", "PRESETS", "block_names",
           "every_block", "Cancelled"]

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Hardswish, nn.Hardsigmoid,
                    nn.Softmax, nn.LogSoftmax)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d)
AVGPOOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d, nn.Upsample)

DEFAULT_EPSILON = 1e-9


@contextlib.contextmanager
def _full_precision(device: torch.device):
    """Convolutions and matmuls in full float32 on CUDA (no TF32) while relevance is computed; restored after."""
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


class Cancelled(RuntimeError):
    """Raised (through the progress callback) when the user cancels a propagation."""


def default_rule(module: nn.Module) -> Rule | None:
    """The handling of DESIGN section 6 for modules a rules mapping does not name."""
    if isinstance(module, LINEAR_TYPES + BATCHNORM_TYPES + NORM_TYPES + AVGPOOL_TYPES):
        return Epsilon(DEFAULT_EPSILON)
    if isinstance(module, ACTIVATION_TYPES + DROPOUT_TYPES):
        return PassThrough()
    if isinstance(module, MAXPOOL_TYPES):
        return WinnerTakesAll()
    return None


@dataclass
class Preset:
    """A named rule set: ``types`` maps module types to rules; ``first`` is the first linear layer's rule."""

    name: str
    types: list[tuple[tuple[type, ...], Rule]]
    first: Rule | None = None


def _preset(name: str, bounds=None) -> Preset:
    low, high = (None, None) if bounds is None else bounds
    convs = tuple(t for t in LINEAR_TYPES if t is not nn.Linear)
    if name == "lrp0":
        return Preset(name, [])
    if name == "paper":
        return Preset(name, [(convs + (nn.Linear,), ZPlus(1e-9)), (BATCHNORM_TYPES + NORM_TYPES, PassThrough())],
                      ZBox(low, high, 1e-9))
    if name == "epsilon-gamma-box":
        return Preset(name, [(convs, Gamma(0.25, 1e-6)), ((nn.Linear,), Epsilon(1e-6))], ZBox(low, high, 1e-6))
    if name == "epsilon-plus-flat":
        return Preset(name, [(convs, ZPlus(1e-6)), ((nn.Linear,), Epsilon(1e-6))], Flat(1e-6))
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


PRESETS = ("paper", "epsilon-gamma-box", "epsilon-plus-flat", "lrp0")

RulesArg = str | Mapping | None


def _resolve_rule(name: str, module: nn.Module, rules: Mapping, preset: Preset, first: bool) -> Rule | None:
    if name in rules and isinstance(rules[name], (Rule, type(None))):
        return rules[name]
    for key, rule in rules.items():
        if isinstance(key, str) and key != name and any(c in key for c in "*?[") and fnmatch.fnmatchcase(name, key):
            if rule is not None and rule.needs_weights and not isinstance(module, LINEAR_TYPES):
                continue
            return rule
    for key, rule in rules.items():
        if isinstance(key, type) and isinstance(module, key):
            return rule
    if first and preset.first is not None:
        return preset.first
    for types, rule in preset.types:
        if isinstance(module, types):
            return rule
    return default_rule(module)


# --------------------------------------------------------------------------------------------
# Ledger


@dataclass
class LedgerEntry:
    name: str
    kind: str  # 'rule', 'filter', 'residual', 'functional'
    op: str
    received: float
    handed: float

    @property
    def absorbed(self) -> float:
        return self.received - self.handed


@dataclass
class Ledger:
    """Where relevance went in one propagation (per-layer sums in the model dtype, start and end in float64).

    ``start``: total relevance at the output (before the output filter); ``end``: total at the input
    (after the input filter); ``entries``: one per rule application and per filter, in backward order.
    ``balance_error`` = (start - end - sum of absorbed) / max(|start|, tiny) is zero up to rounding when
    nothing leaks unaccounted; ``conservation_error`` = (start - end) / |start| is plain conservation.
    """

    start: float = 0.0
    end: float = 0.0
    entries: list[LedgerEntry] = field(default_factory=list)

    @property
    def absorbed(self) -> float:
        return float(sum(e.absorbed for e in self.entries))

    @property
    def balance_error(self) -> float:
        scale = max(abs(self.start), sum(abs(e.absorbed) for e in self.entries), 1e-30)
        return (self.start - self.end - self.absorbed) / scale

    @property
    def conservation_error(self) -> float:
        return (self.start - self.end) / max(abs(self.start), 1e-30)

    def table(self):
        """The entries as a pandas DataFrame (name, kind, op, received, handed, absorbed)."""
        import pandas as pd

        return pd.DataFrame(
            [{"name": e.name, "kind": e.kind, "op": e.op, "received": e.received, "handed": e.handed,
              "absorbed": e.absorbed} for e in self.entries]
        )


# --------------------------------------------------------------------------------------------
# autograd Functions


class _RuleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, zd, engine, entry):
        ctx.engine = engine
        ctx.entry = entry
        return zd.view_as(zd)

    @staticmethod
    def backward(ctx, R):
        return ctx.engine._apply_rule(ctx.entry, R), None, None, None


class _ResidualFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, yd, engine, entry):
        ctx.engine = engine
        ctx.entry = entry
        return yd.view_as(yd)

    @staticmethod
    def backward(ctx, R):
        Ra, Rb = ctx.engine._apply_residual(ctx.entry, R)
        return Ra, Rb, None, None, None


class _TapFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, engine, name, side):
        ctx.engine = engine
        ctx.name = name
        ctx.side = side
        return x.view_as(x)

    @staticmethod
    def backward(ctx, R):
        return ctx.engine._tap(ctx.name, ctx.side, R), None, None, None


@dataclass
class _Entry:
    name: str
    module: nn.Module | None
    rule: Rule
    x: torch.Tensor | None = None
    z: torch.Tensor | None = None
    state: object = None
    # residual entries
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    a_in: bool = False
    b_in: bool = False


def _in_graph(t) -> bool:
    return isinstance(t, torch.Tensor) and t.grad_fn is not None


_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
        torch.Tensor.add_}
_SUB = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__isub__, torch.Tensor.sub_}
_PASS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.leaky_relu,
         F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.prelu, F.relu6, F.hardtanh,
         F.softplus, torch.sigmoid, torch.Tensor.sigmoid, torch.tanh, torch.Tensor.tanh, F.dropout,
         F.dropout1d, F.dropout2d, F.dropout3d, F.hardswish, F.hardsigmoid, torch.nn.functional.sigmoid,
         torch.nn.functional.tanh}
_EPS = {F.interpolate, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d, F.upsample}
_WTA = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
        F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d}


class _FunctionalRules(TorchFunctionMode):
    def __init__(self, engine: Propagation):
        super().__init__()
        self.engine = engine

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        eng = self.engine
        if func is torch.conv3d or func is torch.conv_transpose3d:  # oneDNN kernels (see kernels.py)
            return kernels.run_on_kernels(func, args, kwargs)
        if eng._suspended or eng._in_rule_leaf:
            return func(*args, **kwargs)
        if (func in _ADD or func in _SUB) and len(args) >= 2:
            a, b = args[0], args[1]
            alpha = kwargs.get("alpha", 1)
            if _in_graph(a) or _in_graph(b):
                sign = -1.0 if func in _SUB else 1.0
                return eng._residual(a, b, alpha * sign)
            return func(*args, **kwargs)
        if func in _PASS:
            kwargs.pop("inplace", None)
            if func in (F.relu_, torch.relu_, torch.Tensor.relu_, F.leaky_relu_, F.elu_):
                func = {F.relu_: F.relu, torch.relu_: F.relu, torch.Tensor.relu_: F.relu,
                        F.leaky_relu_: F.leaky_relu, F.elu_: F.elu}[func]
            if func is F.prelu or func in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
                out = func(*args, **kwargs)
            else:
                try:
                    out = func(*args, inplace=False, **kwargs)
                except TypeError:
                    out = func(*args, **kwargs)
            x = args[0]
            if _in_graph(x) and isinstance(out, torch.Tensor) and out.shape == x.shape:
                return eng._wrap_functional(PassThrough(), func, x, out)
            return out
        if func in _EPS or func in _WTA:
            out = func(*args, **kwargs)
            x = args[0] if args else kwargs.get("input")
            if _in_graph(x) and isinstance(out, torch.Tensor):
                rule = Epsilon(DEFAULT_EPSILON) if func in _EPS else WinnerTakesAll()
                return eng._wrap_functional(rule, func, x, out)
            return out
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# The propagation object


@dataclass
class PropagationResult:
    """relevance: tensor shaped like the input x; kept: {module name: relevance at its output};
    ledger: :class:`Ledger`."""

    relevance: torch.Tensor
    kept: dict[str, torch.Tensor]
    ledger: Ledger
    #: the relevance at the input before the 'input' filter (the same tensor when there is none)
    unfiltered: torch.Tensor | None = None


def _foldable(entry: _Entry, bn: nn.Module) -> bool:
    m = entry.module
    if bn.running_mean is None or bn.running_var is None or entry.z is None:
        return False
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and m.groups != 1:
        return False
    return entry.z.ndim >= 2 and entry.z.shape[1] == bn.running_mean.numel()


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


class Propagation:
    """One forward pass of ``module`` on ``x`` with the rules attached; :meth:`propagate` as often as needed.

    module: an eval-mode torch module (its training flags are restored afterwards; no hooks are left);
    x: input tensor (N, C, *spatial); rules: a preset name or a mapping {module name | glob | type: Rule}
    laid over the preset/defaults; bounds: (low, high) input bounds for z-box (scalar or per channel;
    None: the input's per-channel min and max).
    """

    def __init__(self, module: nn.Module, x: torch.Tensor, rules: RulesArg = "lrp0", bounds=None,
                 preset: str | None = None):
        self.module = module
        if isinstance(rules, str):
            preset, rules = rules, {}
        self.preset = _preset(preset or "lrp0", bounds)
        self.rules: dict = dict(rules or {})
        self._names = {id(m): n for n, m in module.named_modules()}
        self._lock = threading.Lock()
        self._suspended = False
        self._in_rule_leaf = 0
        self._first_done = False
        self._rule_cache: dict[str, Rule | None] = {}
        self._entries: list[_Entry] = []
        self._functional_count = 0
        self._calls: dict[str, int] = {}
        # linear layers whose rule is prepared once we know whether a BatchNorm follows (to fold it)
        self._pending: dict[int, tuple[torch.Tensor, _Entry]] = {}
        self._fold: dict[str, _Entry] = {}
        #: output shape of every module (first call), for layer tables
        self.shapes: dict[str, tuple] = {}
        #: (layer, BatchNorm) pairs folded together
        self.folded: list[tuple[str, str]] = []
        # propagation-time state
        self._filters: dict = {}
        self._keep: set[str] = set()
        self._kept: dict[str, torch.Tensor] = {}
        self._ledger: Ledger | None = None
        self._progress: Callable[[int, int], None] | None = None
        self._done = 0
        self._retain = True
        self._forward(x)

    # ---- forward ---------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> None:
        module = self.module
        training = {m: m.training for m in module.modules()}
        inplace = {m: m.inplace for m in module.modules() if getattr(m, "inplace", False) is True}
        handles = []
        try:
            module.eval()
            for m in inplace:
                m.inplace = False
            for name, m in module.named_modules():
                if name == "" and not _is_leaf(m):
                    continue
                handles.append(m.register_forward_pre_hook(self._make_pre_hook(name, m)))
                handles.append(m.register_forward_hook(self._make_post_hook(name, m)))
            try:
                param = next(module.parameters())
                x = x.to(device=param.device, dtype=param.dtype)
            except StopIteration:
                pass
            self.x = x.detach().clone().requires_grad_(True)
            with torch.enable_grad(), _full_precision(x.device), _FunctionalRules(self):
                out = module(_TapFn.apply(self.x, self, "", "root"))
                self._flush_pending()
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the module returned {type(out).__name__}; LRP needs a single output tensor")
            if not _in_graph(out):
                raise ValueError("the module output does not depend on its input; nothing to propagate")
            self.out = out
            self.output = out.detach()
        finally:
            for h in handles:
                h.remove()
            for m, flag in training.items():
                m.training = flag
            for m in inplace:
                m.inplace = True
            self._in_rule_leaf = 0

    def _make_pre_hook(self, name: str, m: nn.Module):
        def pre_hook(mod, args):
            if self._suspended:
                return None
            leaf = _is_leaf(m)
            if leaf:
                if isinstance(m, BATCHNORM_TYPES) and args and id(args[0]) in self._pending and \
                        isinstance(self._rule_for(name, m), Epsilon) and _foldable(self._pending[id(args[0])][1], m):
                    self._fold[name] = self._pending[id(args[0])][1]
                    self._drop_pending(self._fold[name])
                self._flush_pending()
            if self._rule_for(name, m) is not None and leaf:
                self._in_rule_leaf += 1
            if name == "":
                return None
            out = []
            for a in args:
                if _in_graph(a):
                    t = _TapFn.apply(a, self, name, "in")
                    self._alias(a, t)
                    a = t
                out.append(a)
            return tuple(out)

        return pre_hook

    def _rule_for(self, name, m) -> Rule | None:
        cache = self._rule_cache
        if name not in cache:
            if not _is_leaf(m):
                cache[name] = None
            else:
                first = isinstance(m, LINEAR_TYPES) and not self._first_done
                rule = _resolve_rule(name, m, self.rules, self.preset, first)
                if isinstance(m, LINEAR_TYPES):
                    self._first_done = True
                if rule is not None and rule.needs_weights and not isinstance(m, LINEAR_TYPES):
                    raise TypeError(f"{name}: rule {rule!r} needs a layer with weights, but {name} is "
                                    f"{type(m).__name__}")
                cache[name] = rule
        return cache[name]

    def _make_post_hook(self, name: str, m: nn.Module):
        def post_hook(mod, args, out):
            if self._suspended:
                return None
            if isinstance(out, torch.Tensor):
                self.shapes.setdefault(name, tuple(out.shape))
            rule = self._rule_for(name, m)
            pending = None
            if rule is not None and _is_leaf(m):
                self._in_rule_leaf -= 1
                x = args[0] if args else None
                if isinstance(out, torch.Tensor) and _in_graph(x):
                    if name in self._fold:  # BatchNorm folded into the layer before it
                        self._prepare_folded(self._fold.pop(name), m, out)
                        rule = PassThrough()
                    defer = isinstance(m, LINEAR_TYPES)
                    out = self._wrap(rule, name, m, x, out, defer=defer)
                    if defer:
                        pending = self._entries[-1]
            if name and isinstance(out, torch.Tensor) and _in_graph(out):
                k = self._calls[name] = self._calls.get(name, 0) + 1
                t = _TapFn.apply(out, self, name if k == 1 else f"{name}#{k}", "out")
                self._alias(out, t)
                out = t
            if pending is not None:
                self._pending[id(out)] = (out, pending)
            return out

        return post_hook

    def _wrap(self, rule: Rule, name: str, m: nn.Module | None, x: torch.Tensor, z: torch.Tensor,
              defer: bool = False):
        if defer:  # prepared by _flush_pending, or with a folded BatchNorm by _prepare_folded
            entry = _Entry(name=name, module=m, rule=rule, x=x, z=z.detach())
            self._entries.append(entry)
            return _RuleFn.apply(x, z.detach(), self, entry)
        self._suspended = True
        try:
            state = rule.prepare(m, x, z, {})
        finally:
            self._suspended = False
        entry = _Entry(name=name, module=m, rule=rule, state=state)
        self._entries.append(entry)
        return _RuleFn.apply(x, z.detach(), self, entry)

    def _alias(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """A tap's output stands for its input when looking for a BatchNorm right after a layer."""
        hit = self._pending.get(id(old))
        if hit is not None:
            self._pending[id(new)] = (new, hit[1])

    def _drop_pending(self, entry: _Entry) -> None:
        for key in [k for k, (_t, e) in self._pending.items() if e is entry]:
            del self._pending[key]

    def _flush_pending(self) -> None:
        """Prepare the deferred linear layers that no BatchNorm follows directly."""
        done = set()
        for _t, entry in list(self._pending.values()):
            if id(entry) in done:
                continue
            done.add(id(entry))
            self._suspended = True
            try:
                entry.state = entry.rule.prepare(entry.module, entry.x, entry.z, {})
            finally:
                self._suspended = False
            entry.x = entry.z = None
        self._pending.clear()

    def _prepare_folded(self, entry: _Entry, bn: nn.Module, y: torch.Tensor) -> None:
        """Fold an eval BatchNorm into the linear layer before it: the layer's rule sees W' = s W,
        b' = s (b - mean) + beta and the BatchNorm's output; the BatchNorm then passes relevance."""
        conv = entry.module
        s = torch.rsqrt(bn.running_var.detach() + bn.eps)
        if bn.affine:
            s = s * bn.weight.detach()
        w = conv.weight.detach()
        shape = [1] * w.ndim
        if isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            shape[1] = -1
        else:
            shape[0] = -1
        b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        bias = (b - bn.running_mean.detach()) * s
        if bn.affine:
            bias = bias + bn.bias.detach()
        self._suspended = True
        try:
            entry.state = entry.rule.prepare(conv, entry.x, y.detach(),
                                             {"weight": w * s.view(shape), "bias": bias})
        finally:
            self._suspended = False
        entry.x = entry.z = None
        self.folded.append((entry.name, self._names.get(id(bn), "?")))

    def _wrap_functional(self, rule: Rule, func, x, out):
        self._functional_count += 1
        name = f"{getattr(func, '__name__', 'op')}#{self._functional_count}"
        return self._wrap(rule, name, None, x, out)

    def _residual(self, a, b, alpha):
        self._suspended = True
        try:
            bb = b * alpha if alpha != 1 else b
            y = a + bb
        finally:
            self._suspended = False
        self._functional_count += 1
        entry = _Entry(name=f"add#{self._functional_count}", module=None, rule=Epsilon(DEFAULT_EPSILON),
                       a=a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(a),
                       b=bb.detach() if isinstance(bb, torch.Tensor) else torch.as_tensor(bb),
                       z=y.detach(), a_in=_in_graph(a), b_in=_in_graph(b))
        self._entries.append(entry)
        ta = a if _in_graph(a) else torch.zeros((), dtype=y.dtype, device=y.device)
        tb = b if _in_graph(b) else torch.zeros((), dtype=y.dtype, device=y.device)
        return _ResidualFn.apply(ta, tb, y.detach(), self, entry)

    # ---- backward --------------------------------------------------------------------------
    def _tick(self):
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, len(self._entries))

    def _record(self, name, kind, op, before, after):
        """Ledger entry; sums may be 0-d tensors (converted once at the end, without a sync per layer)."""
        if self._ledger is not None:
            self._ledger.entries.append(LedgerEntry(name, kind, op, before, after))

    def _apply_rule(self, entry: _Entry, R: torch.Tensor) -> torch.Tensor:
        if entry.state is None and not isinstance(entry.rule, PassThrough):
            raise RuntimeError("this propagation was released (retain=False); make a new Propagation")
        if not self._retain and hasattr(entry.state, "keep"):
            entry.state.keep = False  # one-shot: the rule may compute into its own temporaries
        Rin = entry.rule.relevance(entry.state, R)
        if not self._retain:
            entry.state = None  # one-shot: free what the rule kept, as a gradient pass frees its graph
        self._record(entry.name, "rule", type(entry.rule).__name__, R.sum(), Rin.sum())
        self._tick()
        return Rin

    def _apply_residual(self, entry: _Entry, R: torch.Tensor):
        s = R / stabilise(entry.z, entry.rule.epsilon)
        Ra = _sum_to(entry.a * s, entry.a.shape) if entry.a_in else None
        Rb = _sum_to(entry.b * s, entry.b.shape) if entry.b_in else None
        # the relevance of a constant operand (a bias added in forward) is absorbed
        handed = sum(r.sum() for r in (Ra, Rb) if r is not None)
        self._record(entry.name, "residual", "add", R.sum(), handed)
        self._tick()
        return Ra, Rb

    def _tap(self, name: str, side: str, R: torch.Tensor) -> torch.Tensor:
        if side == "root":
            return R
        if side == "out":
            if name.split("#")[0] in self._keep:
                prev = self._kept.get(name)
                self._kept[name] = R.detach().clone() if prev is None else prev + R.detach()
            return R
        f = self._filter_for(name)
        if f is None:
            return R
        Rf = f(R)
        self._record(name, "filter", repr(f), R.sum(), Rf.sum())
        return Rf

    def _filter_for(self, name: str) -> Filter | None:
        filters = self._filters
        if not filters:
            return None
        if name in filters:
            return filters[name]
        for key, f in filters.items():
            if key in ("input", "output"):
                continue
            if any(c in key for c in "*?[") and fnmatch.fnmatchcase(name, key):
                return f
        return None

    def propagate(self, start: torch.Tensor, filters: Mapping[str, Filter] | None = None,
                  keep=None, progress: Callable[[int, int], None] | None = None,
                  retain: bool = True) -> PropagationResult:
        """Propagate ``start`` (relevance at the output, shaped like the output) to the input.

        filters: {'output' | 'input' | module name | glob: Filter}; keep: module names (or globs, or
        True for all) whose output relevance to return; progress(done, total) is called after every
        rule application and may raise :class:`Cancelled`. No forward pass runs. retain=False frees the
        kept forward pass while propagating (one-shot use, the memory of a gradient pass).
        """
        start = torch.as_tensor(start).detach().to(device=self.output.device, dtype=self.output.dtype)
        if start.shape != self.output.shape:
            raise ValueError(f"start relevance has shape {tuple(start.shape)}, the output {tuple(self.output.shape)}")
        filters = {k: v for k, v in (filters or {}).items() if v is not None and not isinstance(v, Identity)}
        for key, f in filters.items():
            if not isinstance(f, Filter) and not callable(f):
                raise TypeError(f"filter for {key!r} is {type(f).__name__}, not a Filter")
        names = [n for n in self._names.values() if n]
        if keep is True:
            keep_set = set(names)
        else:
            keep_set = set()
            for k in keep or ():
                keep_set |= {n for n in names if fnmatch.fnmatchcase(n, k)} if any(c in k for c in "*?[") else {k}
        with self._lock:
            self._filters, self._keep, self._kept = filters, keep_set, {}
            self._ledger = Ledger()
            self._progress, self._done = progress, 0
            self._retain = retain
            try:
                self._ledger.start = float(start.sum(dtype=torch.float64))
                R0 = start
                if "output" in filters:
                    R0 = filters["output"](start)
                    self._record("output", "filter", repr(filters["output"]), self._ledger.start,
                                 float(R0.sum(dtype=torch.float64)))
                with _full_precision(R0.device):
                    (R,) = torch.autograd.grad(self.out, self.x, R0, retain_graph=retain, allow_unused=True)
                if not retain:
                    self.release()
                if R is None:
                    R = torch.zeros_like(self.x)
                unfiltered = R.detach()
                if "input" in filters:
                    Rf = filters["input"](R)
                    self._record("input", "filter", repr(filters["input"]), float(R.sum(dtype=torch.float64)),
                                 float(Rf.sum(dtype=torch.float64)))
                    R = Rf
                self._ledger.end = float(R.sum(dtype=torch.float64))
                _ledger_to_floats(self._ledger)
                return PropagationResult(R.detach(), dict(self._kept), self._ledger, unfiltered)
            finally:
                self._filters, self._keep, self._kept, self._progress = {}, set(), {}, None
                self._ledger = None

    @property
    def n_rules(self) -> int:
        """Rule applications per backward pass (the progress total)."""
        return len(self._entries)

    def release(self) -> None:
        """Free the kept forward pass."""
        self._entries.clear()
        self.out = None


def _ledger_to_floats(ledger: Ledger) -> None:
    vals = [v for e in ledger.entries for v in (e.received, e.handed)]
    tens = [v for v in vals if isinstance(v, torch.Tensor)]
    if tens:
        floats = iter(torch.stack([t.detach().double() for t in tens]).cpu().tolist())
        vals = [next(floats) if isinstance(v, torch.Tensor) else float(v) for v in vals]
    for i, e in enumerate(ledger.entries):
        e.received, e.handed = float(vals[2 * i]), float(vals[2 * i + 1])


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    while t.ndim > len(shape):
        t = t.sum(dim=0)
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def propagate(module: nn.Module, x: torch.Tensor, start: torch.Tensor, rules: RulesArg = "lrp0",
              filters: Mapping[str, Filter] | None = None, keep=None, bounds=None):
    """Relevance at the input of ``module`` for relevance ``start`` at its output (x's shape).

    rules: preset name or {module name | glob | type: Rule} over the defaults; filters: see
    :meth:`Propagation.propagate`. With ``keep`` given, returns a PropagationResult instead of a tensor.
    """
    prop = Propagation(module, x, rules=rules, bounds=bounds)
    try:
        res = prop.propagate(start, filters=filters, keep=keep, retain=False)
    finally:
        prop.release()
    return res if keep else res.relevance


# --------------------------------------------------------------------------------------------
# blocks


def block_names(module: nn.Module, which: str = "all") -> list[str]:
    """Names of the blocks of a U-Net: modules with a convolution as a direct child.

    Modules that define ``lrp_blocks(which)`` (like UNet3D) name their own blocks; ``which`` is
    'all', 'encoder' or 'decoder' (for others, the first half in forward order counts as encoder).
    """
    if hasattr(module, "lrp_blocks"):
        return list(module.lrp_blocks(which))
    names = [n for n, m in module.named_modules()
             if n and any(isinstance(c, LINEAR_TYPES) for c in m.children())]
    if which == "all":
        return names
    half = (len(names) + 1) // 2
    return names[:half] if which == "encoder" else names[half:]


def every_block(module: nn.Module, f: Filter, which: str = "all") -> dict[str, Filter]:
    """{block name: f} for every block of ``module`` (see :func:`block_names`)."""
    return {n: f for n in block_names(module, which)}
