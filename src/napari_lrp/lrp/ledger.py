"""The relevance ledger: where relevance went in one propagation.

Per rule application the relevance a layer received and handed on, per filter the relevance before and
after; what is missing was absorbed (biases, stabilisers, filters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Ledger", "LedgerEntry"]


@dataclass
class LedgerEntry:
    """One rule application or filter: relevance ``received`` at the output and ``handed`` to the input."""

    name: str
    kind: str  # 'rule', 'filter', 'residual', 'functional'
    op: str
    received: float
    handed: float

    @property
    def absorbed(self) -> float:
        """Relevance the entry received but did not hand on (biases, stabilisers, a filter's cut)."""
        return self.received - self.handed


@dataclass
class Ledger:
    """Where relevance went in one propagation (per-layer sums in the model dtype, start and end in float64).

    ``start``: total relevance at the output (before the output filter); ``end``: total at the input
    (after the input filter); ``entries``: one per rule application and per filter, in backward order.
    ``unaccounted`` = (start - end - sum of absorbed) / max(|start|, tiny): relevance that was neither
    passed on nor absorbed by any rule or filter, relative to the start (zero up to rounding when every
    operation on the way had a rule; ``balance_error`` is the same number). ``conservation_error`` =
    (start - end) / |start| is plain conservation. ``unhandled``: {operation: calls} the forward pass used
    without a rule (the usual cause of a non-zero ``unaccounted``).
    """

    start: float = 0.0
    end: float = 0.0
    entries: list[LedgerEntry] = field(default_factory=list)
    unhandled: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, kind: str, op: str, received, handed) -> None:
        """Add an entry; sums may be 0-d tensors (converted by :meth:`to_floats` once, without a sync per layer).

        Parameters
        ----------
        name : str
            The layer, filter or mapping.
        kind : str
            'rule' or 'filter'.
        op : str
            The rule's or filter's name.
        received, handed : float or torch.Tensor
            The relevance it received and handed on.
        """
        self.entries.append(LedgerEntry(name, kind, op, received, handed))

    def to_floats(self) -> None:
        """Turn tensor sums into Python floats (one device transfer for all entries)."""
        vals = [v for e in self.entries for v in (e.received, e.handed)]
        tens = [v for v in vals if isinstance(v, torch.Tensor)]
        if tens:
            floats = iter(torch.stack([t.detach().double() for t in tens]).cpu().tolist())
            vals = [next(floats) if isinstance(v, torch.Tensor) else float(v) for v in vals]
        for i, e in enumerate(self.entries):
            e.received, e.handed = float(vals[2 * i]), float(vals[2 * i + 1])

    @property
    def absorbed(self) -> float:
        """The relevance absorbed by every entry, summed."""
        return float(sum(e.absorbed for e in self.entries))

    @property
    def unaccounted(self) -> float:
        """(start - end - absorbed) / |start|: relevance neither handed on nor absorbed by any rule or filter."""
        return (self.start - self.end - self.absorbed) / max(abs(self.start), 1e-30)

    @property
    def balance_error(self) -> float:
        """The same as :attr:`unaccounted` (relative to |start|)."""
        return self.unaccounted

    @property
    def conservation_error(self) -> float:
        """(start - end) / |start|: plain conservation (biases and filters included)."""
        return (self.start - self.end) / max(abs(self.start), 1e-30)

    def table(self) -> np.ndarray:
        """The entries as a numpy structured array.

        Returns
        -------
        numpy.ndarray
            One row per entry, fields name, kind, op, received, handed, absorbed
            (``pandas.DataFrame(ledger.table())`` makes it a DataFrame).
        """
        dtype = [("name", object), ("kind", object), ("op", object), ("received", np.float64),
                 ("handed", np.float64), ("absorbed", np.float64)]
        return np.array([(e.name, e.kind, e.op, float(e.received), float(e.handed), float(e.absorbed))
                         for e in self.entries], dtype=dtype)
