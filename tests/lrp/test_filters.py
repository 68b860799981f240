"""Each filter definition on hand-made arrays."""

import numpy as np
import pytest
import torch

from napari_lrp.lrp.filters import (
    Amplify,
    Clamp,
    Identity,
    Pass,
    default_grid,
    format_filter,
    make_filter,
    parse_filter,
)

# one sample, one channel: max |R| = 4, so r = R / 4 = [-1, -0.5, -0.125, 0, 0.05, 0.25, 0.75]
R = np.array([[[-4.0, -2.0, -0.5, 0.0, 0.2, 1.0, 3.0]]], dtype=np.float32)


def test_pass_keeps_the_band_inclusive():
    out = Pass(0.1, 0.5)(R)
    np.testing.assert_allclose(out, [[[0, -2.0, -0.5, 0, 0, 1.0, 0]]])
    out = Pass(0, 0.2)(R)  # the paper's 0.2-pass
    np.testing.assert_allclose(out, [[[0, 0, -0.5, 0, 0.2, 0, 0]]])


def test_clamp_bounds_the_magnitude_and_keeps_zero():
    out = Clamp(0.1, 0.5)(R)
    np.testing.assert_allclose(out, [[[-2.0, -2.0, -0.5, 0, 0.4, 1.0, 2.0]]])
    out = Clamp(0, 0.2)(R)
    np.testing.assert_allclose(out, [[[-0.8, -0.8, -0.5, 0, 0.2, 0.8, 0.8]]])


def test_amplify_scales_above_alpha():
    out = Amplify(0.5, 2)(R)
    np.testing.assert_allclose(out, [[[-8.0, -4.0, -0.5, 0, 0.2, 1.0, 6.0]]])


@pytest.mark.parametrize("f", [Pass(0, 1), Clamp(0, 1), Amplify(0.3, 1), Identity()])
def test_identities(f):
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(f(x), x)


@pytest.mark.parametrize("f", [Pass(0.1, 0.6), Clamp(0.1, 0.4), Amplify(0.5, 2)])
@pytest.mark.parametrize("scope", ["sample", "channel"])
@pytest.mark.parametrize("signs", ["joint", "separate"])
def test_scale_equivariance(f, scope, signs):
    f = type(f)(*(list(vars(f).values())[0:2]), scope=scope, signs=signs)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(f(7.5 * x), 7.5 * f(x))


def test_channel_scope_normalises_each_channel():
    x = np.array([[[1.0, 0.5], [10.0, 5.0]]])  # channel maxima 1 and 10
    np.testing.assert_allclose(Pass(0.6, 1, scope="channel")(x), [[[1.0, 0], [10.0, 0]]])
    np.testing.assert_allclose(Pass(0.6, 1, scope="sample")(x), [[[0, 0], [10.0, 0]]])


def test_separate_signs_normalise_each_part_by_its_own_maximum():
    x = np.array([[[4.0, 2.0, -1.0, -0.5]]])
    # joint: N = 4 -> r = [1, .5, -.25, -.125]; separate: r+ = [1, .5], r- = [-1, -.5]
    np.testing.assert_allclose(Pass(0.4, 1, signs="joint")(x), [[[4.0, 2.0, 0, 0]]])
    np.testing.assert_allclose(Pass(0.4, 1, signs="separate")(x), [[[4.0, 2.0, -1.0, -0.5]]])


def test_zero_norm_leaves_relevance_unchanged():
    x = np.zeros((1, 2, 3))
    for f in (Pass(0.5, 1), Clamp(0.3, 0.4), Amplify(0, 3)):
        np.testing.assert_array_equal(f(x), x)
    x = np.array([[[0.0, 0.0], [1.0, 0.2]]])
    np.testing.assert_allclose(Clamp(0.5, 1, scope="channel")(x), [[[0, 0], [1.0, 0.5]]])


def test_numpy_and_torch_give_the_same():
    x = np.random.default_rng(0).standard_normal((1, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(Clamp(0.1, 0.3)(x), Clamp(0.1, 0.3)(torch.from_numpy(x)).numpy())


def test_spec_round_trip_and_errors():
    for spec in ["clamp:0:0.2@input", "pass:0.05:1:channel@*block*", "amplify:0.7:2:separate@output",
                 "pass:0:0.123456789@encoders.0"]:
        place, f = parse_filter(spec)
        assert parse_filter(format_filter(place, f)) == (place, f)
    assert parse_filter("clamp:0:0.2") == ("input", Clamp(0, 0.2))
    with pytest.raises(ValueError, match="unknown kind"):
        parse_filter("squash:0:1")
    with pytest.raises(ValueError, match="takes two numbers"):
        parse_filter("pass:0.1")
    with pytest.raises(ValueError, match="scope"):
        Pass(0, 1, scope="voxel")


def test_default_grid_sizes():
    assert len(default_grid()) == 17 and len(default_grid(("pass",))) == 10
    assert default_grid(("clamp",))[0] == make_filter("clamp", 0, 0.05)
    assert make_filter("none") is None and make_filter("amplify", 0.5, 2.0) == Amplify(0.5, 2.0)
