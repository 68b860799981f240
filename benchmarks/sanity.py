"""Model-parameter randomisation on the sample model: similarity of each method's map to the
trained model's as the blocks are re-initialised from the output down (cascading), inside the brain.

Run: python benchmarks/sanity.py
"""

from __future__ import annotations

import napari_lrp as nl
from napari_lrp.analysis.sanity import map_similarity, randomisation_steps, randomised
from napari_lrp.models.card import Model
from napari_lrp.samples import sample_case_path, sample_model_path

METHODS = [("lrp", {"preset": "paper"}), ("lrp", {"preset": "epsilon-gamma-box"}), ("lrp", {"preset": "lrp0"}),
           ("gradient", {}), ("integrated_gradients", {"n_steps": 8})]


def main():
    model = nl.load_model(sample_model_path())
    case = nl.load_case(sample_case_path(1))
    img = case.image.max(0)
    brain = img > 0.1 * img.max()
    steps = randomisation_steps(model.network)
    print("Spearman rank correlation inside the brain with the trained model's map, signed maps / |maps| "
          "(cascading from the output; 'all' = every layer re-initialised, an untrained copy)")
    print("| method | " + " | ".join(steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for method, kw in METHODS:
        base = nl.explain(model, case, method=method, **kw)
        region = base.target_region()
        cells = []
        for i in range(1, len(steps) + 1):
            net = randomised(model.network, steps[:i])
            other = Model(network=net.eval(), card=model.card, device=model.device)
            exp = nl.explain(other, case, method=method, target=region, **kw)
            sim = map_similarity(base.relevance, exp.relevance, mask=brain)
            cells.append(f"{sim['spearman_signed']:.2f} / {sim['spearman']:.2f}")
        name = method if method != "lrp" else f"lrp:{kw['preset']}"
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
