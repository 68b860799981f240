"""Rule presets: a registry name -> rule set, and the default handling of modules.

A preset maps module types to rules and may give the first linear layer (in forward order) its own rule
(z-box, flat). A ``rules`` mapping given by the caller is laid over the preset: a module name first, then a
glob, then a type; modules nobody names keep :func:`default_rule`.

``PRESETS`` is the registry (read-only view, in menu order); the CLI and the widgets list it.
:func:`register_preset` adds one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from .names import is_glob, matches
from .rules import Epsilon, Flat, Gamma, PassThrough, Rule, Softmax, WinnerTakesAll, ZBox, ZPlus
from .types import (
    ACTIVATION_TYPES,
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    DROPOUT_TYPES,
    LINEAR_TYPES,
    MAXPOOL_TYPES,
    NORM_TYPES,
    SOFTMAX_TYPES,
)

__all__ = ["PRESETS", "Preset", "can_handle", "default_rule", "get_preset", "register_preset", "resolve_rule"]


def default_rule(module: nn.Module) -> Rule | None:
    """The default handling of a module no preset or mapping names.

    Parameters
    ----------
    module : torch.nn.Module
        A module of the network (a layer, an activation, a pooling, a container).

    Returns
    -------
    Rule or None
        LRP-0 for linear maps (its stabiliser touches only exact zeros), PassThrough for activations and
        dropout, winner takes all for max pooling, the AttnLRP rule for softmax; None for a container or an
        operation without a rule.
    """
    if isinstance(module, LINEAR_TYPES + BATCHNORM_TYPES + NORM_TYPES + AVGPOOL_TYPES):
        return Epsilon(0.0)  # LRP-0: only exact zeros are stabilised
    if isinstance(module, ACTIVATION_TYPES + DROPOUT_TYPES):
        return PassThrough()
    if isinstance(module, MAXPOOL_TYPES):
        return WinnerTakesAll()
    if isinstance(module, SOFTMAX_TYPES):
        return Softmax()
    return None


@dataclass
class Preset:
    """A named rule set: ``types`` maps module types to rules; ``first`` is the first linear layer's rule.

    ``attention``: "attnlrp" (softmax by :class:`~.rules.Softmax`, relevance reaches queries and keys) or
    "cp-lrp" (attention weights held constant: all relevance of ``att @ v`` goes to the values, Ali et al.
    2022). ``product_epsilon``: the stabiliser of products of activations (``q @ k``, ``att @ v``, einsum,
    functional linear maps), whose relevance is shared equally among the operands on the relevance path.
    """

    name: str
    types: list[tuple[tuple[type, ...], Rule]] = field(default_factory=list)
    first: Rule | None = None
    description: str = ""
    attention: str = "attnlrp"
    product_epsilon: float = 0.0


#: a preset factory takes the input bounds (low, high) for z-box (None: the input's own range)
PresetFactory = Callable[[tuple | None], Preset]
_REGISTRY: dict[str, PresetFactory] = {}
PRESETS: Mapping[str, PresetFactory] = MappingProxyType(_REGISTRY)


def register_preset(name: str, factory: PresetFactory) -> None:
    """Add (or replace) a preset; the CLI and the docks list it.

    Parameters
    ----------
    name : str
        The preset's name.
    factory : callable(bounds) -> Preset
        Builds the preset for the input's z-box bounds.
    """
    _REGISTRY[name] = factory


def get_preset(name: str, bounds=None) -> Preset:
    """The preset called ``name``.

    Parameters
    ----------
    name : str
        A name of :data:`PRESETS`.
    bounds : tuple, optional
        z-box bounds (low, high), scalars or per channel.

    Returns
    -------
    Preset
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return _REGISTRY[name](bounds)


def _bounds(bounds):
    return (None, None) if bounds is None else bounds


register_preset("paper", lambda b: Preset(
    "paper", [(CONV_TYPES + (nn.Linear,), ZPlus(1e-9)), (BATCHNORM_TYPES + NORM_TYPES, PassThrough())],
    ZBox(*_bounds(b), 1e-9), "z-plus on every layer, z-box on the first, norms pass relevance (the paper)"))
register_preset("epsilon-gamma-box", lambda b: Preset(
    "epsilon-gamma-box", [(CONV_TYPES, Gamma(0.25, 1e-6)), ((nn.Linear,), Epsilon(1e-6))],
    ZBox(*_bounds(b), 1e-6), "gamma 0.25 on convolutions, epsilon on dense layers, z-box on the first"))
register_preset("epsilon-plus-flat", lambda b: Preset(
    "epsilon-plus-flat", [(CONV_TYPES, ZPlus(1e-6)), ((nn.Linear,), Epsilon(1e-6))], Flat(1e-6),
    "z-plus on convolutions, epsilon on dense layers, flat on the first"))
register_preset("lrp0", lambda b: Preset(
    "lrp0", [], None, "LRP-0 everywhere: gradient x input on bias-free piecewise-linear networks"))
register_preset("attnlrp", lambda b: Preset(
    "attnlrp", [(LINEAR_TYPES, Epsilon(1e-6))], None,
    "AttnLRP (transformers): epsilon on layers and products, softmax linearised, norms' std held constant",
    attention="attnlrp", product_epsilon=1e-6))
register_preset("cp-lrp", lambda b: Preset(
    "cp-lrp", [(LINEAR_TYPES, Epsilon(1e-6))], None,
    "CP-LRP (transformers): epsilon everywhere, attention weights and norms' std held constant",
    attention="cp-lrp", product_epsilon=1e-6))


def can_handle(rule: Rule | None, module: nn.Module) -> bool:
    """Whether ``rule`` is meant for ``module``.

    Weight rules for layers with weights, epsilon/LRP-0 for linear and affine maps (layers with weights,
    norms, average pooling), winner-takes-all for max pooling, pass-through for anything. A glob in a
    ``rules`` mapping assigns a rule only where it can handle the module; an exact name or a type assigns it
    as asked.

    Parameters
    ----------
    rule : Rule or None
        The rule.
    module : torch.nn.Module
        The module.

    Returns
    -------
    bool
    """
    if rule is None or isinstance(rule, PassThrough):
        return True
    if rule.needs_weights:
        return isinstance(module, LINEAR_TYPES)
    if isinstance(rule, Epsilon):
        return isinstance(module, LINEAR_TYPES + BATCHNORM_TYPES + NORM_TYPES + AVGPOOL_TYPES)
    if isinstance(rule, WinnerTakesAll):
        return isinstance(module, MAXPOOL_TYPES)
    if isinstance(rule, Softmax):
        return isinstance(module, SOFTMAX_TYPES)
    return True


def resolve_rule(name: str, module: nn.Module, rules: Mapping, preset: Preset, first: bool) -> Rule | None:
    """The rule of one module.

    ``rules`` by exact name, then by glob (only where the rule can handle the module, :func:`can_handle`),
    then by type; then the preset (its first-layer rule when ``first``); then the default.

    Parameters
    ----------
    name : str
        The module's name.
    module : torch.nn.Module
        The module.
    rules : Mapping
        {module name | glob | type: Rule}.
    preset : Preset
        The run's preset.
    first : bool
        Whether the module is the network's first layer.

    Returns
    -------
    Rule or None
    """
    if name in rules and isinstance(rules[name], (Rule, type(None))):
        return rules[name]
    for key, rule in rules.items():
        if isinstance(key, str) and key != name and is_glob(key) and matches(name, key):
            if not can_handle(rule, module):
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
