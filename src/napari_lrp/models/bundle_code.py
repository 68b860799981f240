"""Code from a MONAI bundle's own ``scripts/`` folder (its networks and transforms), imported only when the user
trusts it.

A bundle may name a class of its own (``scripts.networks.unest.UNesT``, ``scripts.my_transforms.ConcatImages``)
where the allow-list has none. Running
it runs the bundle's Python files, so napari-lrp refuses it, naming the file, unless ``trust=True`` is given
(``load_model(path, trust=True)``, ``napari-lrp explain --trust``). Trusted code is imported from inside the
bundle's folder only, with no network reachable, under the bundle's own ``scripts`` package name, which is
removed from ``sys.modules`` afterwards so two bundles' ``scripts`` never mix.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from torch import nn

from .card import ModelError
from .network_guard import no_network

__all__ = ["BUNDLE_CODE_PREFIX", "bundle_class"]

#: the package a bundle's own code lives in
BUNDLE_CODE_PREFIX = "scripts."


def bundle_class(name: str, root: Path, source: str, trust: bool, base: type = nn.Module,
                 what: str = "architecture") -> type:
    """A class a bundle defines in its ``scripts/`` folder (a network, or a transform).

    Parameters
    ----------
    name : str
        Dotted name starting with ``scripts.`` (``scripts.networks.unest.UNesT``).
    root : Path
        The bundle's folder (``scripts/`` inside it).
    source : str
        Named in refusals.
    trust : bool
        Whether the user allows the bundle's code to run.
    base : type
        What the class must be (``torch.nn.Module`` for a network; ``object`` for a transform).
    what : str
        Where the configuration names it, for messages ("architecture", "preprocessing#transforms#4").

    Returns
    -------
    type
        A subclass of ``base``.
    """
    module_name, _, cls_name = name.rpartition(".")
    file = Path(root) / (module_name.replace(".", "/") + ".py")
    if not file.is_file():
        package = Path(root) / module_name.replace(".", "/") / "__init__.py"
        if not package.is_file():
            raise ModelError(f"{source}: {what} {name!r} names {file}, which does not exist in the bundle")
        file = package
    if not trust:
        raise ModelError(f"{source}: {what} {name!r} is the bundle's own code ({file}); napari-lrp runs a "
                         "bundle's code only when asked, after you have read it: load_model(..., trust=True), "
                         "napari-lrp explain --trust, or tick \"run the model's own code\" in the Relevance dock")
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "scripts" or k.startswith("scripts.")}
    sys.path.insert(0, str(root))
    try:
        with no_network(source):
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the bundle's code fails in its own ways
        raise ModelError(f"{source}: importing {module_name} from {file} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        kind = "network class" if base is nn.Module else "class"
        raise ModelError(f"{source}: {file} defines no {kind} {cls_name!r}")
    return cls
