"""Loading and saving models: a card next to its weights, a model folder, a MONAI bundle.

Security: architectures come only from an allow-list (``architectures``); weights load with
``torch.load(weights_only=True)`` (``weights``); a pickled full model or a TorchScript file would run code
from the file and is refused unless ``trust=True``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..io.atomic import replacing, write_text
from .architectures import allowed_class, build_network, class_path, current_arguments, first_in_channels
from .bundle_config import CONFIG_NAMES
from .bundles import card_from_bundle, pipeline_from_bundle
from .card import Model, ModelCard, ModelError, read_card
from .devices import resolve_device
from .network_guard import check_allocation, window_bytes
from .nnunet import fold_folders, load_nnunet, nnunet_sha256, resolve_nnunet
from .weights import definition_files, identity_sha256, load_weights

__all__ = ["load_model", "locate_model", "model_sha256", "save_model"]


def locate_model(path: str | os.PathLike, trust: bool = False) -> tuple[ModelCard, Path, str]:
    """The card, the weights file and the name for messages of a model path, without building anything.

    Parameters
    ----------
    path : str or os.PathLike
        A card (.json), a folder with card.json (or one .json card), a MONAI bundle, or a weights file with
        its card of the same stem beside it.
    trust : bool
        Whether a bundle's own ``scripts/`` code may run (a label painting in its postprocessing).

    Returns
    -------
    tuple
        (ModelCard, weights Path, source str).
    """
    path = bundle_folder_of(Path(path))
    if not path.exists():
        raise ModelError(f"{path}: model file or folder not found")
    if path.is_dir():
        if (path / "card.json").exists():
            path = path / "card.json"
        elif (path / "configs").is_dir():
            card, weights = card_from_bundle(path, trust)
            return card, weights, str(path)
        else:
            cards = sorted(path.glob("*.json"))
            if len(cards) != 1:
                raise ModelError(f"{path}: a model folder needs card.json (or one .json card) or a MONAI bundle's "
                                 "configs/")
            path = cards[0]
    if path.suffix.lower() == ".json":
        card = read_card(path)
        return card, path.parent / card.weights, str(path)
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        return read_card(sidecar), path, str(sidecar)
    raise ModelError(f"{path}: a weights file needs its model card ({sidecar.name} or card.json); "
                     "write one with nl.save_model(module, card, folder)")


def bundle_folder_of(path: Path) -> Path:
    """A MONAI bundle's folder for a file inside it; other paths unchanged.

    Parameters
    ----------
    path : Path
        configs/inference.json (or .yaml), configs/metadata.json or a file in models/ (what a file dialog picks),
        or any path.

    Returns
    -------
    Path
    """
    if path.is_file() and path.parent.name in ("configs", "models") and \
            any((path.parent.parent / "configs" / name).is_file() for name in CONFIG_NAMES) and \
            not (path.parent / "card.json").exists() and path.name != "card.json":
        return path.parent.parent
    return path


def model_sha256(path: str | os.PathLike) -> str:
    """The identity of a model (what ``Model.sha256`` of the loaded model is), without loading it.

    Parameters
    ----------
    path : str or os.PathLike
        As for :func:`load_model`.

    Returns
    -------
    str
        sha256 of the weights with the files that define the model (card, bundle configs, nnU-Net plans).
    """
    found = resolve_nnunet(path)
    if found is not None:
        folder, fold, checkpoint = found
        return nnunet_sha256([f / (checkpoint or "checkpoint_final.pth") for f in fold_folders(folder, fold)],
                             folder)
    _card, weights, source = locate_model(path)
    if not Path(weights).exists():
        raise ModelError(f"{weights}: weights file not found")
    return identity_sha256([weights], definition_files(source))


def load_model(path: str | os.PathLike, device: str | torch.device = "auto", trust: bool = False, fold=None,
               checkpoint: str = "checkpoint_final.pth", mirroring: bool = False) -> Model:
    """Load a model: a card (.json) next to its weights, a folder holding ``card.json``, a MONAI bundle or an
    nnU-Net v2 results folder.

    Weights load with ``torch.load(weights_only=True)``; 'module.' prefixes (DataParallel) and Lightning
    checkpoints are recognised. A pickled full model or TorchScript file is refused unless ``trust=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The card, model folder, bundle folder (or its configs/inference.json), or nnU-Net results folder (or
        its plans.json, or a fold_N/checkpoint file).
    device : str or torch.device
        'auto' (a CUDA GPU or Apple MPS when present, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.
    trust : bool
        Allow pickled full models and TorchScript files (they can run code).
    fold : int, sequence of int or 'all', optional
        nnU-Net: the folds (default every fold_N, averaged).
    checkpoint : str
        nnU-Net: the checkpoint file in each fold.
    mirroring : bool
        nnU-Net: its test-time mirroring.

    Returns
    -------
    Model
        The network in eval mode, its card and, for nnU-Net folders and bundles, their pipeline.
    """
    dev = resolve_device(device)

    found = resolve_nnunet(path)
    if found is not None:  # a results folder, or its plans.json / dataset.json / fold_N/checkpoint file
        folder, picked_fold, picked_checkpoint = found
        return load_nnunet(folder, dev, fold=picked_fold if fold is None else fold,
                           checkpoint=picked_checkpoint or checkpoint, mirroring=mirroring, trust=trust)
    if fold is not None or mirroring or checkpoint != "checkpoint_final.pth":
        given = [f"{k}={v!r}" for k, v in (("fold", fold), ("mirroring", mirroring), ("checkpoint", checkpoint))
                 if v not in (None, False, "checkpoint_final.pth")]
        raise ModelError(f"{path}: {', '.join(given)} are options of nnU-Net results folders; this model is a card "
                         "or a bundle, which has one network and no test-time mirroring")
    card, weights, source = locate_model(path, trust)
    folder = bundle_folder_of(Path(path))
    pipeline = None
    bundle = folder if folder.is_dir() and (folder / "configs").is_dir() and not (folder / "card.json").exists() \
        else None
    if bundle is not None:
        pipeline = pipeline_from_bundle(folder, trust)  # its preprocessing and inferer, when it has them
        window = getattr(pipeline, "window", None)
        if window is not None:  # the inferer's roi_size is the bundle's own window: its LRP must fit (estimated
            # before the network is built or its weights are read)
            cls = allowed_class(card.architecture["class"], source, trust, folder)
            need = window_bytes(cls, current_arguments(cls, card.architecture["kwargs"], source, warn=False),
                                (1, len(card.modalities) + pipeline.added_channels, *window))
            if need is None:
                warnings.warn(f"{source}: the memory of one window's LRP (inferer.roi_size {tuple(window)}) could "
                              f"not be estimated ({cls.__name__} runs neither on the meta device nor on a counted "
                              "forward pass); it is not checked before the run", UserWarning, stacklevel=2)
            else:
                check_allocation(need, f"the LRP of one window (inferer.roi_size {tuple(window)})", source,
                                 "the bundle cannot be explained on this machine at this roi_size", dev)
    model = _finish(card, weights, dev, trust, source, bundle, getattr(pipeline, "added_channels", 0))
    model.pipeline = pipeline
    return model


def _finish(card: ModelCard, weights: Path, dev: torch.device, trust: bool, source: str, code_root=None,
            added: int = 0) -> Model:
    net = build_network(card, source, trust, code_root)
    declared = (card.architecture.get("kwargs") or {}).get("in_channels")
    # the declared argument where there is one: modules register in any order (DiNTS's cells come before its stem)
    n_in = declared if isinstance(declared, int) and not isinstance(declared, bool) else first_in_channels(net)
    if n_in is not None and n_in != len(card.modalities) + added:  # added: a bundle's guidance channels
        raise ModelError(f"{source}: the network takes {n_in} input channels but the card lists "
                         f"{len(card.modalities)} modalities ({', '.join(card.modalities)})"
                         + (f" and the bundle adds {added}" if added else ""))
    net = load_weights(net, weights, dev, trust)
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Model(network=net, card=card, device=dev, path=str(weights),
                 sha256=identity_sha256([weights], definition_files(source)))


def save_model(module: nn.Module, card: ModelCard | dict, path: str | os.PathLike) -> Path:
    """Write a module's weights and its card so :func:`load_model` reads them back.

    The architecture class is filled in from the module when the card leaves it out.

    Parameters
    ----------
    module : torch.nn.Module
        The network (its class on the allow-list).
    card : ModelCard or dict
        Its card (see 'Your own model card' in the documentation).
    path : str or os.PathLike
        A folder (card.json and the card's weights file inside it) or a .json card path.

    Returns
    -------
    Path
        The card written.
    """
    if isinstance(card, dict):
        card = dict(card)
        card.setdefault("architecture", {"class": class_path(module), "kwargs": {}})
        card.setdefault("name", type(module).__name__)
        card = ModelCard.from_dict(card)
    allowed_class(card.architecture["class"], "card")
    path = Path(path)
    card_path = path if path.suffix.lower() == ".json" else path / "card.json"
    card_path.parent.mkdir(parents=True, exist_ok=True)
    weights = card_path.parent / card.weights
    sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with replacing(weights) as tmp:
        torch.save(sd, tmp)
    return write_text(card_path, json.dumps(card.to_dict(), indent=2))
