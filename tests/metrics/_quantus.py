"""Import Quantus 0.6 (a test oracle) beside the CPU torch build: it imports zennit, which needs the stand-in
torchvision of tests/lrp/_zennit.py."""

import pytest

from tests.lrp._zennit import import_zennit


def import_quantus():
    import_zennit()
    return pytest.importorskip("quantus")
