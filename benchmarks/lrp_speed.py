"""LRP speed and memory against one plain gradient pass and against zennit, measured side by side.

Times: a process per configuration runs every kind in turn, round after round (after one warm-up
round); ``--processes`` such processes run one after the other and the medians are over all their
rounds; ratios are to the gradient pass (forward, then autograd gradient with respect to the input with
parameters frozen, same start tensor). Within one process the rounds of a kind spread by about 2%; a
plain CPU gradient pass of UNet3D took 1.27 s in one process and 1.57 s in another (PyTorch's im2col
convolution kernel, which it uses for many of these layers, is sensitive to where its buffers land),
hence interleaving and several processes.

Rows: ``gradient`` (plain torch), ``gradient-onednn`` (the same gradient pass on this package's oneDNN
convolution kernels, ``napari_lrp.lrp.kernels.onednn_convolutions``: what the engine's kernels alone
buy, so that the rule cost can be read apart from the kernel choice), the engine's one-shot runs
(``epsilon``, ``zplus``, ``gamma``: every Conv3d/ConvTranspose3d, norms and activations pass relevance),
``repropagate`` (a new propagation from a kept forward pass, epsilon) and zennit with the same rules.

Memory: each kind once in a process of its own; CPU: growth of the peak resident set, with glibc told
to map every allocation above 64 KiB on its own (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave
the resident set and the peak follows live tensors (without it, the peak varied by 100 MB from run to
run); CUDA: torch.cuda.max_memory_allocated.

    python benchmarks/lrp_speed.py [--device cpu|cuda] [--rounds 3] [--processes 2] [--quick]
    python benchmarks/lrp_speed.py --monai      (epsilon and z-plus against the gradient on the engine's
                                                 kernels for MONAI's DynUNet, SegResNet and VNet)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
#: issue: MONAI networks at (1, 2, 64, 64, 64), epsilon <= 1.3x and z-plus <= 2.2x gradient-onednn
MONAI_CONFIGS = {
    "DynUNet (1,2,64,64,64)": ("dynunet", (1, 2, 64, 64, 64)),
    "SegResNet (1,2,64,64,64)": ("segresnet", (1, 2, 64, 64, 64)),
    "VNet (1,2,64,64,64)": ("vnet", (1, 2, 64, 64, 64)),
}
MONAI_KINDS = ["gradient-onednn", "epsilon", "zplus"]
MONAI_TARGETS = {"epsilon": 1.3, "zplus": 2.2}
KINDS = ["gradient", "gradient-onednn", "epsilon", "zplus", "gamma", "repropagate", "zennit-epsilon",
         "zennit-zplus", "zennit-gamma"]
PEERS = (("epsilon", "zennit-epsilon"), ("zplus", "zennit-zplus"), ("gamma", "zennit-gamma"))


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
    elif arch in ("dynunet", "segresnet", "vnet"):
        from monai.networks import nets

        net = {"dynunet": lambda: nets.DynUNet(3, 2, 2, [3, 3, 3, 3], [1, 2, 2, 2], [2, 2, 2]),
               "segresnet": lambda: nets.SegResNet(3, 16, 2, 2),
               "vnet": lambda: nets.VNet(3, 2, 2)}[arch]()
    else:
        from monai.networks.nets import BasicUNet

        net = BasicUNet(3, 6, 2)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def runners(arch: str, shape, device: str, kinds) -> dict:
    """{kind: function running it once} on one model, input and start relevance."""
    import torch
    from torch import nn

    from napari_lrp.lrp import Epsilon, Gamma, PassThrough, Propagation, ZPlus
    from napari_lrp.lrp.kernels import onednn_convolutions

    net = build(arch).to(device)
    x = torch.rand(shape, device=device)
    with torch.no_grad():
        start = net(x)
    ours = {"epsilon": Epsilon(1e-6), "zplus": ZPlus(1e-6), "gamma": Gamma(0.25, 1e-6)}
    norm_pass = {nn.BatchNorm3d: PassThrough(), nn.InstanceNorm3d: PassThrough(), nn.GroupNorm: PassThrough()}

    def gradient():
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xx), xx, start)
        return g

    def gradient_onednn():
        with onednn_convolutions():
            return gradient()

    def engine(kind):
        def run():
            rules = {**norm_pass, nn.Conv3d: ours[kind], nn.ConvTranspose3d: ours[kind]}
            prop = Propagation(net, x, rules=rules)
            return prop.propagate(start, retain=False).relevance  # one-shot, as napari_lrp.lrp.propagate

        return run

    def zennit(kind):
        from _zennit import import_zennit

        import_zennit()
        from zennit.composites import LayerMapComposite
        from zennit.rules import Epsilon as ZEpsilon
        from zennit.rules import Gamma as ZGamma
        from zennit.rules import Pass as ZPass
        from zennit.rules import ZPlus as ZZPlus
        from zennit.types import Activation, Convolution

        rule = {"zennit-epsilon": lambda: ZEpsilon(1e-6), "zennit-zplus": lambda: ZZPlus(1e-6),
                "zennit-gamma": lambda: ZGamma(0.25, 1e-6)}[kind]()
        composite = LayerMapComposite([(Activation, ZPass()), (nn.InstanceNorm3d, ZPass()),
                                       (nn.BatchNorm3d, ZPass()), (Convolution, rule)])

        def run():
            xx = x.clone().requires_grad_(True)
            with composite.context(net) as m:
                (g,) = torch.autograd.grad(m(xx), xx, start)
            return g

        return run

    out = {}
    for kind in kinds:
        if kind == "gradient":
            out[kind] = gradient
        elif kind == "gradient-onednn":
            out[kind] = gradient_onednn
        elif kind in ours:
            out[kind] = engine(kind)
        elif kind == "repropagate":
            kept = Propagation(net, x, rules={**norm_pass, nn.Conv3d: ours["epsilon"],
                                              nn.ConvTranspose3d: ours["epsilon"]})
            out[kind] = lambda kept=kept: kept.propagate(start).relevance
        else:
            out[kind] = zennit(kind)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure_times(arch: str, shape, device: str, rounds: int, kinds=None) -> dict:
    """Seconds of every timed round per kind, all kinds interleaved in this process."""
    fns = runners(arch, shape, device, kinds or KINDS)
    times = {k: [] for k in fns}
    for r in range(rounds + 1):
        for kind, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            if r:  # round 0 warms up
                times[kind].append(time.perf_counter() - t0)
            del out
    return times


def measure_memory(arch: str, shape, device: str, kind: str) -> float:
    """Peak memory (MB) of one run of ``kind`` above what the model, input and start relevance hold."""
    import torch

    fn = runners(arch, shape, device, [kind])[kind]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        del out
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    rss0 = _rss_mb()
    out = fn()
    del out
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0


def _child(args: list[str], env=None) -> dict | float | None:
    cmd = [sys.executable, __file__, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(f"  failed: {' '.join(args)}: {res.stderr.strip().splitlines()[-1] if res.stderr else ''}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round (median)")
    ap.add_argument("--processes", type=int, default=2, help="timing processes per configuration (pooled)")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--monai", action="store_true", help="the MONAI rows of (epsilon, z-plus)")
    ap.add_argument("--kinds", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--times", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.times:
        arch, shape = json.loads(args.times)
        kinds = json.loads(args.kinds) if args.kinds else None
        print(json.dumps(measure_times(arch, tuple(shape), args.device, args.rounds, kinds)))
        return
    if args.memory:
        arch, shape, kind = json.loads(args.memory)
        print(json.dumps(measure_memory(arch, tuple(shape), args.device, kind)))
        return
    if args.monai:
        monai_rows(args)
        return
    configs = QUICK if args.quick else CONFIGS
    import torch

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"{args.processes} processes x {args.rounds} interleaved rounds (median)\n")
    mem_env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for title, (arch, shape) in configs.items():
        pooled: dict[str, list[float]] = {}
        for _ in range(args.processes):
            res = _child(["--device", args.device, "--rounds", str(args.rounds), "--times", json.dumps([arch, shape])])
            for kind, values in (res or {}).items():
                pooled.setdefault(kind, []).extend(values)
        if not pooled:
            continue
        times = {k: statistics.median(v) for k, v in pooled.items()}
        mem = {k: _child(["--device", args.device, "--memory", json.dumps([arch, shape, k])], mem_env) for k in KINDS}
        g, gk, gm = times["gradient"], times["gradient-onednn"], mem.get("gradient")
        print(f"### {title}")
        print("| run | seconds | x gradient | x gradient on oneDNN kernels | peak MB | x gradient memory |")
        print("|---|---:|---:|---:|---:|---:|")
        for kind in KINDS:
            m = mem.get(kind)
            ms = "" if m is None else f"{m:.0f}"
            mr = "" if m is None or not gm else f"{m / gm:.2f}"
            print(f"| {kind} | {times[kind]:.3f} | {times[kind] / g:.2f} | {times[kind] / gk:.2f} | {ms} | {mr} |")
        for ours, theirs in PEERS:
            print(f"| {ours}: speed-up over zennit | | {times[theirs] / times[ours]:.2f}x | | | |")
        print(f"| re-propagation / full LRP (epsilon) | | {times['repropagate'] / times['epsilon']:.2f} | | | |")
        print(flush=True)


def monai_rows(args) -> None:
    """Epsilon and z-plus against the gradient pass on the engine's kernels, interleaved, pooled processes."""
    import torch

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"{args.processes} processes x {args.rounds} interleaved rounds (median)\n")
    print("| network | gradient-onednn s | epsilon x | target | z-plus x | target |")
    print("|---|---:|---:|---:|---:|---:|")
    for title, (arch, shape) in MONAI_CONFIGS.items():
        pooled: dict[str, list[float]] = {}
        for _ in range(args.processes):
            res = _child(["--device", args.device, "--rounds", str(args.rounds), "--kinds", json.dumps(MONAI_KINDS),
                          "--times", json.dumps([arch, shape])])
            for kind, values in (res or {}).items():
                pooled.setdefault(kind, []).extend(values)
        if not pooled:
            continue
        t = {k: statistics.median(v) for k, v in pooled.items()}
        g = t["gradient-onednn"]
        print(f"| {title} | {g:.3f} | {t['epsilon'] / g:.2f} | <= {MONAI_TARGETS['epsilon']} | "
              f"{t['zplus'] / g:.2f} | <= {MONAI_TARGETS['zplus']} |", flush=True)


if __name__ == "__main__":
    main()
