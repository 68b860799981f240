"""Train the sample model: napari_lrp.models.UNet3D (width 8) on generated cases, CPU, seeded.

Training cases use seeds 100.. (never shipped); held-out cases are the shipped seeds 1..3 plus
seeds 4..9. Prints the held-out mean Dice and writes ``model.pt`` and ``card.json``.

    python sample_data/train.py sample_data/model --iterations 400

The Monte Carlo dropout sample (``sample_data/model_dropout``): the sample model fine-tuned with dropout 0.1
at the end of every block (UNet3D(dropout=0.1); same weights' keys), starting from its weights:

    python sample_data/train.py sample_data/model_dropout --dropout 0.1 --init sample_data/model/model.pt \
        --iterations 150 --lr 1e-3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _cases(seeds):
    import sys

    sys.path.insert(0, str(HERE))
    from make_cohort import MODALITIES, make_case

    from napari_lrp.models.preprocess import normalise_intensity

    xs, ys = [], []
    for s in seeds:
        c = make_case(s)
        vol = np.stack([c["maps"][m] for m in MODALITIES])  # (C, X, Y, Z)
        vol = np.transpose(vol, (0, 3, 2, 1))  # (C, Z, Y, X), napari order of an RAS grid
        x, _ = normalise_intensity(vol, "minmax")
        xs.append(x)
        ys.append(np.transpose(c["maps"]["OT"], (2, 1, 0)).astype(np.int64))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def dice(pred: torch.Tensor, gt: torch.Tensor) -> float:
    inter = float(((pred == 1) & (gt == 1)).sum())
    den = float((pred == 1).sum() + (gt == 1).sum())
    return 2 * inter / den if den else 1.0


def main(argv=None):
    from monai.losses import DiceCELoss

    import napari_lrp as nl
    from napari_lrp.models import UNet3D

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path, nargs="?", default=HERE / "model")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--train-cases", type=int, default=48)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0, help="UNet3D(dropout=...): MC dropout sample")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    x, y = _cases(range(100, 100 + args.train_cases))
    xv, yv = _cases(range(1, 10))
    print(f"generated {len(x)} training and {len(xv)} held-out cases in {time.time() - t0:.1f} s")
    net = UNet3D(in_channels=6, out_channels=2, width=args.width, dropout=args.dropout)
    if args.init is not None:
        net.load_state_dict(torch.load(args.init, weights_only=True))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(args.seed)
    net.train()
    for it in range(args.iterations):
        idx = torch.randint(0, len(x), (2,), generator=g)
        xb, yb = x[idx], y[idx]
        if torch.rand(1, generator=g) < 0.5:  # left-right flip
            xb, yb = xb.flip(-1), yb.flip(-1)
        opt.zero_grad()
        loss = loss_fn(net(xb), yb[:, None])
        loss.backward()
        opt.step()
        if (it + 1) % 50 == 0:
            print(f"iteration {it + 1}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    net.eval()
    with torch.no_grad():
        dices = [dice(net(xv[i:i + 1]).argmax(1)[0], yv[i]) for i in range(len(xv))]
    print("held-out Dice per case:", " ".join(f"{d:.3f}" for d in dices))
    print(f"held-out mean Dice: {np.mean(dices):.3f}  (training took {time.time() - t0:.0f} s)")
    kwargs = {"in_channels": 6, "out_channels": 2, "width": args.width}
    if args.dropout:
        kwargs["dropout"] = args.dropout
    card = {
        "name": "napari-lrp sample stroke UNet3D" + (f" (dropout {args.dropout})" if args.dropout else ""),
        "architecture": {"class": "napari_lrp.models.UNet3D", "kwargs": kwargs},
        "weights": "model.pt",
        "modalities": ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"],
        "input": {"spatial_size": None, "intensity": "minmax", "divisible": 1},
        "classes": ["background", "lesion"],
        "target_class": 1,
        "output_activation": "softmax",
    }
    path = nl.save_model(net, card, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
