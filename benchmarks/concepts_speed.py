"""Concept relevance speed, measured side by side with one LRP run of the same model on the same case.

1. Every channel's relevance at every kept layer (``Explanation.concepts``): read from the run's one backward
   pass, no extra pass (target: a small fraction of one run).
2. One conditional heatmap from a mid-decoder layer (``Explanation.conditional``): from the kept forward pass,
   the backward from that layer down only (target <= 0.6x one run).
3. 16 channels' conditional heatmaps (target in the issue: <= 6x one conditional heatmap in one batched pass;
   measured here as 16 passes, one per channel: the engine's rules change their buffers in place, which
   autograd's batched backward does not support, so the channels run one after the other).
4. The floor of batching on this machine: the same network's plain vector-Jacobian product from that layer to
   the input (torch's own backward, no rules), once, and for 16 different vectors in one batched pass
   (``is_grads_batched``, torch's vmap) - what any batched implementation of the 16 maps could gain here.

    python benchmarks/concepts_speed.py [--case 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import napari_lrp as nl
    from napari_lrp.samples import load_sample_case, load_sample_model

    model, case = load_sample_model("cpu"), load_sample_case(args.case)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, sample case {args.case} "
          f"{tuple(case.image.shape)}, {model.card.name}\n")
    nl.explain(model, case, preset="paper", keep=True)  # warm-up
    run, _ = _best(lambda: nl.explain(model, case, preset="paper", keep=True), args.repeats)
    exp = nl.explain(model, case, preset="paper", keep=True)
    layers = [n for n in exp.kept if n.count(".") == 1 and n.startswith(("encoders.", "decoders."))]
    every, _ = _best(lambda: [exp.concepts(n) for n in layers], args.repeats)
    mid = "decoders.1"
    n_ch = int(exp.kept_pass.outputs[mid].shape[1])
    one, _ = _best(lambda: exp.conditional(mid, 0), args.repeats)
    sixteen, _ = _best(lambda: [exp.conditional(mid, c % n_ch) for c in range(16)], 1)
    print("| measurement | seconds | ratio | target |")
    print("|---|---:|---:|---:|")
    print(f"| one LRP run (paper preset, every layer kept) | {run:.3f} | 1.00x run | |")
    print(f"| every channel of {len(layers)} blocks (concepts) | {every:.3f} | {every / run:.3f}x run | no pass |")
    print(f"| one conditional heatmap at {mid} ({n_ch} channels) | {one:.3f} | {one / run:.2f}x run | <= 0.6x |")
    print(f"| 16 conditional heatmaps at {mid}, one pass each | {sixteen:.3f} | {sixteen / one:.1f}x one "
          f"| <= 6x (batched) |")
    vjp_one, vjp_batched = _vjp_floor(exp, mid, args.repeats)
    print(f"| floor: torch's plain VJP {mid} -> input, one vector | {vjp_one:.3f} | 1.00x | |")
    print(f"| floor: the same for 16 vectors in one batched pass (vmap) | {vjp_batched:.3f} | "
          f"{vjp_batched / vjp_one:.1f}x one | |")


def _vjp_floor(exp, layer: str, repeats: int) -> tuple[float, float]:
    """Seconds of torch's own backward from ``layer``'s output to the input: one vector, then 16 batched."""
    net = exp.network
    x = exp.prepared_input.x.detach().clone().requires_grad_(True)
    kept = {}
    module = dict(net.named_modules())[layer]
    hook = module.register_forward_hook(lambda _m, _i, out: kept.__setitem__("out", out) and None)
    with torch.enable_grad():
        net(x)
    hook.remove()
    out = kept["out"]
    one_vector = torch.randn_like(out)
    batch = torch.randn((16, *out.shape), dtype=out.dtype)
    one, _ = _best(lambda: torch.autograd.grad(out, x, one_vector, retain_graph=True), repeats)
    batched, _ = _best(lambda: torch.autograd.grad(out, x, batch, retain_graph=True, is_grads_batched=True), repeats)
    return one, batched


if __name__ == "__main__":
    main()
