"""MONAI bundles (configs/inference.json or .yaml, configs/metadata.json, the checkpoint loader's weights) read as
model cards.

The configuration is read by :mod:`napari_lrp.models.bundle_config`: references and restricted expressions
only, no code is run.
"""

from __future__ import annotations

from pathlib import Path

from .bundle_config import BundleConfig
from .bundle_transforms import added_channels, bundle_pipeline, input_keys, label_painting
from .card import ModelCard, ModelError, check_channel_names, read_json

__all__ = ["bundle_weights", "card_from_bundle", "painted_regions", "pipeline_from_bundle"]


def _sigmoid_postprocessing(config: BundleConfig) -> bool:
    """Whether the bundle's ``postprocessing`` applies a sigmoid (``Activationsd``/``Activations`` with
    sigmoid true): its output channels are then independent labels, not classes."""
    if not config.has("postprocessing"):
        return False
    for at, _where, t in config.compose("postprocessing")[1] or []:
        if isinstance(t, dict) and str(t.get("_target_", "")).rsplit(".", 1)[-1] in ("Activationsd", "Activations"):
            if config.resolve(t.get("sigmoid", False), f"{at}#sigmoid") is True:
                return True
    return False


def pipeline_from_bundle(folder: Path, trust: bool = False):
    """The bundle's ``preprocessing`` and ``inferer`` (:mod:`napari_lrp.models.bundle_transforms`).

    Parameters
    ----------
    folder : Path
        The bundle's folder.
    trust : bool
        Whether transforms of the bundle's own ``scripts/`` may run.

    Returns
    -------
    BundlePipeline or None
        None when the configuration has no ``preprocessing`` (then the card's intensity rule applies).
    """
    return bundle_pipeline(BundleConfig.read(Path(folder)), trust)


def bundle_weights(config: BundleConfig) -> Path:
    """The weights file the bundle's ``CheckpointLoader`` reads (``load_path``), else models/model.pt.

    Parameters
    ----------
    config : BundleConfig
        The inference configuration.

    Returns
    -------
    Path
        Inside the bundle's folder.
    """
    for where, loader in _checkpoint_loaders(config.data, ""):
        if config.disabled(loader, where):
            continue
        path = config.resolve(loader.get("load_path"), f"{where}#load_path")
        if not isinstance(path, str) or not path:
            raise ModelError(f"{config.source}: {where}#load_path must be a file path, not {path!r}")
        p = Path(path)
        p = (p if p.is_absolute() else config.folder / p).resolve()
        if not p.is_relative_to(config.folder.resolve()):
            raise ModelError(f"{config.source}: {where}#load_path {path!r} is outside the bundle; napari-lrp reads "
                             "the bundle's own weights")
        return p
    return config.folder / "models" / "model.pt"


def _checkpoint_loaders(value, where: str):
    """(key path, dict) of every CheckpointLoader in the configuration, as written (nothing resolved)."""
    if isinstance(value, dict):
        if str(value.get("_target_", "")).rsplit(".", 1)[-1] == "CheckpointLoader":
            yield where, value
        for k, v in value.items():
            yield from _checkpoint_loaders(v, f"{where}#{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _checkpoint_loaders(v, f"{where}#{i}")


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
    """The entry's ``channel_def`` (an output's names may be its ``label_def`` instead, as some bundles write)."""
    field = "channel_def" if entry.get("channel_def") or side == "inputs" else "label_def"
    chdef = entry.get(field) or {}
    if not isinstance(chdef, dict) or not all(isinstance(v, str) and v.strip() for v in chdef.values()):
        raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.{field}' must map channel indices "
                         f"to names (non-empty text), not {chdef!r:.80}")
    return chdef


def _channel_count(value, meta_path: Path, side: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value \
            or not 1 <= int(value) <= MAX_CHANNELS:
        raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.num_channels' is {value!r}; it must be a "
                         f"whole number from 1 to {MAX_CHANNELS}")
    return int(value)


def card_from_bundle(folder: Path, trust: bool = False) -> tuple[ModelCard, Path]:
    """A card from a MONAI bundle folder (configs/metadata.json, configs/inference.json, models/model.pt).

    Input channels are named by the metadata's ``channel_def``; where it names fewer channels than a
    preprocessing that loads one file per key and merges them (the CECT bundle's artery, vein, excret), by
    those keys.

    Parameters
    ----------
    folder : Path
        The bundle's folder (configs/ and models/ inside).
    trust : bool
        Whether a postprocessing step of the bundle's own ``scripts/`` may run (to paint the label).

    Returns
    -------
    tuple
        (ModelCard, the weights file).
    """
    config = BundleConfig.read(folder)
    cfg_path = config.source
    if not config.has("network_def"):
        raise ModelError(f"{cfg_path}: no network_def")
    net_def = config.get("network_def")
    if not isinstance(net_def, dict) or "_target_" not in net_def:
        raise ModelError(f"{cfg_path}: no network_def with a _target_")
    kwargs = {k: v for k, v in net_def.items() if not k.startswith("_")}
    target = net_def["_target_"]
    cls_name = target if "." in target else f"monai.networks.nets.{target}"
    meta_path = folder / "configs" / "metadata.json"
    meta = read_json(meta_path, whole=" (the bundle's metadata)") if meta_path.exists() else {}
    inputs, outputs = _data_format(meta, meta_path)
    n_in = _channel_count(inputs.get("num_channels", kwargs.get("in_channels", 1)), meta_path, "inputs")
    chdef = _channel_def(inputs, meta_path, "inputs")
    keys, added = input_keys(config), added_channels(config)
    if not 0 <= added < n_in:
        raise ModelError(f"{meta_path}: the preprocessing adds {added} guidance channels, but the network takes "
                         f"{n_in} input channels; make network_data_format.inputs.*.num_channels count the image's "
                         "channels and the guidance's")
    names = keys if len(keys) == n_in > 1 and len(chdef) < n_in else \
        [str(chdef.get(str(i), f"ch{i}")) for i in range(n_in - added)]
    modalities = check_channel_names(names, str(meta_path), "network_data_format.inputs.*.channel_def")
    outdef = _channel_def(outputs, meta_path, "outputs")
    n_out = _channel_count(outputs.get("num_channels", kwargs.get("out_channels", 2)), meta_path, "outputs")
    for side, n, arg in (("inputs", n_in, "in_channels"), ("outputs", n_out, "out_channels")):
        if isinstance(kwargs.get(arg), int) and kwargs[arg] != n:
            raise ModelError(f"{meta_path}: field 'network_data_format.{side}.*.num_channels' is {n}, but the "
                             f"network_def builds {kwargs[arg]} ({arg}); make them agree")
    classes = [str(outdef.get(str(i), f"class{i}")) for i in range(n_out)]
    weights = bundle_weights(config)
    sigmoid = n_out == 1 or _sigmoid_postprocessing(config)
    painted = label_painting(config, n_out, trust) if sigmoid else None
    painting, lambdad = painted if painted is not None else (None, False)
    card = ModelCard(
        name=meta.get("name", folder.name), architecture={"class": cls_name, "kwargs": kwargs},
        weights=str(Path("..") / weights.resolve().relative_to(folder.resolve())), modalities=modalities,
        input={"spatial_size": None,
               "intensity": "none" if config.has("preprocessing") else meta.get("napari_lrp_intensity", "zscore"),
               "divisible": int(meta.get("napari_lrp_divisible", 16))},
        classes=classes, target_class=min(1, n_out - 1),
        output_activation="sigmoid" if sigmoid else "softmax",
        label_values=painting, regions=painted_regions(painting, classes) if lambdad else None,
    )
    return card, weights


def painted_regions(painting: list[int], classes: list[str]) -> dict[str, list[int]]:
    """The label values of each region under a painting: a value belongs to every region of the largest
    combination painted with it (BraTS' 4 is painted where all three regions are: it is in each; 2 only where
    the whole tumour alone is). A ground-truth file labelled the way the bundle paints then gives each region.

    Parameters
    ----------
    painting : list of int
        :func:`~napari_lrp.models.bundle_transforms.label_painting`'s table (2**K values).
    classes : list of str
        The K region names.

    Returns
    -------
    dict
        {region name: sorted label values}; regions no value belongs to are left out (their ground truth is
        then the case's).
    """
    largest: dict[int, int] = {}
    for combo, value in enumerate(painting):
        if value and bin(combo).count("1") >= bin(largest.get(value, 0)).count("1"):
            largest[value] = combo
    regions = {name: sorted(v for v, combo in largest.items() if combo >> k & 1) for k, name in enumerate(classes)}
    return {k: v for k, v in regions.items() if v}
