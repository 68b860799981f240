"""No network while models are built (models/network_guard.py): a local server proves no request arrives."""

import http.server
import json
import threading
import urllib.request

import pytest
import torch

import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.models.network_guard import (
    LRP_BYTES_PER_OUTPUT_BYTE,
    MAX_PARAMETERS,
    NetworkBlocked,
    no_network,
    parameter_count,
    refuse_download_arguments,
    window_bytes,
)


@pytest.fixture
def server():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()


def test_the_server_answers_outside_the_guard(server):
    url, hits = server
    with pytest.raises(urllib.request.HTTPError):
        urllib.request.urlopen(f"{url}/probe")
    assert hits == ["/probe"]


def test_no_connection_and_no_url_inside_the_guard(server, tmp_path):
    url, hits = server
    local = tmp_path / "w.pth"
    local.write_bytes(b"x")
    with no_network("card.json"):
        with pytest.raises(NetworkBlocked, match="card.json: building the network tried to open"):
            urllib.request.urlopen(f"{url}/weights.pth")
        with pytest.raises(NetworkBlocked):
            torch.hub.load_state_dict_from_url(f"{url}/hub.pth", model_dir=str(tmp_path / "hub"))
        with pytest.raises(NetworkBlocked):
            urllib.request.urlretrieve(local.as_uri(), str(tmp_path / "copy.pth"))
        import socket

        with pytest.raises(NetworkBlocked):
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    assert hits == [] and not (tmp_path / "copy.pth").exists()
    # other threads are not affected while one thread builds
    with no_network("card.json"):
        got = []
        th = threading.Thread(target=_fetch, args=(url, got))
        th.start()
        th.join()
    assert hits == ["/other"] and got == [404]


def _fetch(url, got):
    try:
        urllib.request.urlopen(f"{url}/other")
    except urllib.request.HTTPError as exc:
        got.append(exc.code)


def test_download_arguments_are_refused_by_rule():
    for kwargs in ({"pretrained": True}, {"pretrained_url": "file:///tmp/x.pth"}, {"weights": "IMAGENET1K_V1"},
                   {"backbone": {"url": "https://example.org/w.pth"}}, {"paths": ["s3://bucket/w.pt"]}):
        with pytest.raises(ModelError, match="card.json: architecture argument .* never downloads"):
            refuse_download_arguments(kwargs, "card.json")
    refuse_download_arguments({"pretrained": False, "pretrained_url": None, "spatial_dims": 3}, "card.json")


def test_a_card_with_a_download_url_makes_no_request(server, tmp_path):
    url, hits = server
    card = {"name": "hover", "architecture": {"class": "monai.networks.nets.HoVerNet",
                                              "kwargs": {"pretrained_url": f"{url}/resnet.pth"}},
            "modalities": ["R", "G", "B"]}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="pretrained_url=.* never downloads"):
        nl.load_model(tmp_path / "card.json")
    assert hits == []


def test_a_huge_network_is_refused_before_it_allocates(tmp_path):
    import subprocess
    import sys

    from napari_lrp.models import UNet3D

    assert parameter_count(UNet3D, {"in_channels": 6, "out_channels": 2, "width": 4}) == sum(
        p.numel() for p in UNet3D(6, 2, width=4).parameters()) + sum(b.numel() for b in UNet3D(6, 2, width=4).buffers())
    card = {"name": "wide", "architecture": {"class": "UNet3D", "kwargs": {"in_channels": 6, "out_channels": 2,
                                                                          "width": 4096}},
            "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "model.pt").write_bytes(b"")
    assert len((tmp_path / "card.json").read_bytes()) < 600
    with pytest.raises(ModelError, match=r"card.json: UNet3D .* million parameters .* at most 500 million"):
        nl.load_model(tmp_path / "card.json")
    # in a fresh process the refusal's peak memory stays far below the 3.7 GB the network would take
    # (VmHWM: this process's own peak; ru_maxrss would carry the parent's peak across exec)
    code = ("import napari_lrp as nl, sys\n"
            "try:\n    nl.load_model(sys.argv[1])\nexcept nl.ModelError:\n    pass\n"
            "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])")
    peak_kb = int(subprocess.run([sys.executable, "-c", code, str(tmp_path / "card.json")], check=True,
                                 capture_output=True, text=True).stdout.split()[-1])
    assert peak_kb * 1024 < 1.5e9, peak_kb
    assert MAX_PARAMETERS == 500_000_000


class _MismatchedSizes(torch.nn.Module):
    """A network whose forward fails for its own reason (as a fuzzed nnU-Net plan with a 3000-voxel kernel)."""

    calls: list = []

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        _MismatchedSizes.calls.append(x.device.type)
        return torch.cat([self.conv(x), x[..., :-1]], dim=1)


class _NoMetaKernel(_MismatchedSizes):
    """A network whose forward needs a value the meta device does not have (as SwinUNETR's masks)."""

    def forward(self, x):
        _MismatchedSizes.calls.append(x.device.type)
        if x.device.type == "meta":
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return self.conv(x)


def test_a_network_that_fails_on_its_own_sizes_is_not_run_again_on_the_cpu_to_estimate():
    _MismatchedSizes.calls.clear()
    assert window_bytes(_MismatchedSizes, {}, (1, 1, 32, 32, 32)) is None
    assert _MismatchedSizes.calls == ["meta"]  # no real forward pass that would fail the same way (slowly)
    _MismatchedSizes.calls.clear()
    got = window_bytes(_NoMetaKernel, {}, (1, 1, 32, 32, 32))
    assert _MismatchedSizes.calls == ["meta", "cpu"]  # counted on a half-size input, scaled by the voxels
    assert got == pytest.approx(4.0 * 2 * 32**3 * LRP_BYTES_PER_OUTPUT_BYTE)
