"""No network while a model is built: refuse download arguments, block connections, bound the size.

napari-lrp never fetches anything at run time. A card or bundle may name an allow-listed class whose
constructor downloads weights (MONAI ``HoVerNet(pretrained_url=...)``, ``pretrained=True`` in others);
:func:`refuse_download_arguments` refuses such arguments by rule, and :func:`no_network` makes any
connection or URL opened by the building thread fail, as a second wall. :func:`parameter_count` builds the
network on PyTorch's meta device (no memory) so a card asking for a huge network is refused before it
allocates (:data:`MAX_PARAMETERS`).
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator

import torch
from torch import nn

from .card import ModelError
from .devices import available_bytes

__all__ = ["check_allocation", "check_size", "construct", "MAX_PARAMETERS", "NetworkBlocked", "no_network",
           "module_window_bytes", "parameter_count", "refuse_download_arguments", "window_bytes"]

#: the largest network a card may ask for (parameters; 2 GB of float32 weights); larger ones are refused
MAX_PARAMETERS = 500_000_000
_DOWNLOAD_KEY = re.compile(r"pretrain|url|download|hub|model_dir|checkpoint_path", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class NetworkBlocked(ModelError, ConnectionError):
    """A connection or URL was opened while a network was being built."""


def refuse_download_arguments(kwargs: dict, source: str, path: str = "") -> None:
    """Refuse arguments that would fetch weights, at any depth of ``kwargs``.

    A download-type name (pretrained, pretrained_url, url, download, hub, ...) with a value that is not
    false/empty, ``weights`` given as a string, or any string that is a URL (``scheme://``).

    Parameters
    ----------
    kwargs : dict
        The architecture's keyword arguments.
    source : str
        The model, named in the refusal.
    path : str
        Where in the arguments (for nested ones).
    """
    for key, value in kwargs.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            refuse_download_arguments(value, source, f"{where}.")
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        url = next((v for v in values if isinstance(v, str) and _URL.match(v)), None)
        fetches = bool(_DOWNLOAD_KEY.search(str(key))) and value not in (None, False, "", 0, [], {})
        named_weights = str(key).lower() == "weights" and isinstance(value, str)
        if url is not None or fetches or named_weights:
            raise ModelError(f"{source}: architecture argument {where}={value!r} would fetch weights from the "
                             "network or a file; napari-lrp never downloads at run time. Remove it (or set it to "
                             "false) and put the trained weights in the card's weights file")


_blocked = threading.local()


def _guard(original):
    def guarded(*args, **kwargs):
        if getattr(_blocked, "on", False):
            target = next((a for a in args if isinstance(a, (str, tuple, urllib.request.Request))), None)
            if isinstance(target, urllib.request.Request):
                target = target.full_url
            raise NetworkBlocked(f"{_blocked.source}: building the network tried to open {target!r}; napari-lrp "
                                 "allows no network access while models load. Remove the download argument")
        return original(*args, **kwargs)

    guarded.__wrapped__ = original
    return guarded


_PATCHES = [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
            (urllib.request.OpenerDirector, "open")]
_install_lock = threading.Lock()
_installed = False


def _install() -> None:
    """Wrap the connection entry points once; the wrappers act only in a thread inside :func:`no_network`."""
    global _installed
    with _install_lock:
        if _installed:
            return
        for owner, name in _PATCHES:
            setattr(owner, name, _guard(getattr(owner, name)))
        _installed = True


@contextlib.contextmanager
def no_network(source: str = "model") -> Iterator[None]:
    """Inside, the current thread can open no socket connection and no URL (http, https, ftp, file).

    Parameters
    ----------
    source : str
        The model, named in the refusal.

    Yields
    ------
    None
    """
    _install()
    previous = getattr(_blocked, "on", False), getattr(_blocked, "source", "")
    _blocked.on, _blocked.source = True, source
    try:
        yield
    finally:
        _blocked.on, _blocked.source = previous


def parameter_count(cls: type, kwargs: dict) -> int | None:
    """Parameters and buffers of ``cls(**kwargs)`` built on the meta device (no memory).

    Parameters
    ----------
    cls : type
        The network's class.
    kwargs : dict
        Its arguments.

    Returns
    -------
    int or None
        None when the class cannot be built there (it reads tensor values in its constructor).
    """
    try:
        with torch.device("meta"), no_network():
            net = cls(**kwargs)
    except NetworkBlocked:
        raise
    except Exception:  # noqa: BLE001 - some constructors need real tensors; the size is then not known
        return None
    if not isinstance(net, nn.Module):
        return None
    return sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())


#: what a network's constructor raises on arguments it cannot take
BUILD_ERRORS = (TypeError, ValueError, AssertionError, RuntimeError, IndexError, KeyError, AttributeError)


def construct(cls: type, kwargs: dict, source: str, what: str = ""):
    """``cls(**kwargs)`` built with no network reachable; a failure refused as a ModelError.

    Parameters
    ----------
    cls : type
        The class (already allow-listed).
    kwargs : dict
        Its arguments.
    source : str
        The model, named in the refusal.
    what : str
        Where the arguments come from, for the refusal ('with {...}', 'from plans.json').

    Returns
    -------
    object
        The instance.
    """
    try:
        with no_network(source):
            return cls(**kwargs)
    except ModelError:
        raise
    except BUILD_ERRORS as exc:
        raise ModelError(f"{source}: cannot build {cls.__name__}{' ' + what if what else ''}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def check_size(cls: type, kwargs: dict, source: str) -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` parameters, or more than half the free memory.

    Parameters
    ----------
    cls : type
        The network's class.
    kwargs : dict
        Its arguments (counted on the meta device).
    source : str
        The model, named in the refusal.
    """
    n = parameter_count(cls, kwargs)
    if n is None:
        return
    import psutil

    nbytes = 4 * n
    free = psutil.virtual_memory().available
    if n > MAX_PARAMETERS or nbytes > free / 2:
        raise ModelError(f"{source}: {cls.__name__} with {kwargs} has {n / 1e6:.1f} million parameters "
                         f"({nbytes / 1e9:.2g} GB); napari-lrp builds at most {MAX_PARAMETERS / 1e6:.0f} million "
                         f"and no more than half the free memory ({free / 1e9:.2g} GB free). Check the card's "
                         "architecture arguments")


#: bytes kept per byte of module outputs in one LRP pass (the forward outputs, the rules' states and the
#: relevance flowing back), measured on the UNet3D and nnU-Net's PlainConvUNet on the CPU
LRP_BYTES_PER_OUTPUT_BYTE = 3.0


def window_bytes(cls: type, kwargs: dict, input_shape: tuple) -> float | None:
    """About the bytes one LRP pass of ``cls(**kwargs)`` on an input keeps, from a forward pass on the meta device.

    The float32 outputs of every module times :data:`LRP_BYTES_PER_OUTPUT_BYTE` (no memory is allocated).

    Parameters
    ----------
    cls, kwargs
        The network's class and arguments, as for :func:`parameter_count`.
    input_shape : tuple of int
        (N, C, Z, Y, X).

    Returns
    -------
    float or None
        None when the network cannot run on the meta device.
    """
    total, error = _output_elements(cls, kwargs, input_shape, "meta")
    if total is None and not _meta_only(error):
        return None  # the pass fails for a reason of its own (mismatched sizes): a real pass would fail the same way
    if total is None:
        # an operation without a meta kernel (shifted windows, rolls): count on a real forward pass of a
        # smaller input and scale by the voxels (module outputs grow with the voxels in these networks); one
        # network built on the CPU serves every count
        try:
            with torch.device("cpu"), no_network():
                net = cls(**kwargs).eval()
        except NetworkBlocked:
            raise
        except Exception:  # noqa: BLE001 - arguments the network refuses
            return None
        spatial = input_shape[2:]
        for num, den in ((1, 4), (1, 3), (1, 2), (2, 3)):
            small = tuple(s * num // den for s in spatial)
            if all(s * num % den == 0 and t >= 16 for s, t in zip(spatial, small)):
                counted, _error = _counted(net, (*input_shape[:2], *small), "cpu")
                if counted is not None:
                    total = counted * math.prod(spatial) / math.prod(small)
                    break
        if total is None:
            # a network that takes only its own input size (UNesT): count at that size; without gradients
            # each output is freed as the pass moves on, so the count costs a fraction of what it estimates
            total, _error = _counted(net, input_shape, "cpu")
    return None if total is None else 4.0 * total * LRP_BYTES_PER_OUTPUT_BYTE


def _meta_only(error: Exception | None) -> bool:
    """Whether a pass on the meta device failed only because the meta device lacks a kernel or a value."""
    return isinstance(error, NotImplementedError) or "meta" in str(error).lower()


def _output_elements(cls: type, kwargs: dict, input_shape: tuple, device: str) -> tuple[int | None, Exception | None]:
    """The elements of every leaf module's output in one forward pass, or (None, the error) where it fails."""
    try:
        with torch.device(device), no_network():
            net = cls(**kwargs).eval()
    except NetworkBlocked:
        raise
    except Exception as exc:  # noqa: BLE001 - arguments the network refuses at this size
        return None, exc
    return _counted(net, input_shape, device)


def _counted(net: nn.Module, input_shape: tuple, device: str) -> tuple[int | None, Exception | None]:
    """The elements of every leaf module's output of ``net`` (on ``device``) in one forward pass."""
    total = 0

    def count(_module, _args, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    handles = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        with torch.device(device), no_network(), torch.no_grad():
            net(torch.zeros(input_shape))
    except NetworkBlocked:
        raise
    except Exception as exc:  # noqa: BLE001 - an operation without a kernel there, or a size the network refuses
        return None, exc
    finally:
        for h in handles:
            h.remove()
    return total, None


def module_window_bytes(network: nn.Module, input_shape: tuple) -> float | None:
    """About the bytes one LRP pass of a built network on an input keeps (as :func:`window_bytes`).

    Counted on a copy on the meta device (no memory for activations), else by a forward pass without gradients
    on the CPU, where each output is freed as the pass moves on.

    Parameters
    ----------
    network : torch.nn.Module
        The network (its weights are copied, not changed).
    input_shape : tuple of int
        (N, C, Z, Y, X).

    Returns
    -------
    float or None
        None when the network fails on such an input.
    """
    import copy

    # a copy whose weights are meta tensors: the weights themselves are never copied
    memo = {id(p): nn.Parameter(p.detach().to("meta"), requires_grad=False) for p in network.parameters()}
    memo.update({id(b): b.to("meta") for b in network.buffers()})
    total, error = _counted(copy.deepcopy(network, memo).eval(), input_shape, "meta")
    if total is None and _meta_only(error):
        on_cpu = all(t.device.type == "cpu" and t.dtype == torch.float32
                     for t in (*network.parameters(), *network.buffers()) if t.is_floating_point())
        # counting adds and removes hooks only: the network itself serves where it already runs on the CPU
        net = network if on_cpu else copy.deepcopy(network).to("cpu").float().eval()
        total, error = _counted(net, input_shape, "cpu")
    return None if total is None else 4.0 * total * LRP_BYTES_PER_OUTPUT_BYTE


def check_allocation(nbytes: float, what: str, source: str, fix: str, device=None) -> None:
    """Refuse an allocation estimated before it is made when it exceeds half the free memory.

    Parameters
    ----------
    nbytes : float
        The estimate.
    what : str
        What would be allocated (named in the refusal with the estimate and the budget).
    source : str
        The model, named in the refusal.
    fix : str
        What to do instead.
    device : torch.device, optional
        Where it would be allocated (a CUDA GPU's free memory); None: the host's.
    """
    free = available_bytes(device)
    if nbytes > free / 2:
        raise ModelError(f"{source}: {what} needs about {nbytes / 1e9:.2f} GB, more than half the free memory "
                         f"({free / 1e9:.2f} GB free); {fix}")
