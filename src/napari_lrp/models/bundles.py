"""MONAI bundles (configs/inference.json, configs/metadata.json, models/model.pt) read as model cards.

Only literal values and ``@`` references are read; ``$`` expressions (Python code) are refused.
"""

from __future__ import annotations

from pathlib import Path

from .bundle_transforms import bundle_pipeline
from .card import ModelCard, ModelError, check_channel_names, read_json

__all__ = ["card_from_bundle", "pipeline_from_bundle"]


#: values a config's ``@`` references may expand to (a small file can fan out without bound)
MAX_RESOLVED_VALUES = 100_000
MAX_REFERENCE_DEPTH = 64


def _resolve_refs(value, config: dict, source: str, chain: tuple[str, ...] = (), budget: list | None = None):
    budget = [MAX_RESOLVED_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ModelError(f"{source}: the references under {'@' + chain[0] if chain else 'the network definition'} "
                         f"expand to more than {MAX_RESOLVED_VALUES:,} values; a bundle's configuration is not that "
                         "large: check the '@' references")
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in config:
            raise ModelError(f"{source}: reference {value!r} not found in the config")
        if key in chain:
            raise ModelError(f"{source}: reference {value!r} refers to itself "
                             f"({' -> '.join('@' + k for k in (*chain, key))}); replace it by a value")
        if len(chain) >= MAX_REFERENCE_DEPTH:
            raise ModelError(f"{source}: reference {value!r} is more than {MAX_REFERENCE_DEPTH} references deep "
                             f"({' -> '.join('@' + k for k in chain[:4])} ...)")
        return _resolve_refs(config[key], config, source, (*chain, key), budget)
    if isinstance(value, str) and value.startswith("$"):
        raise ModelError(f"{source}: the {'network definition' if not chain else '@' + chain[-1]} holds a Python "
                         f"expression {value!r}; napari-lrp does not evaluate code from bundles. Replace it by a "
                         "literal value")
    if isinstance(value, dict):
        return {k: _resolve_refs(v, config, source, chain, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, config, source, chain, budget) for v in value]
    return value


def _sigmoid_postprocessing(config: dict) -> bool:
    """Whether the bundle's ``postprocessing`` applies a sigmoid (``Activationsd``/``Activations`` with
    sigmoid true): its output channels are then independent labels, not classes."""
    post = config.get("postprocessing")
    items = post.get("transforms", []) if isinstance(post, dict) else post if isinstance(post, list) else []
    return any(isinstance(t, dict) and str(t.get("_target_", "")).rsplit(".", 1)[-1] in ("Activationsd", "Activations")
               and t.get("sigmoid") is True for t in items)


def _config(folder: Path) -> tuple[dict, Path]:
    cfg_path = folder / "configs" / "inference.json"
    if not cfg_path.exists():
        raise ModelError(f"{folder}: not a MONAI bundle: configs/inference.json is missing (YAML configs are not read)")
    config = read_json(cfg_path, whole=" (the bundle's configuration)")
    return config, cfg_path


def pipeline_from_bundle(folder: Path):
    """The bundle's ``preprocessing`` and ``inferer`` (:mod:`napari_lrp.models.bundle_transforms`).

    Parameters
    ----------
    folder : Path
        The bundle's folder.

    Returns
    -------
    BundlePipeline or None
        None when inference.json has no ``preprocessing`` (then the card's intensity rule applies).
    """
    config, cfg_path = _config(Path(folder))
    return bundle_pipeline(config, str(cfg_path), lambda v: _resolve_refs(v, config, str(cfg_path)))


#: channels a bundle's metadata may declare (inputs or outputs)
MAX_CHANNELS = 1024


def _data_format(meta: dict, meta_path: Path) -> tuple[dict, dict]:
    """The first input and output of the metadata's ``network_data_format`` (empty when absent)."""
    fmt = meta.get("network_data_format", {})
    if not isinstance(fmt, dict):
        raise ModelError(f"{meta_path}: field 'network_data_format' must be an object, not {fmt!r:.60}")
    out = []
    for side in ("inputs", "outputs"):
        entries = fmt.get(side, {})
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise ModelError(f"{meta_path}: field 'network_data_format.{side}' must be an object of objects "
                             f"(key -> description), not {entries!r:.60}")
        out.append(next(iter(entries.values()), {}))
    return out[0], out[1]


def _channel_def(entry: dict, meta_path: Path, side: str) -> dict:
    chdef = entry.get("channel_def") or {}
    if not isinstance(chdef, dict) or not all(isinstance(v, str) and v.strip() for v in chdef.values()):
        raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.channel_def' must map channel indices "
                         f"to names (non-empty text), not {chdef!r:.80}")
    return chdef


def _channel_count(value, meta_path: Path, side: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value \
            or not 1 <= int(value) <= MAX_CHANNELS:
        raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.num_channels' is {value!r}; it must be a "
                         f"whole number from 1 to {MAX_CHANNELS}")
    return int(value)


def card_from_bundle(folder: Path) -> tuple[ModelCard, Path]:
    """A card from a MONAI bundle folder (configs/metadata.json, configs/inference.json, models/model.pt).

    Parameters
    ----------
    folder : Path
        The bundle's folder (configs/ and models/ inside).

    Returns
    -------
    tuple
        (ModelCard, the weights file).
    """
    config, cfg_path = _config(folder)
    net_def = config.get("network_def")
    if isinstance(net_def, str) and net_def.startswith("@"):
        net_def = _resolve_refs(net_def, config, str(cfg_path))
    if not isinstance(net_def, dict) or "_target_" not in net_def:
        raise ModelError(f"{cfg_path}: no network_def with a _target_")
    kwargs = _resolve_refs({k: v for k, v in net_def.items() if k != "_target_"}, config, str(cfg_path))
    target = net_def["_target_"]
    cls_name = target if "." in target else f"monai.networks.nets.{target}"
    meta_path = folder / "configs" / "metadata.json"
    meta = read_json(meta_path, whole=" (the bundle's metadata)") if meta_path.exists() else {}
    inputs, outputs = _data_format(meta, meta_path)
    n_in = _channel_count(inputs.get("num_channels", kwargs.get("in_channels", 1)), meta_path, "inputs")
    chdef = _channel_def(inputs, meta_path, "inputs")
    modalities = check_channel_names([str(chdef.get(str(i), f"ch{i}")) for i in range(n_in)], str(meta_path),
                                     "network_data_format.inputs.*.channel_def")
    outdef = _channel_def(outputs, meta_path, "outputs")
    n_out = _channel_count(outputs.get("num_channels", kwargs.get("out_channels", 2)), meta_path, "outputs")
    for side, n, arg in (("inputs", n_in, "in_channels"), ("outputs", n_out, "out_channels")):
        if isinstance(kwargs.get(arg), int) and kwargs[arg] != n:
            raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.num_channels' is {n}, but the "
                             f"network_def builds {kwargs[arg]} ({arg}); make them agree")
    classes = [str(outdef.get(str(i), f"class{i}")) for i in range(n_out)]
    card = ModelCard(
        name=meta.get("name", folder.name), architecture={"class": cls_name, "kwargs": kwargs},
        weights=str(Path("..") / "models" / "model.pt"), modalities=modalities,
        input={"spatial_size": None,
               "intensity": "none" if "preprocessing" in config else meta.get("napari_lrp_intensity", "zscore"),
               "divisible": int(meta.get("napari_lrp_divisible", 16))},
        classes=classes, target_class=min(1, n_out - 1),
        output_activation="sigmoid" if n_out == 1 or _sigmoid_postprocessing(config) else "softmax",
    )
    return card, folder / "models" / "model.pt"
