"""The architecture allow-list: a card names a class, only these are built.

Allowed: this package's UNet3D and the classes of ``monai.networks.nets``; any other class would run code
from outside the allow-list.
"""

from __future__ import annotations

import inspect
import warnings

from torch import nn

from .bundle_code import BUNDLE_CODE_PREFIX, bundle_class
from .card import ModelCard, ModelError
from .network_guard import check_size, construct, refuse_download_arguments
from .unet3d import UNet3D

__all__ = ["ALLOWED_PREFIXES", "DEPRECATED_ARGUMENTS", "allowed_class", "build_network", "class_path",
           "current_arguments", "first_in_channels"]

ALLOWED_PREFIXES = ("napari_lrp.models.", "monai.networks.nets.")

#: {class name: {argument: why it can go}}: arguments older MONAI releases took and the installed one may not
#: (published bundles still write them); dropped with a warning only where the installed class lacks them
DEPRECATED_ARGUMENTS: dict[str, dict[str, str]] = {
    "SwinUNETR": {"img_size": "MONAI 1.5 removed it: SwinUNETR takes any input whose size is divisible by 32"},
}


def allowed_class(name: str, source: str, trust: bool = False, code_root=None) -> type:
    """The class a card names, from the allow-list only.

    Parameters
    ----------
    name : str
        'UNet3D', a dotted ``monai.networks.nets`` name or a bare MONAI class name.
    source : str
        The card, named in the refusal.
    trust : bool
        Whether a bundle's own code (``scripts.*`` in its folder) may run.
    code_root : Path, optional
        The bundle's folder, for ``scripts.*`` classes.

    Returns
    -------
    type

    Raises
    ------
    ModelError
        For a class outside the allow-list.
    """
    short = name.rsplit(".", 1)[-1]
    if name.startswith(BUNDLE_CODE_PREFIX) and code_root is not None:
        return bundle_class(name, code_root, source, trust)
    if name in ("UNet3D", "napari_lrp.models.UNet3D", "napari_lrp.models.unet3d.UNet3D"):
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
    """The dotted name a card writes for a module's class.

    Parameters
    ----------
    module : torch.nn.Module
        The network.

    Returns
    -------
    str
        'napari_lrp.models.X', 'monai.networks.nets.X' or the class's own module path.
    """
    cls = type(module)
    if cls.__module__.startswith("napari_lrp.models"):
        return f"napari_lrp.models.{cls.__name__}"
    if cls.__module__.startswith("monai.networks.nets"):
        return f"monai.networks.nets.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def build_network(card: ModelCard, source: str = "card", trust: bool = False, code_root=None) -> nn.Module:
    """Instantiate the card's architecture (allow-listed) with its keyword arguments.

    Download arguments are refused, the size is checked on the meta device first, and no network is reachable
    while it builds (see :mod:`napari_lrp.models.network_guard`).

    Parameters
    ----------
    card : ModelCard
        The card.
    source : str
        Named in refusals.
    trust, code_root
        As for :func:`allowed_class` (a bundle's own network class).

    Returns
    -------
    torch.nn.Module
    """
    cls = allowed_class(card.architecture["class"], source, trust, code_root)
    kwargs = current_arguments(cls, card.architecture.get("kwargs") or {}, source)
    refuse_download_arguments(kwargs, source)
    check_size(cls, kwargs, source)
    return construct(cls, kwargs, source, f"with {kwargs}")


def current_arguments(cls: type, kwargs: dict, source: str, warn: bool = True) -> dict:
    """``kwargs`` without the :data:`DEPRECATED_ARGUMENTS` the installed ``cls`` no longer takes, each named in
    a warning.

    Parameters
    ----------
    cls : type
        The network class.
    kwargs : dict
        The arguments as the card or bundle writes them.
    source : str
        Named in the warning.
    warn : bool
        Warn about each dropped argument (once per model: when it is built).

    Returns
    -------
    dict
        The arguments to build with.
    """
    kwargs = {k: _component(v, f"{source}: {cls.__name__}.{k}") for k, v in kwargs.items()}
    known = DEPRECATED_ARGUMENTS.get(cls.__name__, {})
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return dict(kwargs)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    dropped = [k for k in kwargs if k in known and k not in params and not takes_any]
    for k in dropped if warn else ():
        warnings.warn(f"{source}: {cls.__name__} argument {k}={kwargs[k]!r} is dropped: {known[k]}",
                      UserWarning, stacklevel=3)
    return {k: v for k, v in kwargs.items() if k not in dropped}


def _component(value, where: str):
    """A network argument that is itself an allow-listed object (``{"_target_": ..., ...}``: DiNTS's search
    space, a TopologyInstance) built from its arguments; other values as they are."""
    if isinstance(value, dict) and "_target_" in value:
        cls = allowed_class(str(value["_target_"]), where)
        args = {k: _component(v, f"{where}.{k}") for k, v in value.items() if not k.startswith("_")}
        refuse_download_arguments(args, where)
        return construct(cls, args, where)
    return value


def first_in_channels(net: nn.Module) -> int | None:
    """The input channels of a network's first convolution or linear layer.

    Parameters
    ----------
    net : torch.nn.Module
        The network.

    Returns
    -------
    int or None
        None when it has no such layer.
    """
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            return m.in_features if isinstance(m, nn.Linear) else m.in_channels
    return None
