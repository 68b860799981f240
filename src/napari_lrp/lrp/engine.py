"""The relevance engine: forward once, propagate relevance many times.

Mechanism: the relevance itself is what autograd carries backwards. In the one
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
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import kernels
from .filters import Filter, Identity
from .folding import BatchNormFolding
from .ledger import Ledger
from .names import check_placements, expand, is_glob, matches
from .presets import can_handle, get_preset, resolve_rule
from .rules import (
    AlphaBeta,
    Epsilon,
    Gamma,
    PassThrough,
    Routing,
    Rule,
    SignedState,
    Softmax,
    WinnerTakesAll,
    divide_stabilised,
    stabilise,
)
from .types import (
    ADD_FUNCTIONS,
    ATTENTION_FUNCTIONS,
    BATCHNORM_TYPES,
    CONV3D_FUNCTIONS,
    DIV_FUNCTIONS,
    INPLACE_TWINS,
    LAYERNORM_FUNCTIONS,
    LINEAR_MAP_FUNCTIONS,
    LINEAR_TYPES,
    MAXPOOL_FUNCTIONS,
    MUL_FUNCTIONS,
    MULTILINEAR_FUNCTIONS,
    PAD_FUNCTIONS,
    PASS_FUNCTIONS,
    ROUTING_FUNCTIONS,
    SOFTMAX_FUNCTIONS,
    SUB_FUNCTIONS,
)

__all__ = ["Propagation", "PropagationResult", "propagate", "select_output", "Cancelled", "UnhandledOperationWarning",
           "UnhandledOperationError"]


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


class UnhandledOperationWarning(UserWarning):
    """The forward pass used an operation on the relevance path that no rule covers (e.g. ``a * b``)."""


class UnhandledOperationError(TypeError):
    """``strict=True`` and the forward pass used an operation no rule covers."""


def _op_name(func) -> str:
    return getattr(func, "__name__", None) or repr(func)


def _is_own_function(func) -> bool:
    """The engine's own identity Functions (taps, rules); a model's custom autograd Function is not."""
    owner = getattr(func, "__self__", None)
    return isinstance(owner, type) and issubclass(owner, torch.autograd.Function) and owner.__module__ == __name__


def _op_label(func) -> str:
    owner = getattr(func, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return f"{owner.__name__}.apply"
    return _op_name(func)


def _any_in_graph(args, kwargs) -> bool:
    def walk(v):
        if isinstance(v, torch.Tensor):
            return v.grad_fn is not None
        if isinstance(v, (list, tuple)):
            return any(walk(a) for a in v)
        return False

    return walk(args) or any(walk(v) for v in kwargs.values())


RulesArg = str | Mapping | None


# --------------------------------------------------------------------------------------------
# autograd Functions


# The graph's nodes hold the engine and its entries by weak reference only: the engine keeps the graph (its
# output), so strong references back would make a cycle through autograd's C++ nodes, which Python's garbage
# collector cannot see, and every kept forward pass would stay in memory after its Explanation is gone.


class _RuleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, zd, engine, entry):
        ctx.engine = weakref.ref(engine)
        ctx.entry = weakref.ref(entry)
        return zd.view_as(zd)

    @staticmethod
    def backward(ctx, R):
        return ctx.engine()._apply_rule(ctx.entry(), R), None, None, None


class _PairFn(torch.autograd.Function):
    """An operation of two operands (a residual sum, a product): its entry's handler splits the relevance."""

    @staticmethod
    def forward(ctx, a, b, yd, engine, entry):
        ctx.entry = weakref.ref(entry)
        return yd.view_as(yd)

    @staticmethod
    def backward(ctx, R):
        Ra, Rb = ctx.entry().split(R)
        return Ra, Rb, None, None, None


class _TapFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, engine, name, side):
        ctx.engine = weakref.ref(engine)
        ctx.name = name
        ctx.side = side
        return x.view_as(x)

    @staticmethod
    def backward(ctx, R):
        return ctx.engine()._tap(ctx.name, ctx.side, R), None, None, None


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
    #: pair entries: the engine's handler that splits the relevance between the operands
    split: Callable | None = None


def _in_graph(t) -> bool:
    return isinstance(t, torch.Tensor) and t.grad_fn is not None


#: a handler's answer when its operation is not on the relevance path in this call: run it as the default does
_DEFAULT = object()


def _first_input(args, kwargs):
    return args[0] if args else kwargs.get("input")


def _on_sum(eng, func, args, kwargs):
    """a + alpha b, a - alpha b with an operand on the relevance path: the residual rule."""
    if len(args) < 2:
        return _DEFAULT
    a, b = args[0], args[1]
    if not (_in_graph(a) or _in_graph(b)):
        return func(*args, **kwargs)
    sign = -1.0 if func in SUB_FUNCTIONS else 1.0
    return eng._residual(a, b, kwargs.get("alpha", 1) * sign)


def _on_product(eng, func, args, kwargs):
    """a * b, a / b: the product rule; a / b with b on the relevance path has no rule (counted)."""
    if len(args) < 2 or kwargs:
        return _DEFAULT
    a, b = args[0], args[1]
    divide = func in DIV_FUNCTIONS
    if not (_in_graph(a) or (not divide and _in_graph(b))):
        return func(*args, **kwargs)
    if divide and _in_graph(b):
        eng.unhandled["div"] = eng.unhandled.get("div", 0) + 1
        return torch.div(a, b)
    return eng._product(a, b, divide=divide)


def _on_multilinear(eng, func, args, kwargs):
    return eng._multilinear(func, args, kwargs)


def _on_attention(eng, func, args, kwargs):
    return eng._attention(func, *args, **kwargs)


def _on_softmax(eng, func, args, kwargs):
    """Softmax: the CP-LRP preset treats the attention weights as constants, the others their own rule."""
    out = func(*args, **kwargs)
    x = _first_input(args, kwargs)
    if not (_in_graph(x) and isinstance(out, torch.Tensor)):
        return out
    if eng.preset.attention == "cp-lrp":
        return out.detach()
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return eng._wrap_functional(Softmax(), func, x, out, {"dim": dim})


def _on_layer_norm(eng, func, args, kwargs):
    """F.layer_norm: the rule of an nn.LayerNorm (epsilon with the normalisation as a constant) or pass."""
    out = func(*args, **kwargs)
    x = _first_input(args, kwargs)
    if not (_in_graph(x) and isinstance(out, torch.Tensor)):
        return out
    given = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args)) | kwargs
    shape = tuple(given["normalized_shape"])
    rule = eng._functional_rule(nn.LayerNorm(shape, elementwise_affine=False))
    ctx = {"layer_norm": (shape, given.get("weight"), given.get("eps", 1e-5))}
    if isinstance(rule, PassThrough) or not isinstance(rule, Epsilon):
        rule = PassThrough()
    return eng._wrap_functional(rule, func, x, out, ctx)


def _on_pad(eng, func, args, kwargs):
    """Padding and masked fills route relevance by index; the padded input is still the input."""
    out = func(*args, **kwargs)
    x = _first_input(args, kwargs)
    if not (_in_graph(x) and isinstance(out, torch.Tensor)):
        return out
    wrapped = eng._wrap_functional(Routing(), func, x, out)
    if eng._is_input(x):
        eng._mark_input(wrapped)
    return wrapped


def _on_pass(eng, func, args, kwargs):
    """Element-wise activations and dropout: relevance passes unchanged (run out of place)."""
    kwargs.pop("inplace", None)
    func = INPLACE_TWINS.get(func, func)
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


def _on_linear_map(eng, func, args, kwargs):
    """Interpolation and average pooling (epsilon 0, a fixed linear map), max pooling (winner takes all)."""
    out = func(*args, **kwargs)
    x = _first_input(args, kwargs)
    if not (_in_graph(x) and isinstance(out, torch.Tensor)):
        return out
    linear = func in LINEAR_MAP_FUNCTIONS
    wrapped = eng._wrap_functional(Epsilon(0.0) if linear else WinnerTakesAll(), func, x, out)
    if linear and eng._is_input(x):
        eng._mark_input(wrapped)  # the input resampled (a fixed model grid) is still the input
    return wrapped


#: the functional operations with a rule: (the table of lrp/types.py, its handler); the first table that
#: holds a function decides (one entry here adds a kind of operation, one entry in types.py an operation)
FUNCTIONAL_HANDLERS = (
    (ADD_FUNCTIONS, _on_sum), (SUB_FUNCTIONS, _on_sum), (MUL_FUNCTIONS, _on_product), (DIV_FUNCTIONS, _on_product),
    (MULTILINEAR_FUNCTIONS, _on_multilinear), (ATTENTION_FUNCTIONS, _on_attention), (SOFTMAX_FUNCTIONS, _on_softmax),
    (LAYERNORM_FUNCTIONS, _on_layer_norm), (PAD_FUNCTIONS, _on_pad), (PASS_FUNCTIONS, _on_pass),
    (LINEAR_MAP_FUNCTIONS, _on_linear_map), (MAXPOOL_FUNCTIONS, _on_linear_map),
)
_DISPATCH: dict = {}
for _table, _handler in FUNCTIONAL_HANDLERS:
    for _func in _table:
        _DISPATCH.setdefault(_func, _handler)


class _FunctionalRules(TorchFunctionMode):
    """Catches functional operations inside ``forward`` methods and wraps them with their rule
    (:data:`FUNCTIONAL_HANDLERS`); any other operation on the relevance path is counted as unhandled."""

    def __init__(self, engine: Propagation):
        super().__init__()
        self.engine = engine

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        eng = self.engine
        if func in CONV3D_FUNCTIONS:  # oneDNN kernels (see kernels.py)
            return kernels.run_on_kernels(func, args, kwargs)
        if eng._suspend_depth or eng._in_rule_leaf:
            return func(*args, **kwargs)
        handler = _DISPATCH.get(func)
        if handler is not None:
            out = handler(eng, func, args, kwargs)
            if out is not _DEFAULT:
                return out
        out = func(*args, **kwargs)
        if func in ROUTING_FUNCTIONS and args and eng._is_input(args[0]):
            eng._mark_input(out)  # padding, cropping, reshaping the input leave it the input
        if _in_graph(out) and func not in ROUTING_FUNCTIONS and not _is_own_function(func) \
                and _any_in_graph(args, kwargs):
            name = _op_label(func)
            eng.unhandled[name] = eng.unhandled.get(name, 0) + 1
        return out


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


def select_output(out, output_index, network: str = "the network") -> torch.Tensor:
    """The segmentation output of a network's return value.

    Parameters
    ----------
    out : torch.Tensor, list, tuple or dict
        What the network returned (a list, tuple or dict: deep supervision, a VAE branch).
    output_index : int, str or None
        Which item is the segmentation; None when ``out`` is a tensor (an index into one tensor would select
        nothing).
    network : str
        The network's name, for the message.

    Returns
    -------
    torch.Tensor
        The segmentation output.

    Raises
    ------
    TypeError
        Naming what is wrong (an index for one tensor, none for several outputs, an index that selects
    nothing or no tensor).
    """
    if isinstance(out, torch.Tensor):
        if output_index is not None:
            raise TypeError(f"output_index={output_index!r}, but {network} returns one tensor; leave "
                            "output_index=None (it selects among a list, tuple or dict of outputs)")
        return out
    if output_index is None:
        raise TypeError(f"{network} returned {type(out).__name__}; LRP needs a single output tensor: pass "
                        "output_index= (e.g. 0 for the first of a list, or a dict key)")
    try:
        selected = out[output_index]
    except (KeyError, IndexError, TypeError) as exc:
        raise TypeError(f"output_index={output_index!r} does not select an output of {network} "
                        f"({type(out).__name__}): {exc}") from None
    if not isinstance(selected, torch.Tensor):
        raise TypeError(f"output_index={output_index!r} selects a {type(selected).__name__} of {network}, not a tensor")
    return selected


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
                 preset: str | None = None, strict: bool = False, output_index=None):
        self.module = module
        self.strict = strict
        self.output_index = output_index
        #: {operation name: calls} on the relevance path that no rule covers (crossed as a plain gradient)
        self.unhandled: dict[str, int] = {}
        if isinstance(rules, str):
            preset, rules = rules, {}
        self.preset = get_preset(preset or "lrp0", bounds)
        self.rules: dict = dict(rules or {})
        self._names = {id(m): n for n, m in module.named_modules()}
        self._lock = threading.Lock()
        self._suspend_depth = 0
        self._in_rule_leaf = 0
        self._first_done = False
        # tensors that carry the network input itself (its taps, parameter-free resampling, padding,
        # routing): a linear layer reading one of them is a "first layer" (id -> tensor, kept alive)
        self._input_tensors: dict[int, torch.Tensor] = {}
        self._reads_input = False
        self._rule_cache: dict[str, Rule | None] = {}
        self._entries: list[_Entry] = []
        self._functional_count = 0
        self._calls: dict[str, int] = {}
        # linear layers whose rule is prepared once we know whether a BatchNorm follows (to fold it)
        self._folding = BatchNormFolding(self._prepare_deferred)
        #: output shape of every module (first call), for layer tables
        self.shapes: dict[str, tuple] = {}
        #: {module name: is a leaf} of every module called in the forward pass, in call order
        self.called: dict[str, bool] = {}
        #: {module name: its output (first call) in the kept graph}: where :meth:`propagate_from` starts
        self.outputs: dict[str, torch.Tensor] = {}
        # propagation-time state
        self._filters: dict = {}
        self._keep: set[str] = set()
        self._kept: dict[str, torch.Tensor] = {}
        self._ledger: Ledger | None = None
        self._progress: Callable[[int, int], None] | None = None
        self._done = 0
        self._retain = True
        self._forward(x)
        self._check_rule_placements()

    def _check_rule_placements(self) -> None:
        """Every rule placed by name or glob reaches a layer of the forward pass (a typo raises)."""
        leaves = [n for n, leaf in self.called.items() if leaf]
        containers = [n for n, leaf in self.called.items() if not leaf]
        check_placements(self.rules, leaves, "rule", type(self.module).__name__, containers=containers)

    @property
    def folded(self) -> list[tuple[str, str]]:
        """(layer, BatchNorm) pairs folded together."""
        return self._folding.folded

    @contextlib.contextmanager
    def _suspended(self) -> Iterator[None]:
        """Torch calls inside run plain: no hooks, no functional rules (a rule's own forward graphs)."""
        self._suspend_depth += 1
        try:
            yield
        finally:
            self._suspend_depth -= 1

    # ---- forward ---------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> None:
        module = self.module
        training = {m: m.training for m in module.modules()}
        inplace = {m: m.inplace for m in module.modules() if getattr(m, "inplace", False) is True}
        # parameters do not require grad while the forward runs, so a tensor is "on the relevance path"
        # exactly when it depends on the input (a position bias taken from a parameter table is a constant)
        frozen = [p for p in module.parameters() if p.requires_grad]
        handles = []
        try:
            for p in frozen:
                p.requires_grad_(False)
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
                root = _TapFn.apply(self.x, self, "", "root")
                self._mark_input(root)
                out = module(root)
                self._folding.flush()
            out = select_output(out, self.output_index, type(module).__name__)
            if not _in_graph(out):
                raise ValueError("the module output does not depend on its input; nothing to propagate")
            self.out = out
            self.output = out.detach()
            self._report_unhandled()
        finally:
            for h in handles:
                h.remove()
            for m, flag in training.items():
                m.training = flag
            for m in inplace:
                m.inplace = True
            for p in frozen:
                p.requires_grad_(True)
            self._in_rule_leaf = 0
            self._input_tensors.clear()

    def _report_unhandled(self) -> None:
        """Name the operations no rule covered (a warning; ``strict=True`` raises)."""
        if not self.unhandled:
            return
        ops = ", ".join(f"{name} (x{n})" for name, n in sorted(self.unhandled.items()))
        msg = (f"LRP has no rule for these operations in {type(self.module).__name__}'s forward: {ops}; "
               "relevance crosses them as a plain gradient (the ledger's 'unaccounted' shows what that costs). "
               "Pass strict=True to refuse such networks.")
        if self.strict:
            raise UnhandledOperationError(msg)
        import warnings

        warnings.warn(msg, UnhandledOperationWarning, stacklevel=4)

    def _make_pre_hook(self, name: str, m: nn.Module):
        def pre_hook(mod, args):
            if self._suspend_depth:
                return None
            leaf = _is_leaf(m)
            if name:
                self.called.setdefault(name, leaf)
            self._reads_input = bool(args) and self._is_input(args[0])
            if leaf:
                if isinstance(m, BATCHNORM_TYPES) and args and isinstance(self._rule_for(name, m), Epsilon):
                    self._folding.claim(name, m, args[0])
                self._folding.flush()
            if self._rule_for(name, m) is not None and leaf:
                self._in_rule_leaf += 1
            if name == "":
                return None
            out = []
            for a in args:
                if _in_graph(a):
                    t = _TapFn.apply(a, self, name, "in")
                    self._folding.alias(a, t)
                    if self._is_input(a):
                        self._mark_input(t)
                    a = t
                out.append(a)
            return tuple(out)

        return pre_hook

    def _mark_input(self, t) -> None:
        if isinstance(t, torch.Tensor):
            self._input_tensors[id(t)] = t

    def _is_input(self, t) -> bool:
        return isinstance(t, torch.Tensor) and self._input_tensors.get(id(t)) is t

    def _rule_for(self, name, m) -> Rule | None:
        cache = self._rule_cache
        if name not in cache:
            if not _is_leaf(m):
                cache[name] = None
            else:
                # the first rule (z-box, flat) goes to every linear layer that reads the network input, and to
                # the first linear layer in forward order when the input reaches it otherwise
                first = isinstance(m, LINEAR_TYPES) and (self._reads_input or not self._first_done)
                rule = resolve_rule(name, m, self.rules, self.preset, first)
                if isinstance(m, LINEAR_TYPES):
                    self._first_done = True
                if rule is not None and rule.needs_weights and not isinstance(m, LINEAR_TYPES):
                    raise TypeError(f"{name}: rule {rule!r} needs a layer with weights, but {name} is "
                                    f"{type(m).__name__}")
                cache[name] = rule
        return cache[name]

    def _make_post_hook(self, name: str, m: nn.Module):
        def post_hook(mod, args, out):
            if self._suspend_depth:
                return None
            if isinstance(out, torch.Tensor):
                self.shapes.setdefault(name, tuple(out.shape))
            rule = self._rule_for(name, m)
            pending = None
            if rule is not None and _is_leaf(m):
                self._in_rule_leaf -= 1
                x = args[0] if args else None
                if isinstance(rule, Softmax) and self.preset.attention == "cp-lrp" and isinstance(out, torch.Tensor):
                    return out.detach()  # CP-LRP: the attention weights are constants
                if isinstance(out, torch.Tensor) and _in_graph(x):
                    if self._folding.is_claimed(name):  # BatchNorm folded into the layer before it
                        self._folding.fold(name, m, out)
                        rule = PassThrough()
                    defer = isinstance(m, LINEAR_TYPES)
                    out = self._wrap(rule, name, m, x, out, defer=defer)
                    if defer:
                        pending = self._entries[-1]
            if name and isinstance(out, torch.Tensor) and _in_graph(out):
                k = self._calls[name] = self._calls.get(name, 0) + 1
                t = _TapFn.apply(out, self, name if k == 1 else f"{name}#{k}", "out")
                self._folding.alias(out, t)
                out = t
                if k == 1:  # where a conditional pass starts (the tensor is alive in the graph anyway)
                    self.outputs[name] = t
            if pending is not None:
                self._folding.defer(out, pending)
            return out

        return post_hook

    def _wrap(self, rule: Rule, name: str, m: nn.Module | None, x: torch.Tensor, z: torch.Tensor,
              defer: bool = False, ctx: dict | None = None):
        if defer:  # prepared by _prepare_deferred once the folding knows whether a BatchNorm follows
            entry = _Entry(name=name, module=m, rule=rule, x=x, z=z.detach())
            self._entries.append(entry)
            return _RuleFn.apply(x, z.detach(), self, entry)
        with self._suspended():
            state = rule.prepare(m, x, z, ctx or {})
        entry = _Entry(name=name, module=m, rule=rule, state=state)
        self._entries.append(entry)
        return _RuleFn.apply(x, z.detach(), self, entry)

    def _prepare_deferred(self, entry: _Entry, override: dict | None, z: torch.Tensor | None) -> None:
        """Prepare a deferred linear layer's rule (``override``: folded weight and bias; ``z``: the folded
        BatchNorm's output in place of the layer's)."""
        with self._suspended():
            entry.state = entry.rule.prepare(entry.module, entry.x, entry.z if z is None else z, override or {})
        entry.x = entry.z = None

    def _wrap_functional(self, rule: Rule, func, x, out, ctx: dict | None = None):
        self._functional_count += 1
        name = f"{getattr(func, '__name__', 'op')}#{self._functional_count}"
        return self._wrap(rule, name, None, x, out, ctx=ctx)

    def _functional_rule(self, proxy: nn.Module) -> Rule | None:
        """The rule the rules mapping (by type) and the preset give a functional operation, asked of a
        parameter-free module of the same kind (``F.layer_norm`` -> ``nn.LayerNorm``)."""
        return resolve_rule("", proxy, {k: v for k, v in self.rules.items() if isinstance(k, type)},
                            self.preset, False)

    def _multilinear(self, func, args, kwargs):
        """y = f(a, b) linear in each tensor operand (a @ b, einsum, bmm, F.linear with a constant weight):
        the epsilon rule on the multilinear terms, R_i = x_i * (dy/dx_i)^T (R / y) / n for the n operands on
        the relevance path (AttnLRP's uniform rule for n = 2; the epsilon rule of a linear map for n = 1;
        an additive bias's share is absorbed). More than two operands on the path: no rule (reported)."""
        nested = func is torch.einsum and len(args) == 2 and isinstance(args[1], (list, tuple))
        flat = [args[0], *args[1]] if nested else list(args)
        pos = [i for i, a in enumerate(flat) if _in_graph(a)]
        if not pos or len(pos) > 2 or any(_in_graph(v) for v in kwargs.values()):
            out = func(*args, **kwargs)
            if pos or any(_in_graph(v) for v in kwargs.values()):
                name = _op_label(func)
                self.unhandled[name] = self.unhandled.get(name, 0) + 1
            return out
        with self._suspended(), torch.enable_grad():
            leaves = [flat[i].detach().requires_grad_(True) for i in pos]
            new = [a.detach() if isinstance(a, torch.Tensor) else a for a in flat]
            for i, leaf in zip(pos, leaves):
                new[i] = leaf
            y = func(new[0], new[1:], **kwargs) if nested else func(*new, **kwargs)
        self._functional_count += 1
        entry = _Entry(name=f"{_op_name(func)}#{self._functional_count}", module=None, rule=PassThrough(),
                       state=(y, leaves, self.preset.product_epsilon), a_in=True, b_in=len(pos) == 2)
        entry.split = lambda R, e=entry: self._apply_multilinear(e, R)
        self._entries.append(entry)
        ta = flat[pos[0]]
        tb = flat[pos[1]] if len(pos) == 2 else torch.zeros((), dtype=y.dtype, device=y.device)
        return _PairFn.apply(ta, tb, y.detach(), self, entry)

    def _residual(self, a, b, alpha):
        with self._suspended():
            bb = b * alpha if alpha != 1 else b
            y = a + bb
        self._functional_count += 1
        entry = _Entry(name=f"add#{self._functional_count}", module=None, rule=Epsilon(0.0),
                       a=a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(a),
                       b=bb.detach() if isinstance(bb, torch.Tensor) else torch.as_tensor(bb),
                       z=y.detach(), a_in=_in_graph(a), b_in=_in_graph(b))
        entry.split = lambda R, e=entry: self._apply_residual(e, R)
        self._entries.append(entry)
        ta = a if _in_graph(a) else torch.zeros((), dtype=y.dtype, device=y.device)
        tb = b if _in_graph(b) else torch.zeros((), dtype=y.dtype, device=y.device)
        return _PairFn.apply(ta, tb, y.detach(), self, entry)

    def _product(self, a, b, divide: bool = False):
        """y = a * b (or a / b for a constant b), out of place. The signal-take-all rule (Arras et al.
        2017, as AttnLRP): the operand on the relevance path with more elements is the signal and gets all
        the relevance, the other (a gate such as an attention map or a squeeze-excitation weight, or a
        constant) is held constant and gets none. Two operands of the same size on the relevance path (a
        bilinear product) share it equally (AttnLRP's uniform rule)."""
        with self._suspended():
            y = torch.div(a, b) if divide else torch.mul(a, b)
        a_in, b_in = _in_graph(a), _in_graph(b) and not divide
        na = a.numel() if isinstance(a, torch.Tensor) else 1
        nb = b.numel() if isinstance(b, torch.Tensor) else 1
        if a_in and b_in and na == nb:
            mode = "uniform"
        elif a_in and (not b_in or na > nb):
            mode = "a"
        else:
            mode = "b"
        self._functional_count += 1
        shape_a = tuple(a.shape) if isinstance(a, torch.Tensor) else ()
        shape_b = tuple(b.shape) if isinstance(b, torch.Tensor) else ()
        entry = _Entry(name=f"{'div' if divide else 'mul'}#{self._functional_count}", module=None,
                       rule=PassThrough(), state=(mode, shape_a, shape_b), a_in=a_in, b_in=b_in)
        entry.split = lambda R, e=entry: self._apply_product(e, R)
        self._entries.append(entry)
        ta = a if a_in else torch.zeros((), dtype=y.dtype, device=y.device)
        tb = b if b_in else torch.zeros((), dtype=y.dtype, device=y.device)
        return _PairFn.apply(ta, tb, y.detach(), self, entry)

    # ---- backward --------------------------------------------------------------------------
    def _tick(self):
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, len(self._entries))

    def _record(self, name, kind, op, before, after):
        if self._ledger is not None:
            self._ledger.record(name, kind, op, before, after)

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

    def _apply_product(self, entry: _Entry, R: torch.Tensor):
        mode, shape_a, shape_b = entry.state
        share = R * 0.5 if mode == "uniform" else R
        Ra = _sum_to(share, shape_a) if entry.a_in and mode in ("a", "uniform") else None
        Rb = _sum_to(share, shape_b) if entry.b_in and mode in ("b", "uniform") else None
        if entry.a_in and Ra is None:
            Ra = torch.zeros(shape_a, dtype=R.dtype, device=R.device)  # the gate gets none
        if entry.b_in and Rb is None:
            Rb = torch.zeros(shape_b, dtype=R.dtype, device=R.device)
        handed = sum(r.sum() for r in (Ra, Rb) if r is not None)
        self._record(entry.name, "product", f"signal-take-all ({mode})", R.sum(), handed)
        self._tick()
        return Ra, Rb

    def _attention(self, func, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False):
        """F.scaled_dot_product_attention as its parts, each with its rule: scores = q k^T (uniform epsilon),
        times the scale (a constant), the mask (a boolean mask fills -inf, booked; a float mask is a constant
        added), softmax (AttnLRP, or constant weights under CP-LRP), then att v (uniform epsilon)."""
        if (dropout_p and self.module.training) or enable_gqa or not any(map(_in_graph, (query, key, value))):
            out = func(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                       scale=scale, enable_gqa=enable_gqa)
            if any(map(_in_graph, (query, key, value))):
                self.unhandled[_op_label(func)] = self.unhandled.get(_op_label(func), 0) + 1
            return out
        s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        scores = self._product(self._multilinear(torch.matmul, (query, key.transpose(-2, -1)), {}), s)
        n, m = scores.shape[-2:]
        if is_causal:
            keep = torch.ones(n, m, dtype=torch.bool, device=scores.device).tril()
            scores = self._masked(scores, ~keep)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = self._masked(scores, ~attn_mask)
            else:
                scores = self._residual(scores, attn_mask, 1.0)
        att = torch.softmax(scores, dim=-1)
        if self.preset.attention == "cp-lrp":
            att = att.detach()
        else:
            att = self._wrap_functional(Softmax(), F.softmax, scores, att, {"dim": -1})
        return self._multilinear(torch.matmul, (att, value), {})

    def _masked(self, x, mask):
        out = x.masked_fill(mask, float("-inf"))
        return self._wrap_functional(Routing(), torch.Tensor.masked_fill, x, out)

    def _apply_multilinear(self, entry: _Entry, R: torch.Tensor):
        if entry.state is None:
            raise RuntimeError("this propagation was released (retain=False); make a new Propagation")
        y, leaves, eps = entry.state
        s = divide_stabilised(R, y.detach(), eps)
        grads = torch.autograd.grad(y, leaves, s, retain_graph=self._retain, allow_unused=True)
        n = len(leaves)
        out = [torch.zeros_like(leaf) if g is None else g.mul_(leaf.detach()).div_(n)
               for g, leaf in zip(grads, leaves)]
        if not self._retain:
            entry.state = None
        self._record(entry.name, "product", f"epsilon ({'uniform' if n == 2 else 'linear'})", R.sum(),
                     sum(r.sum() for r in out))
        self._tick()
        return out[0], (out[1] if n == 2 else None)

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
            if key not in ("input", "output") and is_glob(key) and matches(name, key):
                return f
        return None

    def propagate(self, start: torch.Tensor, filters: Mapping[str, Filter] | None = None,
                  keep=None, progress: Callable[[int, int], None] | None = None,
                  retain: bool = True) -> PropagationResult:
        """Propagate ``start`` (relevance at the output) to the input; no forward pass runs.

        Parameters
        ----------
        start : torch.Tensor
            Relevance at the output, shaped like the output.
        filters : Mapping[str, Filter], optional
            {'output' | 'input' | module name | glob: Filter}.
        keep : bool or list of str, optional
            Module names (or globs, or True for all) whose output relevance to return.
        progress : callable(done, total), optional
            Called after every rule application; may raise :class:`Cancelled`.
        retain : bool
            False frees the kept forward pass while propagating (one-shot use, the memory of a gradient pass).

        Returns
        -------
        PropagationResult
            Relevance like the input, the kept layers' relevance and the ledger.
        """
        start = torch.as_tensor(start).detach().to(device=self.output.device, dtype=self.output.dtype)
        if start.shape != self.output.shape:
            raise ValueError(f"start relevance has shape {tuple(start.shape)}, the output {tuple(self.output.shape)}")
        filters = self._checked_filters(filters)
        names = [n for n in self._names.values() if n]
        if keep is not True:
            check_placements(keep or (), self.called, "kept layer", type(self.module).__name__)
        keep_set = set(names) if keep is True else expand(keep or (), names)
        with self._backward(filters, keep_set, progress, retain):
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
            return self._result(R, filters)

    def _checked_filters(self, filters) -> dict:
        """The filters that act (None and Identity dropped), each a Filter, each placed on a module."""
        filters = {k: v for k, v in (filters or {}).items() if v is not None and not isinstance(v, Identity)}
        for key, f in filters.items():
            if not isinstance(f, Filter) and not callable(f):
                raise TypeError(f"filter for {key!r} is {type(f).__name__}, not a Filter")
        check_placements(filters, self.called, "filter", type(self.module).__name__, reserved=("input", "output"))
        return filters

    @contextlib.contextmanager
    def _backward(self, filters: dict, keep: set, progress, retain: bool) -> Iterator[None]:
        """One backward pass's state (filters, kept layers, ledger, progress), under the lock, cleared after."""
        with self._lock:
            self._filters, self._keep, self._kept = filters, keep, {}
            self._ledger = Ledger()
            self._progress, self._done = progress, 0
            self._retain = retain
            try:
                yield
            finally:
                self._filters, self._keep, self._kept, self._progress = {}, set(), {}, None
                self._ledger = None

    def _result(self, R: torch.Tensor | None, filters: dict) -> PropagationResult:
        """The relevance that reached the input (zero where none did) through the 'input' filter, with the
        ledger closed and the kept layers."""
        if R is None:
            R = torch.zeros_like(self.x)
        unfiltered = R.detach()
        if "input" in filters:
            Rf = filters["input"](R)
            self._record("input", "filter", repr(filters["input"]), float(R.sum(dtype=torch.float64)),
                         float(Rf.sum(dtype=torch.float64)))
            R = Rf
        self._ledger.end = float(R.sum(dtype=torch.float64))
        self._ledger.unhandled = dict(self.unhandled)
        self._ledger.to_floats()
        return PropagationResult(R.detach(), dict(self._kept), self._ledger, unfiltered)

    @property
    def layer_rules(self) -> dict[str, Rule]:
        """{layer name: the rule it has now} for every module the engine applied a rule to."""
        return {e.name: e.rule for e in self._entries if e.module is not None}

    def replace_rules(self, rules: Mapping, incompatible: str = "raise") -> list[str]:
        """Give layers new rules without a new forward pass, where the kept forward state allows it.

        Between epsilon rules (any epsilon), and among gamma, alpha-beta and z-plus (the same kept input, output
        and weights).

        Parameters
        ----------
        rules : Mapping
            {layer name | glob | type: Rule}.
        incompatible : str
            'raise': a layer whose rule cannot be swapped so (e.g. z-box to gamma) raises ValueError naming it
            (make a new Propagation); 'keep': it keeps its rule.

        Returns
        -------
        list of str
            The layers changed.
        """
        leaves = [n for n, leaf in self.called.items() if leaf]
        check_placements(rules, leaves, "rule", type(self.module).__name__,
                         containers=[n for n, leaf in self.called.items() if not leaf])
        changed = []
        names = {id(m): n for n, m in self.module.named_modules()}
        for entry in self._entries:
            if entry.module is None:
                continue
            name = entry.name.split("#")[0]
            new = None
            if name in rules:
                new = rules[name]
            else:
                for key, rule in rules.items():  # a glob or type only where the rule can handle the layer
                    if isinstance(key, str) and is_glob(key) and matches(name, key) and can_handle(rule, entry.module):
                        new = rule
                        break
                    if isinstance(key, type) and isinstance(entry.module, key) and can_handle(rule, entry.module):
                        new = rule
                        break
            if new is None or new == entry.rule:
                continue
            signed = (Gamma, AlphaBeta)
            if isinstance(entry.rule, signed) and isinstance(new, signed) and isinstance(entry.state, SignedState):
                entry.state.cache = None
            elif not (type(entry.rule) is Epsilon and type(new) is Epsilon and isinstance(entry.state, tuple)
                      and entry.state[0] == "linear"):
                if incompatible == "keep":
                    continue
                raise ValueError(f"{names.get(id(entry.module), name)}: {entry.rule!r} cannot become {new!r} "
                                 "without a new forward pass; make a new Propagation with these rules")
            entry.rule = new
            changed.append(entry.name)
        return changed

    @property
    def n_rules(self) -> int:
        """Rule applications per backward pass (the progress total)."""
        return len(self._entries)

    def release(self) -> None:
        """Free the kept forward pass."""
        self._entries.clear()
        self.outputs.clear()
        self.out = None

    def propagate_from(self, conditions: list[tuple[str, torch.Tensor]], start: torch.Tensor,
                       filters: Mapping[str, Filter] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> PropagationResult:
        """Conditional relevance (CRP, Achtibat et al. 2023): from layer to layer down, only the masked channels.

        The first mask multiplies ``start``; the relevance then flows from that layer down only (relevance that
        bypasses it, such as a skip connection around it, is not included: zennit-crp's ``exclude_parallel``),
        reaching the next layer of ``conditions``, whose mask multiplies it, and so on to the input. No forward
        pass runs; the ledger starts at the masked start relevance.

        Parameters
        ----------
        conditions : list of (str, torch.Tensor)
            [(module name, channel mask (C',) bool), ...] from the latest layer in forward order to the earliest.
        start : torch.Tensor
            The relevance at the first layer's output (its kept relevance), shaped like that output.
        filters : Mapping[str, Filter], optional
            As in :meth:`propagate` ('output' does not apply).
        progress : callable(done, total), optional
            Called after every rule application.

        Returns
        -------
        PropagationResult
        """
        names = [n for n, _mask in conditions]
        missing = [n for n in names if n not in self.outputs]
        if missing:
            raise ValueError(f"no output of {', '.join(missing)} in this forward pass (modules called: "
                             f"{', '.join(list(self.outputs)[:8])} ...)")
        filters = self._checked_filters(filters)
        with self._backward(filters, set(), progress, True):
            R = start.detach().to(self.outputs[names[0]].dtype) * _channel_mask(conditions[0][1], start)
            self._ledger.start = float(R.sum(dtype=torch.float64))
            with _full_precision(R.device):
                for (name, _m), (nxt, mask) in zip(conditions, conditions[1:]):
                    (R,) = torch.autograd.grad(self.outputs[name], self.outputs[nxt], R, retain_graph=True,
                                               allow_unused=True)
                    if R is None:
                        raise ValueError(f"{nxt} is not below {name} in the network (no relevance flows "
                                         "from one to the other); order the conditions from the output down")
                    R = R * _channel_mask(mask, R)
                (R,) = torch.autograd.grad(self.outputs[names[-1]], self.x, R, retain_graph=True,
                                           allow_unused=True)
            return self._result(R, filters)


def _channel_mask(mask: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """A (C',) channel mask shaped to multiply relevance (N, C', *spatial)."""
    mask = torch.as_tensor(mask, device=R.device)
    if mask.ndim != 1 or mask.shape[0] != R.shape[1]:
        raise ValueError(f"a channel mask of shape {tuple(mask.shape)} for a layer with {R.shape[1]} channels")
    return mask.to(R.dtype).reshape(1, -1, *([1] * (R.ndim - 2)))


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    while t.ndim > len(shape):
        t = t.sum(dim=0)
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def propagate(module: nn.Module, x: torch.Tensor, start: torch.Tensor, rules: RulesArg = "lrp0",
              filters: Mapping[str, Filter] | None = None, keep=None, bounds=None, return_ledger: bool = False,
              strict: bool = False, output_index=None):
    """Relevance at the input of ``module`` for relevance ``start`` at its output: one forward, one backward pass.

    Operations without a rule warn (:class:`UnhandledOperationWarning`); ``strict=True`` raises instead.

    Parameters
    ----------
    module : torch.nn.Module
        An eval-mode network.
    x : torch.Tensor
        Its input (N, C, *spatial).
    start : torch.Tensor
        Relevance at the output, shaped like the (selected) output.
    rules : str or Mapping
        A preset name or {module name | glob | type: Rule} over the defaults.
    filters : Mapping[str, Filter], optional
        See :meth:`Propagation.propagate`.
    keep : bool or list of str, optional
        Layers whose relevance to return (a PropagationResult is returned then).
    bounds : tuple, optional
        (low, high) input bounds for z-box.
    return_ledger : bool
        Return ``(relevance, ledger)``.
    strict : bool
        Raise on an operation without a rule.
    output_index : int or str, optional
        The output of a network that returns a list, tuple or dict.

    Returns
    -------
    torch.Tensor, tuple or PropagationResult
        The relevance like ``x``; ``(relevance, ledger)`` with ``return_ledger`` (``ledger.unaccounted``: the
        share of the start relevance no rule accounted for); a PropagationResult with ``keep``.
    """
    prop = Propagation(module, x, rules=rules, bounds=bounds, strict=strict, output_index=output_index)
    try:
        res = prop.propagate(start, filters=filters, keep=keep, retain=False)
    finally:
        prop.release()
    if keep:
        return res
    return (res.relevance, res.ledger) if return_ledger else res.relevance
