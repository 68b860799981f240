"""Channel names: one modality under the names different releases, archives and models give it.

BraTS has named its four MRI sequences differently in every release (2018-2021: t1, t1ce, t2, flair; 2023:
t1n, t1c, t2w, t2f; the Medical Segmentation Decathlon and nnU-Net's Dataset001: T1w, t1gd, T2w, FLAIR; the
MONAI Model Zoo's bundle: T1c, T1, T2, FLAIR). A case's channels are matched to a model's by these names,
never by position: :func:`canonical_channel` maps every spelling to one key, compared ignoring case and
punctuation. ISLES-2017 names (ADC, MTT, rCBF, rCBV, Tmax, TTP) are their own keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["CHANNEL_ALIASES", "canonical_channel", "match_channels"]

#: {canonical key: the spellings that mean it} (compared lower-case, without punctuation)
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1native", "t1pre"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1wce", "t1post", "t1contrast", "t1wgd"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2flair", "t2wflair"),
}
_LOOKUP = {alias: key for key, aliases in CHANNEL_ALIASES.items() for alias in aliases}


def _compact(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


def canonical_channel(name: str) -> str:
    """The key a channel name is matched by.

    The BraTS spellings of one sequence give one key (``canonical_channel('T1Gd') ==
    canonical_channel('t1c') == 't1ce'``); any other name its lower-case letters and digits.

    Parameters
    ----------
    name : str
        A channel's name as a file, a card or dataset.json writes it.

    Returns
    -------
    str
    """
    compact = _compact(name)
    return _LOOKUP.get(compact, compact)


def match_channels(have: Sequence[str], want: Sequence[str], source: str = "case") -> list[int]:
    """Indices into ``have`` (a case's channel names) for each name of ``want`` (a model's), by name.

    Parameters
    ----------
    have : sequence of str
        The case's channel names, in its order.
    want : sequence of str
        The names asked for (the model's channels), in the order wanted.
    source : str
        The case, for messages.

    Returns
    -------
    list of int
        ``have``'s index for each name of ``want``. A model with one channel takes a case with one
        channel whatever its name.

    Raises
    ------
    ValueError
        A wanted name the case lacks (naming it and the case's names), or two case channels that are the
        same channel under different spellings.
    """
    have, want = [str(h) for h in have], [str(w) for w in want]
    if len(want) == 1 and len(have) == 1:
        return [0]
    keys = [canonical_channel(h) for h in have]
    doubled = sorted({h for h, k in zip(have, keys) if keys.count(k) > 1})
    if doubled:
        raise ValueError(f"{source}: the channels {', '.join(doubled)} are the same channel under different names; "
                         "keep one of them")
    missing = [w for w in want if canonical_channel(w) not in keys]
    if missing:
        raise ValueError(f"{source}: the model needs modalities {', '.join(want)} but the case has "
                         f"{', '.join(have)} (missing: {', '.join(missing)}); names are matched ignoring case and "
                         "punctuation, every BraTS release's spelling of T1, T1ce, T2 and FLAIR alike")
    return [keys.index(canonical_channel(w)) for w in want]
