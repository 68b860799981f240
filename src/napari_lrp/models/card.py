"""Model cards (DESIGN section 5): how to feed a network; and the loaded Model (network + card)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "INTENSITIES", "Model", "ModelCard", "ModelError", "read_card"]

INTENSITIES = ("minmax", "zscore", "none")
ACTIVATIONS = ("softmax", "sigmoid", "none")


class ModelError(ValueError):
    """A model file, card or bundle that cannot be used; the message names the file and the fix."""


@dataclass
class ModelCard:
    """How to feed a network (DESIGN section 5).

    architecture: {"class": dotted name on the allow-list, "kwargs": {...}}; weights: file name relative
    to the card; modalities: input channel names in order; input: {"spatial_size": [Z, Y, X] or None,
    "intensity": "minmax" | "zscore" | "none", "divisible": int}; classes; target_class; output_activation.
    """

    name: str
    architecture: dict
    weights: str = "model.pt"
    modalities: list[str] = field(default_factory=list)
    input: dict = field(default_factory=lambda: {"spatial_size": None, "intensity": "minmax", "divisible": 1})
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    target_class: int = 1
    output_activation: str = "softmax"

    @property
    def intensity(self) -> str:
        return self.input.get("intensity", "none") or "none"

    @property
    def spatial_size(self):
        s = self.input.get("spatial_size")
        return None if s is None else tuple(int(v) for v in s)

    @property
    def divisible(self) -> int:
        return int(self.input.get("divisible", 1) or 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "card") -> ModelCard:
        if not isinstance(d, dict):
            raise ModelError(f"{source}: a model card must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("name", "architecture", "modalities") if k not in d]
        if missing:
            raise ModelError(f"{source}: the model card lacks {', '.join(missing)} (see DESIGN section 5)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"{source}: unknown model card fields {unknown}; known: {sorted(known)}")
        arch = d["architecture"]
        if not isinstance(arch, dict) or "class" not in arch:
            raise ModelError(f'{source}: "architecture" must be {{"class": ..., "kwargs": {{...}}}}')
        card = cls(**{**{k: v for k, v in d.items()}, "architecture": {"class": arch["class"],
                                                                      "kwargs": dict(arch.get("kwargs") or {})}})
        inp = {"spatial_size": None, "intensity": "minmax", "divisible": 1, **(card.input or {})}
        card.input = inp
        if card.intensity not in INTENSITIES:
            raise ModelError(f"{source}: input.intensity must be one of {INTENSITIES}, not {card.intensity!r}")
        if card.output_activation not in ACTIVATIONS:
            raise ModelError(f"{source}: output_activation must be one of {ACTIVATIONS}, not {card.output_activation!r}")
        if not card.modalities:
            raise ModelError(f"{source}: the model card lists no modalities")
        return card


@dataclass
class Model:
    """A loaded network in eval mode with its card. ``network`` is the torch module, ``device`` where it runs."""

    network: nn.Module
    card: ModelCard
    device: torch.device
    path: str | None = None
    sha256: str | None = None

    @property
    def modalities(self) -> list[str]:
        return list(self.card.modalities)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: model card not found") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: the model card is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return ModelCard.from_dict(data, str(path))
