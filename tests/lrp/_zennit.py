"""Import zennit beside the CPU torch build: a minimal stand-in torchvision module first.

zennit imports torchvision only for its ResNet canonizer types; the real torchvision wheel does not
import next to torch 2.13.0+cpu here, so the stand-in provides models.resnet.BasicBlock/Bottleneck.
"""

import sys
import types

import pytest
from torch import nn


def import_zennit():
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        resnet = types.ModuleType("torchvision.models.resnet")

        class BasicBlock(nn.Module):
            pass

        class Bottleneck(nn.Module):
            pass

        resnet.BasicBlock, resnet.Bottleneck = BasicBlock, Bottleneck
        models.resnet = resnet
        tv.models = models
        sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet})
    return pytest.importorskip("zennit")
