"""How far nnU-Net's own float16 window accumulation moves its probabilities, beside napari-lrp's float32 ones.

nnUNetPredictor accumulates the Gaussian-weighted windows in ``torch.half`` (predict_from_raw_data.py); napari-lrp
accumulates in float32 (the relevance needs the logits it conserves). This prints, on the sample nnU-Net folder
and the three sample cases, the largest difference of the probabilities of nnU-Net as shipped (float16) and of
nnU-Net with float32 accumulation from napari-lrp's, and how often the label differs.

Run: python benchmarks/nnunet_float16.py
"""

from __future__ import annotations

import json

import numpy as np
import torch


def oracle(folder, pm_cls, get_network, predictor_cls):
    """nnU-Net's predictor for the folder's fold 0 (its network builder, its plans handler)."""
    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    pm = pm_cls(plans)
    cm = pm.get_configuration("3d_fullres")
    heads = pm.get_label_manager(dataset).num_segmentation_heads
    net = get_network(cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
                      len(dataset["channel_names"]), heads, allow_init=True, deep_supervision=False)
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    net.load_state_dict(ckpt["network_weights"])
    pred = predictor_cls(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=False,
                         device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    pred.manual_initialization(net.eval(), pm, cm, [ckpt["network_weights"]], dataset, "nnUNetTrainer", (0, 1, 2))
    return pred


def main():
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import napari_lrp as nl
    from napari_lrp.models.nnunet import to_nnunet_order
    from napari_lrp.pipeline import predict_case
    from napari_lrp.samples import sample_case_paths, sample_nnunet_path

    folder = sample_nnunet_path()
    model = nl.load_model(folder, fold=0)
    predictor = oracle(folder, PlansManager, get_network_from_plans, nnUNetPredictor)
    print(f"nnU-Net folder {folder.name} (fold 0, no mirroring), CPU")
    print("| case | float16 (as shipped): max abs dp | labels differing | float32 accumulation: max abs dp |")
    print("|---|---:|---:|---:|")
    half = torch.half
    for case_dir in sample_case_paths():
        case = nl.load_case(case_dir)
        files = [str(next(case_dir.glob(f"*MR_{m}.*/*.nii.gz"))) for m in model.card.modalities]
        data, props = SimpleITKIO().read_images(files)
        _pred, logits, _ = predict_case(model, case)
        ours = to_nnunet_order(torch.softmax(torch.from_numpy(logits).double(), 0).numpy(), case.grid)
        row = []
        for dtype in (torch.half, torch.float32):
            torch.half = dtype  # nnU-Net reads torch.half when it allocates its accumulators
            try:
                seg, probs = predictor.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, True)
            finally:
                torch.half = half
            row.append((float(np.abs(probs - ours).max()), float((seg != ours.argmax(0)).mean())))
        print(f"| {case.name} | {row[0][0]:.2e} | {row[0][1]:.2e} | {row[1][0]:.2e} |")


if __name__ == "__main__":
    main()
