"""The MONAI Model Zoo's published 3D bundles at their published sizes (tests/data/zoo, random weights): for each
bundle that runs, the largest difference of its logits from MONAI's own pipeline (relative to the largest
logit), the window's LRP memory estimated before the run against the peak resident memory measured, and the
time of one explanation; for each refused bundle, the reason. Each bundle in a fresh process.

    python benchmarks/zoo_bundles.py [--bundles a,b] [--shape 60,60,30] [--trust] [--reduced]
(--trust runs the bundles whose network or transforms are their own scripts/ code; --reduced runs the sizes
the suite reduces, tests/models/test_zoo_bundles.py's REDUCED, with the relevance it leaves out.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, tempfile, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[2])
import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.models.architectures import allowed_class, current_arguments
from napari_lrp.models.network_guard import window_bytes
import numpy as np
from napari_lrp.pipeline import predict_case
from test_zoo_bundles import _bundle, _monai_run, published_case
name, shape, trust, reduced = sys.argv[1], json.loads(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1"
tmp = Path(tempfile.mkdtemp())
folder = _bundle(tmp, name, reduce=reduced, trusted=trust)
try:
    model = nl.load_model(folder, device="cpu", trust=trust)
except ModelError as exc:
    print(json.dumps({"refused": str(exc).split(": ", 1)[-1][:160]}))
    sys.exit(0)
card = model.card
cls = allowed_class(card.architecture["class"], name, trust, folder)
est = window_bytes(cls, current_arguments(cls, card.architecture["kwargs"], name, warn=False),
                   (1, len(card.modalities), *model.pipeline.window)) if model.pipeline.window else None
image, case = published_case(tmp, name, card.modalities, shape)
theirs, _label = _monai_run(folder, image, model.network)
ours = np.moveaxis(case.grid.from_napari(predict_case(model, case)[1]), -1, 0)
logit_diff = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t0 = time.perf_counter()
exp = nl.explain(model, case, preset="epsilon-gamma-box")
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "before_gb": rss0, "estimate_gb": None if est is None else est / 2**30,
                  "windows": (exp.tiling or {}).get("windows"), "unaccounted": exp.ledger.unaccounted,
                  "logit_diff": logit_diff}))
"""


def main(argv=None):
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    from test_zoo_bundles import BUNDLES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundles", default=",".join(BUNDLES))
    ap.add_argument("--shape", default=None, help="the synthetic CT's voxels i,j,k (default: one window)")
    ap.add_argument("--trust", action="store_true", help="run a bundle's own scripts/ network or transforms")
    ap.add_argument("--reduced", action="store_true", help="the sizes the suite runs (its REDUCED)")
    a = ap.parse_args(argv)
    shape = [int(v) for v in a.shape.split(",")] if a.shape else None
    print("| bundle | max logit diff / max | seconds | peak RSS GB | window LRP estimate GB | windows | unaccounted | "
          "refused |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in a.bundles.split(","):
        res = subprocess.run([sys.executable, "-c", CHILD, name, str(ROOT / "tests" / "models"), json.dumps(shape),
                              "1" if a.trust else "0", "1" if a.reduced else "0"],
                             capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            print(f"| {name} | | | | | | | failed: {res.stderr.strip().splitlines()[-1][:120]} |", flush=True)
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        if "refused" in r:
            print(f"| {name} | | | | | | | {r['refused']} |", flush=True)
            continue
        est = "-" if r["estimate_gb"] is None else f"{r['estimate_gb']:.2f}"
        print(f"| {name} | {r['logit_diff']:.1e} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {est} | {r['windows']} | "
              f"{r['unaccounted']:.1e} | |", flush=True)


if __name__ == "__main__":
    main()
