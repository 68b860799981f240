"""Module names: the one matching rule for rules, filters and kept layers.

A key is a module name ('encoders.1.0') or a glob ('encoders.*', '*block*', 'dec?'); names of repeated
calls carry '#k' ('head#2'). A key matches a name when it equals it or, holding a glob character, matches
it with :func:`fnmatch.fnmatchcase` (case-sensitive, like module names).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

__all__ = ["is_glob", "matches", "expand"]

_GLOB_CHARS = "*?["


def is_glob(key: str) -> bool:
    """True when ``key`` holds a glob character (* ? [)."""
    return any(c in key for c in _GLOB_CHARS)


def matches(name: str, key: str) -> bool:
    """``key`` names ``name``: equal, or a glob that matches it."""
    return key == name or (is_glob(key) and fnmatch.fnmatchcase(name, key))


def expand(keys: Iterable[str], names: Iterable[str]) -> set[str]:
    """The names that any of ``keys`` matches; a plain key is kept even when no name has it."""
    names = list(names)
    out: set[str] = set()
    for key in keys:
        out |= {n for n in names if fnmatch.fnmatchcase(n, key)} if is_glob(key) else {key}
    return out
