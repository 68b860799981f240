"""LRP speed and memory against one plain gradient pass and against zennit, measured side by side.

Each measurement runs in its own subprocess (so its peak memory is its own); times are medians over
``--repeats``; ratios are to the gradient pass (forward, then autograd gradient with respect to the
input with parameters frozen, same start tensor) of the same model and input.

    python benchmarks/lrp_speed.py [--device cpu|cuda] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "lrp"))

CONFIGS = {
    "UNet3D w16 (1,6,19,96,96)": ("unet3d", (1, 6, 19, 96, 96)),
    "UNet3D w16 with ReLU (1,6,19,96,96)": ("unet3d-relu", (1, 6, 19, 96, 96)),
    "BasicUNet (1,6,19,192,192)": ("basicunet", (1, 6, 19, 192, 192)),
}
QUICK = {
    "UNet3D w16 (1,6,19,48,48)": ("unet3d", (1, 6, 19, 48, 48)),
    "UNet3D w16 with ReLU (1,6,19,48,48)": ("unet3d-relu", (1, 6, 19, 48, 48)),
    "BasicUNet (1,6,19,64,64)": ("basicunet", (1, 6, 19, 64, 64)),
}
KINDS = ["gradient", "epsilon", "zplus", "gamma", "repropagate", "zennit-epsilon", "zennit-zplus"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def build(arch: str):
    import torch

    torch.manual_seed(0)
    if arch.startswith("unet3d"):
        from napari_lrp.models import UNet3D

        # the paper's LeakyReLU(0.2), or ReLU (non-negative layer inputs: the one-convolution z+ path)
        net = UNet3D(6, 2, width=16, negative_slope=0.0 if arch == "unet3d-relu" else 0.2)
    else:
        from monai.networks.nets import BasicUNet

        net = BasicUNet(3, 6, 2)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def measure(arch: str, shape, kind: str, device: str, repeats: int) -> dict:
    """Run one kind ``repeats`` times in this process; returns median seconds and peak memory (MB)."""
    import torch
    from torch import nn

    from napari_lrp.lrp import Epsilon, Gamma, PassThrough, Propagation, ZPlus

    net = build(arch).to(device)
    x = torch.rand(shape, device=device)
    with torch.no_grad():
        start = net(x)
    rules = {"epsilon": {nn.Conv3d: Epsilon(1e-6), nn.ConvTranspose3d: Epsilon(1e-6)},
             "zplus": {nn.Conv3d: ZPlus(1e-6), nn.ConvTranspose3d: ZPlus(1e-6)},
             "gamma": {nn.Conv3d: Gamma(0.25, 1e-6), nn.ConvTranspose3d: Gamma(0.25, 1e-6)}}
    norm_pass = {nn.BatchNorm3d: PassThrough(), nn.InstanceNorm3d: PassThrough()}

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_once():
        if kind == "gradient":
            xx = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(xx), xx, start)
            return g
        if kind in rules:
            prop = Propagation(net, x, rules={**norm_pass, **rules[kind]})
            return prop.propagate(start, retain=False).relevance  # one-shot, as napari_lrp.lrp.propagate
        if kind == "repropagate":
            return prop_kept.propagate(start).relevance
        from _zennit import import_zennit

        import_zennit()
        from zennit.composites import LayerMapComposite
        from zennit.rules import Epsilon as ZEps
        from zennit.rules import Pass as ZPass
        from zennit.rules import ZPlus as ZZPlus
        from zennit.types import Activation, Convolution

        zrule = ZEps(1e-6) if kind == "zennit-epsilon" else ZZPlus(1e-6)
        comp = LayerMapComposite([(Activation, ZPass()), (nn.InstanceNorm3d, ZPass()),
                                  (nn.BatchNorm3d, ZPass()), (Convolution, zrule)])
        xx = x.clone().requires_grad_(True)
        with comp.context(net) as m:
            (g,) = torch.autograd.grad(m(xx), xx, start)
        return g

    prop_kept = Propagation(net, x, rules={**norm_pass, **rules["epsilon"]}) if kind == "repropagate" else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_mb()
    times = []
    peak = None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = run_once()
        sync()
        times.append(time.perf_counter() - t0)
        del out
        if peak is None:  # memory of the first run (later runs add allocator fragmentation, not data)
            if device.startswith("cuda"):
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    times.sort()
    return {"seconds": times[len(times) // 2], "peak_mb": peak}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--only", default=None, help="run one configuration (internal)")
    args = ap.parse_args(argv)
    if args.only:
        arch, shape, kind = json.loads(args.only)
        print(json.dumps(measure(arch, tuple(shape), kind, args.device, args.repeats)))
        return
    configs = QUICK if args.quick else CONFIGS
    import torch

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats} (median)\n")
    for title, (arch, shape) in configs.items():
        res = {}
        for kind in KINDS:
            cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats), "--only",
                   json.dumps([arch, list(shape), kind])]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                res[kind] = None
                print(f"  {kind}: failed: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}")
                continue
            res[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        g = res["gradient"]
        print(f"### {title}")
        print("| run | seconds | x gradient | peak MB | x gradient memory |")
        print("|---|---:|---:|---:|---:|")
        for kind in KINDS:
            r = res[kind]
            if r is None:
                continue
            print(f"| {kind} | {r['seconds']:.3f} | {r['seconds'] / g['seconds']:.2f} | {r['peak_mb']:.0f} | "
                  f"{r['peak_mb'] / max(g['peak_mb'], 1e-9):.2f} |")
        for ours, theirs in (("epsilon", "zennit-epsilon"), ("zplus", "zennit-zplus")):
            if res.get(ours) and res.get(theirs):
                print(f"| {ours} speed-up over zennit | | {res[theirs]['seconds'] / res[ours]['seconds']:.2f}x | | |")
        if res.get("repropagate") and res.get("epsilon"):
            print(f"| re-propagation / full LRP (epsilon) | | "
                  f"{res['repropagate']['seconds'] / res['epsilon']['seconds']:.2f} | | |")
        print()


if __name__ == "__main__":
    main()
