"""A MONAI bundle's configuration read as data: JSON or YAML, MONAI's references, restricted ``$`` expressions.

MONAI's ``ConfigParser`` runs every ``$`` string as Python (imports, calls, files, sockets). napari-lrp reads the
same files and runs nothing: only the entries an explanation needs are resolved (the network definition, the
kept pre-processing transforms, the inferer, the checkpoint loader's path, the post-processing), each when it
is asked for, so an expression in an entry that is never used is never looked at.

References, as MONAI writes them: ``@id`` (``#`` separates nested keys and list indices: ``@a#b#0``), relative
``@#key`` (a sibling) and ``@##key`` (one level up), and the macro ``%file#id`` (``%#id``: this file), whose
file must lie inside the bundle. ``$`` expressions go through :func:`evaluate_expression`: literals, arithmetic,
comparisons, ``and``/``or``/``not``, conditionals, indexing and slicing, ``@`` references, the functions in
:data:`FUNCTIONS` and the constants in :data:`CONSTANTS`. Anything else (an import, an attribute of a value, a
call of another function, a comprehension) is refused with the key path and the expression. A ``lambda``
(a postprocessing step's ``func``) is a function whose body follows the same rules, checked before it is called.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .card import ModelError, read_json

__all__ = ["CONFIG_NAMES", "CONSTANTS", "FUNCTIONS", "BundleConfig", "evaluate_expression"]

#: inference configuration files, in the order they are looked for
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: the longest ``range`` and the most values a reference may expand to
MAX_RANGE = 100_000
MAX_RESOLVED_VALUES = 100_000
MAX_REFERENCE_DEPTH = 64

#: names an expression may read, with their values (dtypes; the device is napari-lrp's choice, not the file's)
CONSTANTS: dict[str, Any] = {
    **{f"torch.{n}": getattr(torch, n) for n in ("float16", "float32", "float64", "bfloat16", "half", "float",
                                                  "double", "int8", "int16", "int32", "int64", "uint8", "bool",
                                                  "long", "int")},
    **{f"{np_}.{n}": n for np_ in ("np", "numpy") for n in ("float16", "float32", "float64", "int8", "int16",
                                                             "int32", "int64", "uint8", "bool_")},
    **{f"monai.utils.CommonKeys.{k}": k.lower() for k in ("IMAGE", "LABEL", "PRED", "LOSS", "METADATA")},
    "math.pi": math.pi, "math.e": math.e, "True": True, "False": False, "None": None,
}


def _range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ValueError(f"range of {len(r):,} values (at most {MAX_RANGE:,})")
    return r


def _device(*_args, **_kwargs) -> str:
    # where the network runs is load_model's device= argument; a bundle's own choice ('cuda:0') is not applied
    return "cpu"


#: functions an expression may call (pure, bounded; ``torch.load`` and the ``os.path`` tests are given the
#: bundle's folder by :class:`BundleConfig`, which refuses paths outside it)
FUNCTIONS: dict[str, Any] = {
    "len": len, "min": min, "max": max, "abs": abs, "int": int, "float": float, "round": round, "sum": sum,
    "bool": bool, "str": str, "list": list, "tuple": tuple, "sorted": sorted, "range": _range,
    "torch.device": _device, "torch.cuda.is_available": lambda: False, "torch.as_tensor": torch.as_tensor,
    "torch.tensor": torch.tensor, "torch.from_numpy": torch.as_tensor, "os.path.join": os.path.join,
    "os.path.basename": os.path.basename, "os.path.dirname": os.path.dirname, "torch.where": torch.where,
}

#: the most bits a whole-number power may take (9**9**9 would run for hours)
MAX_POWER_BITS = 65_536


def _power(base, exponent):
    if isinstance(exponent, int) and isinstance(base, int) and max(base.bit_length(), 1) * abs(exponent) > \
            MAX_POWER_BITS:
        raise ValueError(f"a power of {base.bit_length()}-bit {base if base.bit_length() < 64 else '...'} to "
                         f"{exponent} (at most {MAX_POWER_BITS:,} bits)")
    return operator.pow(base, exponent)


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_REFERENCE = re.compile(r"@(#*[A-Za-z0-9_]*(?:#[A-Za-z0-9_]+)*)")


def _dotted(node: ast.AST) -> str | None:
    """'torch.float32' for the attribute chain torch.float32 of plain names; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


class _Evaluator:
    def __init__(self, names: dict[str, Any], functions: dict[str, Any], refuse):
        self.names, self.functions, self.refuse = names, functions, refuse

    def __call__(self, node: ast.AST):
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            values = [self(e) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values) if isinstance(node, ast.Tuple) \
                else set(values)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                self.refuse("'**' in a dict")
            return {self(k): self(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](self(node.left), self(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self(node.operand))
        if isinstance(node, ast.BoolOp):
            value = None
            for v in node.values:
                value = self(v)
                if isinstance(node.op, ast.And) != bool(value):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self(node.left)
            if len(node.ops) == 1:  # its value as it is (a tensor of booleans in a lambda over images)
                return _COMPARE[type(node.ops[0])](left, self(node.comparators[0]))
            for op, comp in zip(node.ops, node.comparators):
                right = self(comp)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self(node.body) if self(node.test) else self(node.orelse)
        if isinstance(node, ast.Subscript):
            return self(node.value)[self(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(None if p is None else self(p) for p in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.JoinedStr):
            return "".join(str(self(v.value)) if isinstance(v, ast.FormattedValue) else self(v) for v in node.values)
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name in self.names:
                return self.names[name]
            if name in CONSTANTS:
                return CONSTANTS[name]
            self.refuse(f"the name {name or ast.unparse(node)!r} (readable: @ references and "
                        f"{', '.join(sorted(k for k in CONSTANTS if '.' in k))})")
        if isinstance(node, ast.Lambda):
            return self._lambda(node)
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name not in self.functions:
                self.refuse(f"a call of {name or ast.unparse(node.func)!r} (callable: "
                            f"{', '.join(sorted(self.functions))})")
            args = [self(a) for a in node.args]
            kwargs = {k.arg: self(k.value) for k in node.keywords if k.arg is not None}
            if len(kwargs) != len(node.keywords):
                self.refuse("'**' in a call")
            return self.functions[name](*args, **kwargs)
        self.refuse(f"{type(node).__name__} ({ast.unparse(node)!r})")

    def _lambda(self, node: ast.Lambda):
        """A function of plain arguments whose body is evaluated by the same rules (a postprocessing step's
        ``func``): defaults, ``*args`` and keyword-only arguments are refused."""
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
            self.refuse(f"a lambda with defaults or starred arguments ({ast.unparse(node)!r})")
        params = [p.arg for p in a.args]

        def call(*values):
            if len(values) != len(params):
                raise TypeError(f"the lambda takes {len(params)} arguments, got {len(values)}")
            return _Evaluator({**self.names, **dict(zip(params, values))}, self.functions, self.refuse)(node.body)

        _Evaluator({**self.names, **{p: None for p in params}}, self.functions, self.refuse).check(node.body)
        return call

    def check(self, node: ast.AST) -> None:
        """Refuse, before any call, a lambda body that uses syntax or names outside the restricted set."""
        # names: the callee of a call is checked as a function, the rest must be readable
        callees = {id(n) for c in ast.walk(node) if isinstance(c, ast.Call) for n in ast.walk(c.func)}
        outer = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Name, ast.Attribute)) and id(sub) not in callees | outer \
                    and _dotted(sub) not in self.names and _dotted(sub) not in CONSTANTS:
                self.refuse(f"the name {_dotted(sub) or ast.unparse(sub)!r} (readable: the lambda's arguments, "
                            f"@ references and {', '.join(sorted(k for k in CONSTANTS if '.' in k))})")
            if isinstance(sub, ast.Call) and _dotted(sub.func) not in self.functions:
                self.refuse(f"a call of {_dotted(sub.func) or ast.unparse(sub.func)!r} (callable: "
                            f"{', '.join(sorted(self.functions))})")
            if isinstance(sub, (ast.Name, ast.Attribute)) and not isinstance(sub.ctx, ast.Load):
                self.refuse(f"an assignment ({ast.unparse(sub)!r})")
            allowed = (ast.expr, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.keyword,
                       ast.arguments, ast.arg)
            if not isinstance(sub, allowed) or isinstance(sub, (ast.ListComp, ast.SetComp, ast.DictComp,
                                                                 ast.GeneratorExp, ast.Await, ast.Yield,
                                                                 ast.YieldFrom, ast.NamedExpr, ast.Starred)):
                self.refuse(f"{type(sub).__name__} ({ast.unparse(sub)!r})")


def evaluate_expression(expression: str, references: dict[str, Any] | None = None, where: str = "",
                        functions: dict[str, Any] | None = None, spelled: dict[str, str] | None = None):
    """Evaluate a bundle's ``$`` expression without running code.

    Parameters
    ----------
    expression : str
        The text after ``$`` (``@`` references already replaced by names found in ``references``).
    references : dict, optional
        {name: value} the expression may read.
    where : str
        The configuration file and key path, named in refusals.
    functions : dict, optional
        Callable names, default :data:`FUNCTIONS`.
    spelled : dict, optional
        {name in ``references``: the reference as the file writes it}, for messages.

    Returns
    -------
    object
        The value.

    Raises
    ------
    ModelError
        For syntax outside the restricted set, with ``where`` and the expression.
    """
    def as_written(text: str) -> str:
        for name, ref in (spelled or {}).items():
            text = text.replace(name, ref)
        return text

    def refuse(what: str):
        raise ModelError(f"{where}: the expression {as_written('$' + expression)!r} uses {as_written(what)}; "
                         "napari-lrp evaluates only literals, arithmetic, comparisons, conditionals, indexing, "
                         "@ references and the listed functions (it runs no code from bundles). Replace it by a "
                         "literal value")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        if expression.strip().startswith(("import ", "from ")):
            refuse("an import")
        refuse("a statement")
    try:
        return _Evaluator(dict(references or {}), FUNCTIONS if functions is None else functions, refuse)(tree)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - arithmetic on the file's values fails in many ways
        raise ModelError(f"{where}: the expression {as_written('$' + expression)!r} cannot be evaluated: "
                         f"{type(exc).__name__}: {exc}") from exc


def _split_id(ref: str) -> list[str]:
    return ref.split("#")


@dataclass
class BundleConfig:
    """One inference configuration of a bundle, resolved on demand.

    Parameters
    ----------
    folder : Path
        The bundle's folder (``bundle_root`` resolves to it, whatever the file says).
    path : Path
        The configuration file.
    data : dict
        Its content.
    """

    folder: Path
    path: Path
    data: dict
    _files: dict = field(default_factory=dict, repr=False)
    _budget: list = field(default_factory=lambda: [MAX_RESOLVED_VALUES], repr=False)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> BundleConfig:
        """The bundle's inference configuration (configs/inference.json, .yaml or .yml).

        Parameters
        ----------
        folder : str or os.PathLike
            The bundle's folder.

        Returns
        -------
        BundleConfig
        """
        folder = Path(folder)
        for name in CONFIG_NAMES:
            path = folder / "configs" / name
            if path.is_file():
                return cls(folder=folder, path=path, data=_read_document(path))
        raise ModelError(f"{folder}: not a MONAI bundle: configs/ holds none of {', '.join(CONFIG_NAMES)}")

    @property
    def source(self) -> str:
        """The configuration file, for messages.

        Returns
        -------
        str
        """
        return str(self.path)

    def has(self, ref: str) -> bool:
        """Whether ``ref`` (an id such as ``inferer#roi_size``) exists.

        Parameters
        ----------
        ref : str
            The id, without '@'.

        Returns
        -------
        bool
        """
        try:
            self._lookup(self.data, _split_id(ref), ref, self.source)
            return True
        except ModelError:
            return False

    def raw(self, ref: str):
        """The unresolved value at an id.

        Parameters
        ----------
        ref : str
            The id, without '@' (``a#b#0``).

        Returns
        -------
        object
        """
        return self._lookup(self.data, _split_id(ref), ref, self.source)

    def get(self, ref: str, default=None):
        """The resolved value at an id, or ``default`` when it does not exist.

        Parameters
        ----------
        ref : str
            The id, without '@'.
        default : object
            Returned when the id does not exist.

        Returns
        -------
        object
        """
        if not self.has(ref):
            return default
        return self.resolve(self.raw(ref), ref)

    def compose(self, ref: str) -> tuple[object, list[tuple[str, str, object]] | None]:
        """A Compose entry (``preprocessing``, ``postprocessing``): its target and its transforms, each
        resolved only as far as naming it needs.

        Parameters
        ----------
        ref : str
            The entry's id.

        Returns
        -------
        tuple
            (the Compose's ``_target_``, None for a plain list; [(id, name for messages, item)]). An item the
            file writes in place comes unresolved under its id; an item a reference or an expression made comes
            resolved. The list is None when the entry is neither a Compose nor a list.
        """
        value, base = self.raw(ref), ref
        if isinstance(value, str):  # '@transforms' or '$@a + @b': the list they name
            value, base = self.resolve(value, ref), None
        target = None
        if isinstance(value, dict) and "_target_" in value:
            target = self.resolve(value["_target_"], f"{ref}#_target_") if base else value["_target_"]
            items = value.get("transforms") or []
            if isinstance(items, str) and base:
                items, base = self.resolve(items, f"{ref}#transforms"), None
            elif base:
                base = f"{ref}#transforms"
        elif isinstance(value, list):
            items = value
        else:
            return target, None
        out = []
        for i, item in enumerate(items if isinstance(items, list) else []):
            where = f"{ref}.transforms[{i}]"
            at = f"{base}#{i}" if base else where
            out.append((at, where, self.resolve(item, at) if base and isinstance(item, str) else item))
        return target, out

    def disabled(self, item: dict, at: str) -> bool:
        """Whether a component is switched off (``_disabled_``, a value or an expression).

        Parameters
        ----------
        item : dict
            The component as written.
        at : str
            Its id.

        Returns
        -------
        bool
        """
        value = self.resolve(item.get("_disabled_", False), f"{at}#_disabled_")
        return value is True or (isinstance(value, str) and value.lower() == "true")

    def resolve(self, value, where: str, chain: tuple[str, ...] = ()):
        """``value`` with its references, macros and expressions resolved.

        Parameters
        ----------
        value : object
            A value of this configuration.
        where : str
            Its id (relative references count from it; named in refusals).
        chain : tuple of str
            The references followed so far (a cycle is refused).

        Returns
        -------
        object
        """
        self._budget[0] -= 1
        if self._budget[0] < 0:
            raise ModelError(f"{self.source}: the references under {where or 'the configuration'} expand to more "
                             f"than {MAX_RESOLVED_VALUES:,} values; a bundle's configuration is not that large: "
                             "check the '@' references")
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{where}#{k}" if where else str(k), chain) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{where}#{i}", chain) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if value.startswith("@") and _REFERENCE.fullmatch(value):
            return self._follow(value[1:], where, chain)
        if value.startswith("%"):
            return self._macro(value[1:], where, chain)
        if value.startswith("$"):
            return self._expression(value[1:], where, chain)
        return value

    def _follow(self, ref: str, where: str, chain: tuple[str, ...]):
        ref = self._absolute(ref, where)
        if ref == "bundle_root":
            return str(self.folder)
        if ref in chain:
            raise ModelError(f"{self.source}: reference '@{ref}' refers to itself "
                             f"({' -> '.join('@' + k for k in (*chain, ref))}); replace it by a value")
        if len(chain) >= MAX_REFERENCE_DEPTH:
            raise ModelError(f"{self.source}: reference '@{ref}' is more than {MAX_REFERENCE_DEPTH} references deep "
                             f"({' -> '.join('@' + k for k in chain[:4])} ...)")
        try:
            raw = self._lookup(self.data, _split_id(ref), ref, self.source)
        except ModelError as exc:
            raise ModelError(f"{exc} (referred to by {where or 'the configuration'})") from None
        return self.resolve(raw, ref, (*chain, ref))

    @staticmethod
    def _absolute(ref: str, where: str) -> str:
        """A relative id (``#b``: a sibling of ``where``; ``##b``: one level up) as an absolute one."""
        if not ref.startswith("#"):
            return ref
        levels = len(ref) - len(ref.lstrip("#"))
        parts = where.split("#")[:-levels] if where else []
        return "#".join([*parts, ref.lstrip("#")])

    @staticmethod
    def _lookup(data, parts: list[str], ref: str, source: str):
        value = data
        for i, part in enumerate(parts):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                at = "#".join(parts[:i]) or "the top level"
                raise ModelError(f"{source}: reference '@{ref}' not found in the config (no {part!r} under {at})")
        return value

    def _macro(self, text: str, where: str, chain: tuple[str, ...]):
        file, _, ref = text.partition("#")
        if not file:
            return self.resolve(self._lookup(self.data, _split_id(ref), ref, self.source), ref, chain)
        path = (self.folder / file).resolve()
        if not path.is_relative_to(self.folder.resolve()):
            raise ModelError(f"{self.source}: {where} takes {'%' + text!r} from outside the bundle; napari-lrp reads "
                             "only the bundle's own files")
        if not path.is_file():
            raise ModelError(f"{self.source}: {where} takes {'%' + text!r} but {path} does not exist")
        if path not in self._files:
            self._files[path] = BundleConfig(folder=self.folder, path=path, data=_read_document(path))
        other = self._files[path]
        return other.resolve(other._lookup(other.data, _split_id(ref), ref, other.source), ref)

    def _expression(self, text: str, where: str, chain: tuple[str, ...]):
        names: dict[str, Any] = {}
        spelled: dict[str, str] = {}

        def replace(m: re.Match) -> str:
            name = f"__ref_{len(names)}"
            names[name], spelled[name] = self._follow(m.group(1), where, chain), m.group(0)
            return name

        code = _REFERENCE.sub(replace, text)
        functions = {**FUNCTIONS, "torch.load": self._load, "os.path.exists": self._exists,
                     "os.path.isfile": self._exists}
        return evaluate_expression(code, names, f"{self.source}: {where}", functions, spelled)

    def _inside(self, path) -> Path:
        p = Path(str(path))
        p = (p if p.is_absolute() else self.folder / p).resolve()
        if not p.is_relative_to(self.folder.resolve()):
            raise ModelError(f"{self.source}: {p} is outside the bundle; napari-lrp reads only the bundle's own files")
        return p

    def _exists(self, path) -> bool:
        return self._inside(path).exists()

    def _load(self, path, map_location=None, **_kwargs):
        """torch.load of a file inside the bundle with weights_only=True (numpy arrays allowed as data)."""
        import numpy as np

        p = self._inside(path)
        core = getattr(np, "_core", None) or np.core
        safe = [np.ndarray, np.dtype, core.multiarray._reconstruct] + [type(np.dtype(t)) for t in
                                                                       ("f4", "f8", "i4", "i8", "u1", "?")]
        with torch.serialization.safe_globals(safe):
            return torch.load(str(p), map_location="cpu", weights_only=True)


def _read_document(path: Path) -> dict:
    """A JSON or YAML configuration file as a dict, refused by name when it is neither."""
    if path.suffix.lower() == ".json":
        return read_json(path, whole=" (the bundle's configuration)")
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: the bundle's configuration must be a mapping of keys to values, not "
                         f"{type(doc).__name__}")
    return doc
