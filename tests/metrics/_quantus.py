"""Import Quantus 0.6 (a test oracle) beside the CPU torch build: it imports zennit, which needs the stand-in
torchvision of tests/lrp/_zennit.py."""

import pytest
import torch

from tests.lrp._zennit import import_zennit


def import_quantus():
    import_zennit()
    return pytest.importorskip("quantus")


class QuantusModel:
    """The two calls Quantus's evaluate_batch makes of a model (shape_input, predict) around a torch callable."""

    def __init__(self, net):
        self.net = net

    def shape_input(self, x, shape, channel_first=True, batched=True):
        return x

    def predict(self, x):
        with torch.no_grad():
            return self.net(torch.as_tensor(x)).numpy()
