"""Networks and model loading: the paper's UNet3D, model cards, devices, the architecture allow-list,
safe weights, MONAI bundles."""

from .architectures import build_network
from .card import Model, ModelCard, ModelError
from .devices import available_devices, resolve_device
from .loading import load_model, save_model
from .unet3d import UNet3D

__all__ = ["Model", "ModelCard", "ModelError", "UNet3D", "available_devices", "build_network", "load_model",
           "resolve_device", "save_model"]
