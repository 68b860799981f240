import numpy as np
import pytest
import torch

from napari_lrp.metrics import (
    groundtruth_inclusivity,
    inclusivity,
    input_inclusivity,
    mean_power,
    signal_distribution,
)


def test_inclusivity_hand_values():
    a = np.array([1, 1, 1, 0, 0], bool)
    assert inclusivity(a, np.array([1, 1, 0, 0, 0], bool)) == pytest.approx(1.0, abs=1e-8)  # b inside a
    assert inclusivity(a, np.array([0, 1, 0, 1, 1], bool)) == pytest.approx(1 / 3, abs=1e-8)
    assert np.isnan(inclusivity(a, np.zeros(5, bool)))
    # the smoothing s = 1e-9 is in the denominator
    assert inclusivity(a, a) == 3 / (3 + 1e-9)


def test_input_inclusivity_thresholds_at_the_boundary():
    # channel 0: |R|/max = [1, .5, .49, 0] -> a = [1, 1, 0, 0] (>= 0.5)
    # image 0: |x|/max = [1, .1, .2, .3] -> b = [1, 0, 1, 1] (> 0.1 strictly)
    R = np.array([[1.0, -0.5, 0.49, 0.0], [0.0, 0.0, 0.0, 0.0]])
    x = np.array([[10.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    c = input_inclusivity(R, x)
    assert c.per_channel[0] == pytest.approx(1 / 3)
    assert np.isnan(c.per_channel[1])  # b empty: undefined
    assert c.mean == pytest.approx(1 / 3)
    signed = input_inclusivity(R, x, signed=True)  # -0.5 no longer counts
    assert signed.per_channel[0] == pytest.approx(1 / 3)
    x2 = np.array([[10.0, 5.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    assert input_inclusivity(R, x2).per_channel[0] == pytest.approx(2 / 4)
    assert input_inclusivity(R, x2, signed=True).per_channel[0] == pytest.approx(1 / 4)
    assert input_inclusivity(R, x2).per_channel[1] == 0.0  # zero relevance selects nothing


def test_groundtruth_inclusivity():
    R = np.zeros((2, 2, 3))
    R[0, 0, :2] = [4, 3]  # a_0 = two voxels
    R[1, 1, 2] = -1  # a_1 = one voxel, outside the label
    label = np.zeros((2, 3), np.uint8)
    label[0, 0] = label[0, 2] = 1
    c = groundtruth_inclusivity(R, label)
    np.testing.assert_allclose(c.per_channel, [0.5, 0.0], atol=1e-8)
    assert c.mean == pytest.approx(0.25)
    assert np.isnan(groundtruth_inclusivity(R, np.zeros((2, 3))).mean)


def test_mean_power_hand_array():
    R = np.array([1.0, 1, 1, 1, 6, -2])
    mp, plus, minus = mean_power(R)
    assert plus == pytest.approx(6.0)  # top 20% of 5 values: [6]; bottom: mean 1
    assert minus == 1.0  # fewer than two negative values
    assert mp == pytest.approx(3.5)
    R2 = np.array([-1.0, -1, -1, -1, -1, -1, -1, -1, -5, -5, 2, 4])
    assert mean_power(R2)[2] == pytest.approx(5.0)  # 10 values: bottom 8 mean 1, top 2 mean 5
    assert mean_power(R2)[1] == pytest.approx(2.0)  # 2 values: bottom 1 (2), top 1 (4)


def test_mean_power_scale_invariant_and_per_channel():
    R = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    for c in (0.01, 3.0, 1e4):
        np.testing.assert_allclose(mean_power(c * R), mean_power(R), rtol=1e-6)
    per = mean_power(R, per_channel=True)
    assert per[0].shape == (3,)
    assert per[1][1] == pytest.approx(mean_power(R[1])[1])


def test_signal_distribution():
    R = torch.tensor([[1.0, -2.0, 4.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(signal_distribution(R), [0.25, 0.0])
