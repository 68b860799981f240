"""Model cards, safe loading of weights, MONAI networks and bundles, devices (DESIGN section 5).

Security: architectures come only from an allow-list (this package's models and
``monai.networks.nets``); weights load with ``torch.load(weights_only=True)``; a pickled full model
or a TorchScript file would run code from the file and is refused unless ``trust=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.atomic import replacing, write_text

__all__ = ["ModelCard", "Model", "ModelError", "load_model", "save_model", "resolve_device", "build_network",
           "ALLOWED_PREFIXES", "file_sha256"]

ALLOWED_PREFIXES = ("napari_lrp.models.", "monai.networks.nets.")
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


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'; a clear error when absent."""
    if isinstance(device, torch.device):
        device = str(device)
    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m:
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} was requested but no CUDA GPU is available here; use 'cpu' or 'auto'")
        idx = int(m.group(1) or 0)
        if idx >= torch.cuda.device_count():
            raise ModelError(f"device {device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(device)
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ModelError("device 'mps' was requested but Apple MPS is not available here; use 'cpu' or 'auto'")
        return torch.device("mps")
    raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def available_devices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


# --------------------------------------------------------------------------------------------
# architectures


def _allowed_class(name: str, source: str) -> type:
    short = name.rsplit(".", 1)[-1]
    if name in ("UNet3D", "napari_lrp.models.UNet3D", "napari_lrp.models.unet3d.UNet3D"):
        from .unet3d import UNet3D

        return UNet3D
    if name.startswith("monai.networks.nets.") or "." not in name:
        import monai.networks.nets as nets

        cls = getattr(nets, short, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
        if "." not in name:
            raise ModelError(f"{source}: architecture {name!r} is neither napari_lrp.models.UNet3D nor a class of "
                             "monai.networks.nets")
        raise ModelError(f"{source}: monai.networks.nets has no network class {short!r}")
    raise ModelError(
        f"{source}: architecture {name!r} is not on the allow-list (napari_lrp.models.UNet3D and "
        "monai.networks.nets.*); other classes would run code from outside the allow-list"
    )


def class_path(module: nn.Module) -> str:
    cls = type(module)
    if cls.__module__.startswith("napari_lrp.models"):
        return f"napari_lrp.models.{cls.__name__}"
    if cls.__module__.startswith("monai.networks.nets"):
        return f"monai.networks.nets.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def build_network(card: ModelCard, source: str = "card") -> nn.Module:
    """Instantiate the card's architecture (allow-listed) with its keyword arguments."""
    cls = _allowed_class(card.architecture["class"], source)
    kwargs = card.architecture.get("kwargs") or {}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ModelError(f"{source}: cannot build {cls.__name__} with {kwargs}: {exc}") from exc


def first_in_channels(net: nn.Module) -> int | None:
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            return m.in_features if isinstance(m, nn.Linear) else m.in_channels
    return None


# --------------------------------------------------------------------------------------------
# weights


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _normalise_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "network", "net"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: not a state dict of tensors (found {type(obj).__name__}); save "
                         "network.state_dict() or use nl.save_model")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # DataParallel / DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _strip_common_prefix(sd: dict, expected: set[str]) -> dict:
    if set(sd) & expected:
        return sd
    firsts = {k.split(".", 1)[0] for k in sd}
    if len(firsts) == 1:  # Lightning: "model.<...>"
        prefix = firsts.pop() + "."
        stripped = {k[len(prefix):]: v for k, v in sd.items()}
        if set(stripped) & expected:
            return stripped
    return sd


def load_weights(net: nn.Module, path: str | os.PathLike, device: torch.device, trust: bool = False) -> nn.Module:
    """Load weights into ``net`` (weights_only); returns the module to use (a trusted full model may replace it)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: weights file not found")
    if _is_torchscript(path):
        if not trust:
            raise ModelError(f"{path}: a TorchScript file; loading it runs code stored in the file. Pass trust=True "
                             "only if you trust its source, or export a state dict with nl.save_model")
        return torch.jit.load(str(path), map_location=device)
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise ModelError(
                f"{path}: holds Python objects (a pickled full model?) and loading it would run code from the file; "
                "pass trust=True only if you trust its source, or save a state dict with nl.save_model"
            ) from exc
        obj = torch.load(str(path), map_location=device, weights_only=False)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: corrupt or unreadable weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, nn.Module):
        return obj
    sd = _normalise_state_dict(obj, path)
    expected = set(net.state_dict())
    sd = _strip_common_prefix(sd, expected)
    missing = sorted(expected - set(sd))
    unexpected = sorted(set(sd) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ModelError(f"{path}: the weights do not fit the card's architecture: {'; '.join(parts)}")
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit the card's architecture: {exc}") from exc
    return net


# --------------------------------------------------------------------------------------------
# cards and bundles


def read_card(path: Path) -> ModelCard:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: model card not found") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: the model card is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return ModelCard.from_dict(data, str(path))


def _resolve_refs(value, config: dict, source: str):
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in config:
            raise ModelError(f"{source}: reference {value!r} not found in the config")
        return _resolve_refs(config[key], config, source)
    if isinstance(value, str) and value.startswith("$"):
        raise ModelError(f"{source}: the network definition holds a Python expression {value!r}; napari-lrp does "
                         "not evaluate code from bundles. Replace it by a literal value")
    if isinstance(value, dict):
        return {k: _resolve_refs(v, config, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, config, source) for v in value]
    return value


def card_from_bundle(folder: Path) -> tuple[ModelCard, Path]:
    """A card from a MONAI bundle folder (configs/metadata.json, configs/inference.json, models/model.pt)."""
    cfg_path = folder / "configs" / "inference.json"
    if not cfg_path.exists():
        raise ModelError(f"{folder}: not a MONAI bundle: configs/inference.json is missing (YAML configs are not read)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    net_def = config.get("network_def")
    if isinstance(net_def, str) and net_def.startswith("@"):
        net_def = _resolve_refs(net_def, config, str(cfg_path))
    if not isinstance(net_def, dict) or "_target_" not in net_def:
        raise ModelError(f"{cfg_path}: no network_def with a _target_")
    kwargs = _resolve_refs({k: v for k, v in net_def.items() if k != "_target_"}, config, str(cfg_path))
    target = net_def["_target_"]
    cls_name = target if "." in target else f"monai.networks.nets.{target}"
    meta_path = folder / "configs" / "metadata.json"
    meta = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{meta_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    fmt = meta.get("network_data_format", {})
    inputs = next(iter(fmt.get("inputs", {}).values()), {})
    outputs = next(iter(fmt.get("outputs", {}).values()), {})
    n_in = int(inputs.get("num_channels", kwargs.get("in_channels", 1)))
    chdef = inputs.get("channel_def") or {}
    modalities = [str(chdef.get(str(i), f"ch{i}")) for i in range(n_in)]
    outdef = outputs.get("channel_def") or {}
    n_out = int(outputs.get("num_channels", kwargs.get("out_channels", 2)))
    classes = [str(outdef.get(str(i), f"class{i}")) for i in range(n_out)]
    card = ModelCard(
        name=meta.get("name", folder.name), architecture={"class": cls_name, "kwargs": kwargs},
        weights=str(Path("..") / "models" / "model.pt"), modalities=modalities,
        input={"spatial_size": None, "intensity": meta.get("napari_lrp_intensity", "zscore"),
               "divisible": int(meta.get("napari_lrp_divisible", 16))},
        classes=classes, target_class=min(1, n_out - 1),
        output_activation="sigmoid" if n_out == 1 else "softmax",
    )
    return card, folder / "models" / "model.pt"


def load_model(path: str | os.PathLike, device: str | torch.device = "auto", trust: bool = False) -> Model:
    """Load a model: a card (.json) next to its weights, a folder holding ``card.json`` or a MONAI bundle.

    Weights load with ``torch.load(weights_only=True)`` onto ``device`` ('auto', 'cpu', 'cuda', 'cuda:N',
    'mps'); 'module.' prefixes (DataParallel) and Lightning checkpoints are recognised. A pickled full
    model or TorchScript file is refused unless ``trust=True``. Returns a :class:`Model` in eval mode.
    """
    path = Path(path)
    dev = resolve_device(device)
    if not path.exists():
        raise ModelError(f"{path}: model file or folder not found")
    if path.is_dir():
        if (path / "card.json").exists():
            path = path / "card.json"
        elif (path / "configs").is_dir():
            card, weights = card_from_bundle(path)
            return _finish(card, weights, dev, trust, str(path))
        else:
            cards = sorted(path.glob("*.json"))
            if len(cards) != 1:
                raise ModelError(f"{path}: a model folder needs card.json (or one .json card) or a MONAI bundle's configs/")
            path = cards[0]
    if path.suffix.lower() == ".json":
        card = read_card(path)
        return _finish(card, path.parent / card.weights, dev, trust, str(path))
    # a bare weights file: a card of the same stem next to it
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        card = read_card(sidecar)
        return _finish(card, path, dev, trust, str(sidecar))
    raise ModelError(f"{path}: a weights file needs its model card ({sidecar.name} or card.json); "
                     "write one with nl.save_model(module, card, folder)")


def _finish(card: ModelCard, weights: Path, dev: torch.device, trust: bool, source: str) -> Model:
    net = build_network(card, source)
    n_in = first_in_channels(net)
    if n_in is not None and n_in != len(card.modalities):
        raise ModelError(f"{source}: the network takes {n_in} input channels but the card lists "
                         f"{len(card.modalities)} modalities ({', '.join(card.modalities)})")
    net = load_weights(net, weights, dev, trust)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Model(network=net, card=card, device=dev, path=str(weights), sha256=file_sha256(weights))


def save_model(module: nn.Module, card: ModelCard | dict, path: str | os.PathLike) -> Path:
    """Write ``module``'s weights and its card so :func:`load_model` reads them back.

    path: a folder (card.json and the card's weights file inside it) or a .json card path. The
    architecture class is filled in from the module when the card leaves it out. Returns the card path.
    """
    if isinstance(card, dict):
        card = dict(card)
        card.setdefault("architecture", {"class": class_path(module), "kwargs": {}})
        card.setdefault("name", type(module).__name__)
        card = ModelCard.from_dict(card)
    _allowed_class(card.architecture["class"], "card")
    path = Path(path)
    card_path = path if path.suffix.lower() == ".json" else path / "card.json"
    card_path.parent.mkdir(parents=True, exist_ok=True)
    weights = card_path.parent / card.weights
    sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with replacing(weights) as tmp:
        torch.save(sd, tmp)
    return write_text(card_path, json.dumps(card.to_dict(), indent=2))
