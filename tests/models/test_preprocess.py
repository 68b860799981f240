"""Feeding a case to a model as its card says (models/preprocess.py): hand values."""

import numpy as np
import pytest
import torch

from napari_lrp.models import ModelCard, ModelError
from napari_lrp.models.preprocess import (
    PreparedInput,
    ResizedNetwork,
    divisible_padding,
    match_modalities,
    normalise_intensity,
    prepare_input,
)


def test_match_modalities_in_the_models_order_case_insensitively():
    assert match_modalities(["ADC", "tmax", "MTT"], ["MTT", "Tmax"]) == [2, 1]
    with pytest.raises(ModelError, match=r"case.*missing: TTP"):
        match_modalities(["ADC"], ["ADC", "TTP"])


def test_normalise_intensity_hand_values():
    img = np.array([[[[0.0, 2.0, 4.0]]], [[[0.0, 1.0, 3.0]]]], np.float32)  # (C=2, 1, 1, 3)
    mm, bounds = normalise_intensity(img, "minmax")
    np.testing.assert_allclose(mm[0, 0, 0], [0, 0.5, 1]) and np.testing.assert_allclose(mm[1, 0, 0], [0, 1 / 3, 1])
    assert bounds == (0.0, 1.0)
    z, bounds = normalise_intensity(img, "zscore")  # over non-zero voxels: channel 0 mean 3, sd 1
    np.testing.assert_allclose(z[0, 0, 0], [-3, -1, 1])
    assert bounds is None
    same, _ = normalise_intensity(img, "none")
    np.testing.assert_array_equal(same, img)
    with pytest.raises(ModelError, match="unknown intensity"):
        normalise_intensity(img, "robust")


def test_divisible_padding_is_symmetric():
    assert divisible_padding((19, 16, 5), 8) == [(2, 3), (0, 0), (1, 2)]
    assert divisible_padding((19, 16, 5), 1) == [(0, 0)] * 3


def test_prepare_input_pads_and_crops_back():
    card = ModelCard(name="t", architecture={"class": "UNet3D", "kwargs": {}}, modalities=["B", "A"],
                     input={"spatial_size": None, "intensity": "none", "divisible": 4})
    img = np.random.rand(2, 5, 6, 7).astype(np.float32)
    net = torch.nn.Conv3d(2, 1, 1)
    prep = prepare_input(img, ["A", "B"], card, net, torch.device("cpu"))
    assert isinstance(prep, PreparedInput) and prep.channels == [1, 0]
    assert tuple(prep.x.shape) == (1, 2, 8, 8, 8)
    np.testing.assert_array_equal(prep.crop(prep.x)[0].numpy(), img[[1, 0]])
    t = torch.ones(1, 1, 5, 6, 7)
    assert torch.equal(prep.crop(prep.pad(t)), t) and prep.pad(t).sum() == t.sum()


def test_fixed_spatial_size_resizes_inside_the_network():
    card = ModelCard(name="t", architecture={"class": "UNet3D", "kwargs": {}}, modalities=["A"],
                     input={"spatial_size": [4, 4, 4], "intensity": "none", "divisible": 1})
    net = torch.nn.Conv3d(1, 1, 1)
    prep = prepare_input(np.ones((1, 6, 6, 6), np.float32), ["A"], card, net, torch.device("cpu"))
    assert isinstance(prep.network, ResizedNetwork) and tuple(prep.x.shape) == (1, 1, 6, 6, 6)
    assert tuple(prep.network(prep.x).shape) == (1, 1, 6, 6, 6)
