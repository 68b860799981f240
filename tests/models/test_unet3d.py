import torch

from napari_lrp.models import UNet3D


def test_parameter_count_at_width_32():
    n = sum(p.numel() for p in UNet3D(6, 2, width=32).parameters())
    assert 18.5e6 < n < 19.5e6  # "about 19M" (Cicek et al.'s 3D U-Net)


def test_runs_on_isles_shapes():
    net = UNet3D(6, 2, width=4).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 6, 19, 48, 48)).shape == (1, 2, 19, 48, 48)
        assert net(torch.rand(1, 6, 19, 192, 192)).shape == (1, 2, 19, 192, 192)
        assert net(torch.rand(1, 6, 19, 76, 64)).shape == (1, 2, 19, 76, 64)


def test_blocks():
    net = UNet3D(6, 2, width=4, levels=3)
    assert net.lrp_blocks("encoder") == ["encoders.0", "encoders.1", "encoders.2"]
    assert net.lrp_blocks("decoder") == ["decoders.0", "decoders.1"]
