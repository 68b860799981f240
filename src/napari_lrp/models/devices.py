"""Where a model runs: device names ('auto', 'cpu', 'cuda', 'cuda:N', 'mps') to torch devices."""

from __future__ import annotations

import re

import psutil
import torch

from .card import ModelError

__all__ = ["available_bytes", "available_devices", "mps_available", "resolve_device"]


def mps_available() -> bool:
    """Whether Apple's Metal backend is built into this torch and usable on this machine.

    Returns
    -------
    bool
    """
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device a name asks for, refused with a clear message when this machine lacks it.

    Parameters
    ----------
    device : str, torch.device or None
        'auto' (CUDA, then MPS, then the CPU; also None), 'cpu', 'cuda', 'cuda:N' or 'mps'.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        device = str(device)
    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
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
            raise ModelError(f"device {device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) "
                             "exist")
        return torch.device(device)
    if device == "mps":
        if not mps_available():
            raise ModelError("device 'mps' was requested but Apple MPS is not available here; use 'cpu' or 'auto'")
        return torch.device("mps")
    raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def available_devices() -> list[str]:
    """The device choices of this machine, for menus.

    Returns
    -------
    list of str
        'auto', 'cpu', then 'cuda' / 'cuda:N' and 'mps' where present.
    """
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        out.append("mps")
    return out


def available_bytes(device: str | torch.device | None = None) -> int:
    """Memory free for tensors on ``device``: a CUDA GPU's free memory, else the host's available memory.

    Parameters
    ----------
    device : str, torch.device or None
        Where the tensors will live; None or a CPU device: host memory. MPS shares the host's memory.

    Returns
    -------
    int
        Bytes.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    return int(psutil.virtual_memory().available)
