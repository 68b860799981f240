"""Safe loading of weights: ``torch.load(weights_only=True)``; a pickled full model or a TorchScript file
would run code from the file and is refused unless ``trust=True``."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .card import ModelError

__all__ = ["check_archive", "check_finite_weights", "check_readable_weights", "definition_files", "file_sha256",
           "identity_sha256", "load_weights"]


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in chunks.

    Parameters
    ----------
    path : str or os.PathLike
        Any file (weights, a card, a config), read 1 MiB at a time.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def definition_files(source: str | os.PathLike) -> list[Path]:
    """The files besides the weights that define a model.

    Parameters
    ----------
    source : str or os.PathLike
        The model's source: a card (.json), a bundle folder or an nnU-Net results folder.

    Returns
    -------
    list of Path
        The card, a bundle's configs (configs/*.json|yaml|yml), or an nnU-Net folder's plans.json and
        dataset.json.
    """
    source = Path(source)
    if source.is_file():
        return [source] if source.suffix.lower() == ".json" else []
    found = [source / n for n in ("plans.json", "dataset.json") if (source / n).is_file()]
    if (source / "configs").is_dir():
        found += sorted(p for p in (source / "configs").iterdir()
                        if p.is_file() and p.suffix.lower() in (".json", ".yaml", ".yml"))
    return found


def identity_sha256(weights, definitions=()) -> str:
    """The model's identity: sha256 of its weights file(s) and of every file that defines it (card, plans,
    dataset.json, a bundle's configs), so an edit of any of them is another model. One weights file and no
    definition file: that file's own sha256.

    Parameters
    ----------
    weights : sequence of paths
        The weights or checkpoint files, in order (the folds of an ensemble).
    definitions : sequence of paths
        The definition files (:func:`definition_files`).

    Returns
    -------
    str
        64 hex digits.
    """
    weights, definitions = [Path(w) for w in weights], [Path(d) for d in definitions]
    if len(weights) == 1 and not definitions:
        return file_sha256(weights[0])
    parts = [file_sha256(w) for w in weights] + [f"{d.name}:{file_sha256(d)}" for d in definitions]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def check_archive(path: str | os.PathLike) -> None:
    """Refuse, before reading it, a torch.save archive whose entries unpack to more than half the free memory.

    A small file of deflated entries can claim gigabytes.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file.
    """
    import psutil

    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: corrupt or unreadable weights file ({exc})") from None
    free = psutil.virtual_memory().available
    if unpacked > free / 2:
        raise ModelError(f"{path}: the weights unpack to {unpacked / 1e9:.2f} GB ({path.stat().st_size / 1e6:.1f} MB "
                         f"on disk), more than half the free memory ({free / 1e9:.2f} GB free); not loaded. Check "
                         "the file's source, or free memory")


def check_readable_weights(path: str | os.PathLike) -> None:
    """Refuse an empty or truncated weights file by what it is (not as a file holding Python objects).

    Parameters
    ----------
    path : str or os.PathLike
        The weights file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: the weights file is empty (0 bytes); copy it again from its source")
    if not zipfile.is_zipfile(path) and not _looks_like_pickle(path):
        raise ModelError(f"{path}: corrupt or unreadable weights file: corrupt or not a PyTorch file ({size} bytes, "
                         "neither a torch.save archive nor a pickle: truncated?); copy it again from its source, or "
                         "save the weights with nl.save_model or torch.save")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _looks_like_pickle(path: Path) -> bool:
    """A legacy (pre-zip) torch.save file starts with a pickle protocol marker (0x80 then 2..5)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


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
    """Load weights into a network with ``weights_only=True``.

    Parameters
    ----------
    net : torch.nn.Module
        The network built from the card.
    path : str or os.PathLike
        The weights file (a state dict, a Lightning checkpoint; 'module.' prefixes recognised).
    device : torch.device
        Where the weights go.
    trust : bool
        Allow a pickled full model or a TorchScript file (they can run code).

    Returns
    -------
    torch.nn.Module
        The module to use (a trusted full model may replace ``net``).
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: weights file not found")
    check_readable_weights(path)
    check_archive(path)
    if _is_torchscript(path):
        if not trust:
            raise ModelError(f"{path}: a TorchScript file; loading it runs code stored in the file. Pass trust=True "
                             "only if you trust its source, or export a state dict with nl.save_model")
        return torch.jit.load(str(path), map_location=device)
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only load failed" not in str(exc):
            raise ModelError(f"{path}: corrupt or unreadable weights file: corrupt or not a PyTorch file "
                             f"({exc})") from exc
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
    check_finite_weights(sd, path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit the card's architecture: {exc}") from exc
    return net


def check_finite_weights(state_dict: dict, path) -> None:
    """Refuse weights holding NaN or Inf (the network would predict nothing, and relevance would be NaN).

    Parameters
    ----------
    state_dict : dict
        The weights.
    path : str or os.PathLike
        Their file, named in the refusal.
    """
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"{path}: the weights {key!r} hold NaN or Inf values; the model cannot be explained "
                             "(it was saved from a diverged training?)")
