"""Module names: the one matching rule for rules, filters and kept layers.

A key is a module name ('encoders.1.0') or a glob ('encoders.*', '*block*', 'dec?'); names of repeated
calls carry '#k' ('head#2'). A key matches a name when it equals it or, holding a glob character, matches
it with :func:`fnmatch.fnmatchcase` (case-sensitive, like module names).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

__all__ = ["PlacementError", "is_glob", "matches", "expand", "check_placements", "nearest_names"]


class PlacementError(ValueError):
    """A filter, rule or kept layer placed on a name (or glob) that matches no module of the network."""

_GLOB_CHARS = "*?["


def is_glob(key: str) -> bool:
    """Whether a key holds a glob character (* ? [).

    Parameters
    ----------
    key : str
        A module name or glob.

    Returns
    -------
    bool
    """
    return any(c in key for c in _GLOB_CHARS)


def matches(name: str, key: str) -> bool:
    """Whether a key names a module: equal to its name, or a glob that matches it.

    Parameters
    ----------
    name : str
        The module's name.
    key : str
        A name or glob.

    Returns
    -------
    bool
    """
    return key == name or (is_glob(key) and fnmatch.fnmatchcase(name, key))


def expand(keys: Iterable[str], names: Iterable[str]) -> set[str]:
    """The names that any of the keys matches; a plain key is kept even when no name has it.

    Parameters
    ----------
    keys : iterable of str
        Names and globs.
    names : iterable of str
        The network's module names.

    Returns
    -------
    set of str
    """
    names = list(names)
    out: set[str] = set()
    for key in keys:
        out |= {n for n in names if fnmatch.fnmatchcase(n, key)} if is_glob(key) else {key}
    return out


def nearest_names(key: str, names: Iterable[str], n: int = 5) -> list[str]:
    """The names that read most like a key, for messages that suggest the name meant.

    Parameters
    ----------
    key : str
        The name or glob given (a glob is compared without its glob characters).
    names : iterable of str
        The names there are.
    n : int
        At most this many.

    Returns
    -------
    list of str
        By difflib's similarity ratio, best first.
    """
    names = sorted(set(names))
    probe = key.strip("*?[]") if is_glob(key) else key
    close = difflib.get_close_matches(probe, names, n=n, cutoff=0.5)
    if not close and probe:
        close = [nm for nm in names if probe in nm or nm in probe][:n]
    return close


def check_placements(keys: Iterable, names: Iterable[str], what: str, network: str = "the network",
                     reserved: Iterable[str] = (), containers: Iterable[str] = ()) -> None:
    """Raise :class:`PlacementError` for the first string key of ``keys`` that matches none of ``names``.

    Parameters
    ----------
    keys : iterable
        Placement keys as given (module names, globs; non-string keys such as module types are skipped).
    names : iterable of str
        The names a key may match (the modules that took part in the forward pass).
    what : str
        What was placed ("filter", "rule", "kept layer"), for the message.
    network : str
        The network's name, for the message.
    reserved : iterable of str
        Keys that are always valid (e.g. 'input' and 'output' for filters).
    containers : iterable of str
        Names of modules that exist but cannot take this placement (a rule on a container), named in the
        message with the glob that reaches their layers.
    """
    names = [n for n in names if n]
    reserved, containers = set(reserved), set(containers)
    for key in keys:
        if not isinstance(key, str) or key in reserved:
            continue
        if any(matches(n, key) for n in names):
            continue
        if key in containers:
            raise PlacementError(f"{what} placed on {key!r}: {key!r} is a container of {network}, which has no "
                                 f"{what} of its own; place it on its layers with {key + '.*'!r}")
        near = nearest_names(key, names)
        hint = f"; the nearest names are {', '.join(near)}" if near else ""
        raise PlacementError(f"{what} placed on {key!r} matches no module of {network}{hint} (module names as "
                             f"in network.named_modules(); globs such as 'encoders.*' match several)")
