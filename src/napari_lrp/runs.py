"""What every kind of run keeps for its Explanation (one forward pass, another method, draws, windows).

:class:`RunRecord` holds the fields they share; :meth:`RunRecord.explanation_of` builds the
:class:`~napari_lrp.explanation.Explanation` with them, so each kind adds only what is its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io.case import Case
from .models.card import Model
from .models.preprocess import PreparedInput

__all__ = ["RunRecord"]


@dataclass
class RunRecord:
    """prepared: the model-grid input; case, model; preset; target and target_class as asked; logits
    (K, Z, Y, X) float32 and prediction (Z, Y, X) uint8 on the case grid."""

    prepared: PreparedInput
    case: Case
    model: Model
    preset: str
    target: object
    target_class: int
    logits: np.ndarray
    prediction: np.ndarray

    def explanation_of(self, relevance: np.ndarray, unfiltered: np.ndarray, filters: dict, ledger, **extra):
        """The Explanation of this run with ``relevance`` and ``unfiltered`` (C, Z, Y, X) and the run's fields."""
        from .explanation import Explanation

        return Explanation(unfiltered_relevance=np.ascontiguousarray(unfiltered, dtype=np.float32),
                           relevance=np.ascontiguousarray(relevance, dtype=np.float32), prediction=self.prediction,
                           logits=self.logits, modalities=list(self.model.card.modalities), case=self.case,
                           model=self.model, preset=self.preset, filters=filters, target=self.target,
                           target_class=self.target_class, ledger=ledger, _run=self,
                           run_settings=dict(getattr(self, "run_settings", {})), **extra)
