"""Tiled relevance against the whole volume: peak resident memory per process and time, on a
4-channel UNet3D of the sample architecture (width 8, random weights) and a synthetic case.

Each run is a fresh process; peak RSS is the process's ru_maxrss, on a GPU also the peak of
torch.cuda.max_memory_allocated. Run:
    python benchmarks/tiling_memory.py [--size 4,64,128,128] [--overlap 0.5] [--max-memory-gb 1.0] [--device cuda]
(BraTS size is 4,155,240,240; the whole-volume run there needs about 17 GB.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import napari_lrp as nl
from napari_lrp.io.case import Case
from napari_lrp.io.orientation import Grid
from napari_lrp.models import UNet3D
args = json.loads(sys.argv[1])
C, Z, Y, X = args["size"]
torch.manual_seed(0)
net = UNet3D(C, 2, width=8).eval().to(args["device"])
rng = np.random.default_rng(0)
img = rng.random((C, Z, Y, X), dtype=np.float32)
label = np.zeros((Z, Y, X), np.uint8); label[Z//3:Z//2, Y//3:Y//2, X//3:X//2] = 1
case = Case(image=img, modalities=[f"m{i}" for i in range(C)], label=label, grid=Grid(np.eye(4), (X, Y, Z)),
            name="synthetic")
t0 = time.perf_counter()
# the whole-volume row with an unlimited budget, so the memory plan does not tile it
kw = {"max_memory": 1e15} if args["window"] is None else {"window": args["window"], "overlap": args["overlap"],
                                                          "max_memory": args["max_memory"]}
exp = nl.explain(net, case, preset="paper", target="output", **kw)
dt = time.perf_counter() - t0
gpu = torch.cuda.max_memory_allocated() / 2**30 if args["device"].startswith("cuda") else None
print(json.dumps({"seconds": dt, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "gpu_gb": gpu,
                  "tiling": exp.tiling, "sum": float(exp.relevance.sum())}))
"""


def run(args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4,64,128,128")
    ap.add_argument("--overlap", type=float, default=None, help="default: explain's (0.125 for window='auto')")
    ap.add_argument("--max-memory-gb", type=float, default=1.0)
    ap.add_argument("--skip-whole", action="store_true")
    ap.add_argument("--device", default="cpu", help="where the network runs (cpu, cuda)")
    ap.add_argument("--no-budget", action="store_true", help="also window='auto' with no max_memory (the default "
                                                              "budget, pipeline.tiling.AUTO_BUDGET)")
    a = ap.parse_args(argv)
    size = [int(v) for v in a.size.split(",")]
    rows = []
    if not a.skip_whole:
        rows.append(("whole volume", run({"size": size, "window": None, "overlap": 0, "max_memory": None,
                                       "device": a.device})))
    tiled = run({"size": size, "window": "auto", "overlap": a.overlap, "max_memory": a.max_memory_gb * 2**30,
                 "device": a.device})
    ov = tiled["tiling"]["overlap"] if tiled["tiling"] else a.overlap
    rows.append((f"window auto, budget {a.max_memory_gb} GB, overlap {ov}", tiled))
    if a.no_budget:
        free = run({"size": size, "window": "auto", "overlap": a.overlap, "max_memory": None,
                    "device": a.device})
        rows.append(("window auto, no budget given (default)", free))
    print(f"UNet3D width 8, {size} (C, Z, Y, X), paper preset, {a.device}")
    print("| run | seconds | peak RSS GB | peak GPU GB | windows |")
    print("|---|---:|---:|---:|---|")
    for name, r in rows:
        t = r["tiling"]
        gpu = "-" if r.get("gpu_gb") is None else f"{r['gpu_gb']:.2f}"
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {gpu} | "
              f"{'-' if t is None else str(t['windows']) + ' of ' + 'x'.join(map(str, t['window']))} |")


if __name__ == "__main__":
    main()
