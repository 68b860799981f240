"""Model cards: how to feed a network; and the loaded Model (network + card)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from .pipeline import ModelPipeline

__all__ = ["ACTIVATIONS", "INTENSITIES", "Model", "ModelCard", "ModelError", "check_channel_names", "read_card"]

INTENSITIES = ("minmax", "zscore", "none")
ACTIVATIONS = ("softmax", "sigmoid", "none")


class ModelError(ValueError):
    """A model file, card or bundle that cannot be used; the message names the file and the fix."""


# ---- the card's schema: every field error names the file, the field and what is expected


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


#: where a refused card's message sends the reader
CARD_FIELDS_HELP = "the card's fields: 'Your own model card' in napari-lrp's documentation, docs/networks.md"


class _InputSchema(_Strict):
    spatial_size: list[StrictInt] | None = Field(default=None, min_length=3, max_length=3)
    intensity: Literal["minmax", "zscore", "none"] = "minmax"
    divisible: StrictInt = Field(default=1, ge=1, le=4096)

    @field_validator("spatial_size")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(s < 1 for s in v):
            raise ValueError("every size must be a positive number of voxels")
        return v


class _ArchitectureSchema(_Strict):
    class_: StrictStr = Field(alias="class", min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class _CardSchema(_Strict):
    name: StrictStr
    architecture: _ArchitectureSchema
    weights: StrictStr = "model.pt"
    modalities: list[StrictStr] = Field(min_length=1)
    input: _InputSchema = Field(default_factory=_InputSchema)
    classes: list[StrictStr] = Field(default_factory=lambda: ["background", "foreground"], min_length=1)
    target_class: StrictInt = 1
    output_activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    regions: dict[StrictStr, list[StrictInt]] | None = None
    regions_class_order: list[StrictInt] | None = None
    label_values: list[StrictInt] | None = None

    @field_validator("regions")
    @classmethod
    def _label_values(cls, v):
        for name, values in (v or {}).items():
            if not values or any(x < 0 for x in values):
                raise ValueError(f"region {name!r} needs one or more label values >= 0 (e.g. [1, 2, 3]), got "
                                 f"{values}")
        return v

    @field_validator("weights")
    @classmethod
    def _relative(cls, v):
        if not v or PurePath(v).is_absolute() or v.startswith("~"):
            raise ValueError("must be a file name relative to the card's folder (e.g. model.pt)")
        return v

    @field_validator("modalities")
    @classmethod
    def _unique(cls, v):
        doubled = sorted({m for m in v if [n.lower() for n in v].count(m.lower()) > 1})
        if doubled:
            raise ValueError(f"names {doubled} appear twice; each input channel needs its own name")
        return v

    @model_validator(mode="after")
    def _class_exists(self):
        if not 0 <= self.target_class < len(self.classes):
            raise ValueError(f"target_class {self.target_class} is not an index into classes {self.classes}")
        if self.regions_class_order is not None and len(self.regions_class_order) != len(self.classes):
            raise ValueError(f"regions_class_order {self.regions_class_order} paints one label value per class: it "
                             f"needs {len(self.classes)} values (one for each of {self.classes})")
        if self.label_values is not None and (self.output_activation != "sigmoid" or len(self.classes) < 2):
            raise ValueError("label_values paints combinations of regions: it needs output_activation 'sigmoid' and "
                             "two or more classes (a softmax model's label is its class index)")
        if self.label_values is not None and (len(self.label_values) != 2 ** len(self.classes)
                                              or any(not 0 <= v <= 255 for v in self.label_values)):
            raise ValueError(f"label_values gives the label value (0 to 255) of each combination of regions: it "
                             f"needs 2**{len(self.classes)} = {2 ** len(self.classes)} values, got {self.label_values}")
        unknown = sorted(set(self.regions or {}) - set(self.classes))
        if unknown:
            raise ValueError(f"regions {unknown} are not among the classes {self.classes}; name each region by its "
                             "class")
        return self


def check_channel_names(names, source: str, field: str) -> list[str]:
    """``names`` as a list, refused when two of them are the same channel (equal ignoring case): a case
    would feed one modality twice and never the other.

    Parameters
    ----------
    names : sequence of str
        The model's input channel names in channel order.
    source : str
        The file the names come from (for the message).
    field : str
        The field that holds them (for the message).

    Returns
    -------
    list of str
        The names, unchanged.
    """
    names = [str(n) for n in names]
    folded = [n.lower() for n in names]
    doubled = sorted({n for n in names if folded.count(n.lower()) > 1}, key=str.lower)
    if doubled:
        raise ModelError(f"{source}: field {field!r} names the input channels {names}; {', '.join(map(repr, doubled))} "
                         "appear(s) more than once (names are compared ignoring case), so a case would feed one "
                         "modality twice and never another; give every channel its own name")
    return names


def _field_errors(exc: ValidationError, source: str) -> ModelError:
    lines = []
    for err in exc.errors()[:6]:
        loc = ".".join(str(p) for p in err["loc"]) or "card"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "model_attributes_type") or isinstance(got, dict) else \
            f" (got {got!r})"
        msg = re.sub(r" or instance of _\w+", "", err["msg"]).replace("Value error, ", "")
        lines.append(f"field {loc!r}: {msg}{shown}")
    return ModelError(f"{source}: the model card is not valid: " + "; ".join(lines) + f" ({CARD_FIELDS_HELP})")


@dataclass
class ModelCard:
    """How to feed a network.

    architecture: {"class": dotted name on the allow-list, "kwargs": {...}}; weights: file name relative
    to the card; modalities: input channel names in order; input: {"spatial_size": [Z, Y, X] or None,
    "intensity": "minmax" | "zscore" | "none", "divisible": int}; classes; target_class; output_activation;
    regions: {class name: label values} where a class's ground truth is a set of the label file's values (BraTS'
    whole tumour [1, 2, 3]); a class without an entry takes the case's ground truth; regions_class_order: the
    label value each region paints into the label map, in region order (nnU-Net's field; default 1, 2, ...);
    label_values: instead, the label value of every combination of regions (entry b: the voxels whose regions are
    the set bits of b; a bundle's painting ``Lambdad``).
    """

    name: str
    architecture: dict
    weights: str = "model.pt"
    modalities: list[str] = field(default_factory=list)
    input: dict = field(default_factory=lambda: {"spatial_size": None, "intensity": "minmax", "divisible": 1})
    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    target_class: int = 1
    output_activation: str = "softmax"
    regions: dict | None = None
    regions_class_order: list | None = None
    label_values: list | None = None

    def label_map(self, prediction: np.ndarray) -> np.ndarray:
        """The prediction as a label map: a class map as it is; region bits painted the way nnU-Net paints
        them (each region, in order, writes its ``regions_class_order`` value over the ones before).

        Parameters
        ----------
        prediction : numpy.ndarray
            (Z, Y, X) uint8 from ``lrp.targets.predict``.

        Returns
        -------
        numpy.ndarray
            (Z, Y, X) uint8: for nested BraTS regions (whole, core, enhancing) 1, 2, 3 as the labels read.
        """
        if not self.multilabel:
            return prediction
        if self.label_values:
            return np.asarray(self.label_values, np.uint8)[prediction]
        values = self.regions_class_order or list(range(1, len(self.classes) + 1))
        out = np.zeros(prediction.shape, np.uint8)
        for k, value in enumerate(values):
            out[((prediction >> k) & 1) > 0] = value
        return out

    def check_outputs(self, n_outputs: int, source: str) -> None:
        """Refuse a card whose class names do not match the network's output channels (the names would be shown
        on the wrong channels).

        Parameters
        ----------
        n_outputs : int
            The network's output channels.
        source : str
            The model, named in the refusal.

        Raises
        ------
        ModelError
            Unless there is one name per output channel, or a one-channel sigmoid output has two names (the
            background and the foreground it scores).
        """
        binary = self.output_activation == "sigmoid" and n_outputs == 1 and len(self.classes) == 2
        if n_outputs != len(self.classes) and not binary:
            raise ModelError(f"{source}: the card names {len(self.classes)} classes {self.classes} but the network "
                             f"gives {n_outputs} output channel{'s' if n_outputs != 1 else ''}; field 'classes' needs "
                             "one name per output channel (a one-channel sigmoid model may name two: the background "
                             "and its foreground)")

    @property
    def multilabel(self) -> bool:
        """Several sigmoid classes: independent regions, one output channel each (BraTS' whole tumour, tumour
        core, enhancing tumour)."""
        return self.output_activation == "sigmoid" and len(self.classes) > 1

    @property
    def intensity(self) -> str:
        """The intensity normalisation the network was trained with: 'minmax', 'zscore' or 'none'."""
        return self.input.get("intensity", "none") or "none"

    @property
    def spatial_size(self):
        """The fixed input size (Z, Y, X) the network needs, or None."""
        s = self.input.get("spatial_size")
        return None if s is None else tuple(int(v) for v in s)

    @property
    def divisible(self) -> int:
        """Every spatial size of the input is padded to a multiple of it."""
        return int(self.input.get("divisible", 1) or 1)

    def to_dict(self) -> dict:
        """The card as its JSON object.

        Returns
        -------
        dict
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "card") -> ModelCard:
        """A card from its JSON object, validated field by field.

        Parameters
        ----------
        d : dict
            The card's JSON object.
        source : str
            The card file, named in errors with the field.

        Returns
        -------
        ModelCard
        """
        if not isinstance(d, dict):
            raise ModelError(f"{source}: a model card must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("name", "architecture", "modalities") if k not in d]
        if missing:
            raise ModelError(f"{source}: the model card lacks {', '.join(missing)} ({CARD_FIELDS_HELP})")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"{source}: unknown model card fields {unknown}; known: {sorted(known)}")
        try:
            valid = _CardSchema.model_validate(d)
        except ValidationError as exc:
            raise _field_errors(exc, source) from None
        return cls(name=valid.name, architecture={"class": valid.architecture.class_,
                                                  "kwargs": dict(valid.architecture.kwargs)},
                   weights=valid.weights, modalities=list(valid.modalities), input=valid.input.model_dump(),
                   classes=list(valid.classes), target_class=valid.target_class,
                   output_activation=valid.output_activation,
                   regions={k: list(v) for k, v in valid.regions.items()} if valid.regions else None,
                   regions_class_order=list(valid.regions_class_order) if valid.regions_class_order else None,
                   label_values=list(valid.label_values) if valid.label_values else None)

    def class_ground_truth(self, case, target_class: int):
        """The ground truth of one class or region on a case.

        Parameters
        ----------
        case : Case
            The case (its label and ground truth).
        target_class : int
            The class or region.

        Returns
        -------
        numpy.ndarray or None
            (Z, Y, X) bool: the label values ``regions`` gives the class, else the case's ground truth (its
            label values, or any non-zero voxel); None without a label.
        """
        name = self.classes[target_class] if 0 <= target_class < len(self.classes) else None
        if self.regions and name in self.regions:
            return None if case.label is None else np.isin(case.label, self.regions[name])
        return case.ground_truth


@dataclass
class Model:
    """A loaded network in eval mode with its card. ``network`` is the torch module, ``device`` where it runs."""

    network: nn.Module
    card: ModelCard
    device: torch.device
    path: str | None = None
    sha256: str | None = None
    #: what runs around the network: an nnU-Net plan (models.nnunet) or a bundle's transforms and inferer
    #: (models.bundle_transforms); None: the card's own input rules
    pipeline: ModelPipeline | None = None

    def check_outputs(self, n_outputs: int) -> None:
        """:meth:`ModelCard.check_outputs` for a model loaded from a file, naming it; a bare network's card
        names nothing of its own (its classes are the defaults), so it is not checked.

        Parameters
        ----------
        n_outputs : int
            The network's output channels.
        """
        if self.path is not None:
            self.card.check_outputs(n_outputs, str(self.path))

    @property
    def modalities(self) -> list[str]:
        """The network's input channels by name, in its order."""
        return list(self.card.modalities)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def read_json(path: Path, not_found: str | None = None, kind: str = "", whole: str | None = "") -> Any:
    """The JSON document in ``path``, refused by name when it cannot be read.

    Parameters
    ----------
    path : Path
        The file.
    not_found : str, optional
        The message after the path when the file is missing (None: FileNotFoundError as it is).
    kind : str
        What the file is, named in the message of invalid JSON ('the model card ').
    whole : str or None
        The document must be a JSON object; the words after "object" in the refusal (None: any JSON value).

    Returns
    -------
    object
        The document (a dict unless ``whole`` is None).
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        if not_found is None:
            raise
        raise ModelError(f"{path}: {not_found}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: {kind}not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: {kind}not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if whole is not None and not isinstance(doc, dict):
        raise ModelError(f"{path}: must hold a JSON object{whole}, not {type(doc).__name__}")
    return doc


def read_card(path: Path) -> ModelCard:
    """The card in ``path`` (card.json), validated field by field.

    Parameters
    ----------
    path : Path
        The card file.

    Returns
    -------
    ModelCard
    """
    return ModelCard.from_dict(read_json(path, "model card not found", "the model card is ", None), str(path))
