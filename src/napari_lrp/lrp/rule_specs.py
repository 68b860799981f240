"""Rules as JSON: a run's rules mapping written into its settings and read back exactly.

A rules mapping ``{module name | glob | module type: Rule}`` becomes a list of specs
``{"at": "encoders.1.*", "rule": "Gamma", "params": {"gamma": 0.25, "epsilon": 1e-06}}``; a type key is
written ``"type:Conv3d"`` and read back only from ``torch.nn`` (no other import happens). Rule classes
are found by name among the engine's own rules (:class:`~napari_lrp.lrp.rules.Rule` subclasses of this
package); anything else is refused naming the spec.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .rules import Rule

__all__ = ["rule_classes", "rule_from_spec", "rule_to_spec", "rules_from_specs", "rules_to_specs"]


def rule_classes() -> dict[str, type]:
    """{class name: class} of every rule this package defines (the registry specs are read with).

    Returns
    -------
    dict[str, type]
    """
    out: dict[str, type] = {}
    todo = [Rule]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("napari_lrp.") and not cls.__name__.startswith("_"):
            out[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return out


def _plain(value):
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def rule_to_spec(rule: Rule | None) -> dict:
    """The spec of one rule: its class name and the constructor arguments it holds.

    Parameters
    ----------
    rule : Rule
        A rule of :mod:`napari_lrp.lrp.rules`.

    Returns
    -------
    dict
        ``{"rule": class name, "params": {argument: JSON value}}``.
    """
    if rule is None:  # "no rule": the module is crossed as a plain gradient
        return {"rule": None, "params": {}}
    cls = type(rule)
    if rule_classes().get(cls.__name__) is not cls:
        raise ValueError(f"rule {rule!r} is not one of napari-lrp's rules ({', '.join(sorted(rule_classes()))}); "
                         "it cannot be written into settings")
    params = inspect.signature(cls.__init__).parameters
    held = vars(rule)
    return {"rule": cls.__name__, "params": {k: _plain(held[k]) for k in params if k != "self" and k in held}}


def rule_from_spec(spec: Mapping, where: str = "rules") -> Rule | None:
    """The rule a spec of :func:`rule_to_spec` describes.

    Parameters
    ----------
    spec : Mapping
        {"rule": class name, "params": {...}}.
    where : str
        Names the spec in errors.

    Returns
    -------
    Rule or None
    """
    if isinstance(spec, Mapping) and "rule" in spec and spec["rule"] is None:
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("rule"), str):
        raise ValueError(f"{where}: a rule spec is {{'rule': name, 'params': {{...}}}}, not {spec!r}")
    classes = rule_classes()
    cls = classes.get(spec["rule"])
    if cls is None:
        raise ValueError(f"{where}: unknown rule {spec['rule']!r}; rules are {', '.join(sorted(classes))}")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: 'params' of rule {spec['rule']} must be an object, not {params!r}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"{where}: rule {spec['rule']} does not take {dict(params)!r} ({exc})") from None


def _key_to_text(key) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, type) and getattr(nn, key.__name__, None) is key:
        return f"type:{key.__name__}"
    raise ValueError(f"a rule placed by type {key!r} can be written into settings only for torch.nn types; "
                     "place it by module name or glob instead")


def _key_from_text(text, where: str):
    if not isinstance(text, str) or not text:
        raise ValueError(f"{where}: 'at' must be a module name, a glob or 'type:<torch.nn class>', not {text!r}")
    if text.startswith("type:"):
        cls = getattr(nn, text[5:], None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"{where}: {text!r} names no torch.nn module type (e.g. 'type:Conv3d')")
        return cls
    return text


def rules_to_specs(rules: Mapping | None) -> list[dict]:
    """A rules mapping as JSON-able specs, in its order.

    Parameters
    ----------
    rules : Mapping or None
        {module name | glob | type: Rule}.

    Returns
    -------
    list of dict
        ``[{"at": key, "rule": name, "params": {...}}, ...]``.
    """
    return [{"at": _key_to_text(k), **rule_to_spec(r)} for k, r in (rules or {}).items()]


def rules_from_specs(specs, where: str = "settings 'rules'") -> dict:
    """The rules mapping of :func:`rules_to_specs`'s list.

    Parameters
    ----------
    specs : list of dict or None
        As written into settings.json (None or [] give {}).
    where : str
        Names the specs in errors.

    Returns
    -------
    dict
    """
    if specs is None:
        return {}
    if not isinstance(specs, list):
        raise ValueError(f"{where} must be a list of rule specs, not {type(specs).__name__}")
    out = {}
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{at}: a rule spec is an object with 'at', 'rule' and 'params', not {spec!r}")
        out[_key_from_text(spec.get("at"), at)] = rule_from_spec(spec, at)
    return out
