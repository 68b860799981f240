"""Networks and model loading: the paper's UNet3D, model cards, safe weights, MONAI bundles."""

from .loading import (
    Model,
    ModelCard,
    ModelError,
    available_devices,
    build_network,
    load_model,
    resolve_device,
    save_model,
)
from .unet3d import UNet3D

__all__ = ["Model", "ModelCard", "ModelError", "UNet3D", "available_devices", "build_network", "load_model",
           "resolve_device", "save_model"]
