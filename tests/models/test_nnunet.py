"""nnU-Net v2 results folders: nnU-Net's own code (nnunetv2 2.8, installed with --no-deps for the tests) is
the oracle for the pre-processing, the resampling, the sliding windows and the voxel order."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import napari_lrp as nl
from napari_lrp.models import ModelError
from napari_lrp.models.nnunet import FoldEnsemble, from_nnunet_order, nnunet_steps, to_nnunet_order
from napari_lrp.models.resampling import resampling
from napari_lrp.pipeline import predict_case
from napari_lrp.samples import load_sample_case, sample_case_path, sample_nnunet_path

nnunetv2 = pytest.importorskip("nnunetv2")
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO  # noqa: E402
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window  # noqa: E402
from nnunetv2.preprocessing.resampling.default_resampling import (  # noqa: E402
    compute_new_shape,
    resample_data_or_seg_to_shape,
)
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager  # noqa: E402

MODS = ["ADC", "MTT", "rCBF", "rCBV", "Tmax", "TTP"]


@pytest.mark.parametrize("shape,spacing,target,order", [
    ((13, 20, 17), (6.5, 2.8, 2.8), (5.0, 2.0, 2.0), 3),  # cubic, together
    ((13, 20, 17), (6.5, 2.8, 2.8), (8.0, 2.0, 2.0), 3),  # anisotropic target: in-plane cubic, z nearest
    ((9, 20, 17), (1.0, 1.0, 1.0), (4.0, 1.0, 1.2), 3),
    ((13, 20, 17), (6.5, 2.8, 2.8), (5.0, 2.0, 2.0), 1),  # the probabilities' order
])
def test_resampling_equals_nnunet_and_its_relevance_is_the_epsilon_rule(shape, spacing, target, order):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *shape)).astype(np.float32)
    x[:, :3] = 0
    ref = resample_data_or_seg_to_shape(x, compute_new_shape(shape, spacing, target), spacing, target,
                                        is_seg=False, order=order, order_z=0, force_separate_z=None)
    r = resampling(shape, spacing, target, order=order)
    np.testing.assert_allclose(r(torch.from_numpy(x)).float().numpy(), ref, rtol=0, atol=1e-6)
    # relevance by hand with the dense operator (one channel): the epsilon rule inside the input's range, a
    # clipped voxel's relevance to the input voxel holding that end of the range
    xs = torch.from_numpy(rng.random((1, *shape)) + 0.5)
    if r.separate_axis is None:
        A = np.kron(np.kron(r.matrices[0], r.matrices[1]), r.matrices[2])
        flat = xs.numpy().ravel()
        z = A @ flat
        R_out = rng.random(z.size)
        above, below = z > flat.max(), z < flat.min()
        by_hand = flat * (A.T @ (R_out * ~(above | below) / z))
        by_hand[np.argmax(flat)] += R_out[above].sum()
        by_hand[np.argmin(flat)] += R_out[below].sum()
        got = r.relevance(xs, torch.from_numpy(R_out.reshape(1, *r.shape_out))).numpy().ravel()
        np.testing.assert_allclose(got, by_hand, rtol=1e-10, atol=1e-12)
        assert got.sum() == pytest.approx(R_out.sum(), rel=1e-10)  # a linear map with z != 0 conserves
    else:
        R_out = torch.from_numpy(rng.random((1, *r.shape_out)))
        got = r.relevance(xs, R_out)
        assert float(got.sum()) == pytest.approx(float(R_out.sum()), rel=1e-10)


def test_window_placement_equals_nnunet():
    for size, window in [(19, 16), (76, 64), (64, 64), (110, 64), (240, 128), (155, 96)]:
        assert nnunet_steps(size, window, 0.5) == compute_steps_for_sliding_window((size,), (window,), 0.5)[0]


def _oracle(folder, fold=0, mirroring=False):
    """nnU-Net's own predictor for ``folder``: its network builder, its plans handler, the checkpoint read
    by plain torch.load (no napari-lrp code)."""
    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    heads = pm.get_label_manager(dataset).num_segmentation_heads  # regions, or classes with the background
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, len(dataset["channel_names"]), heads,
                                 allow_init=True, deep_supervision=False)
    ckpt = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    net.load_state_dict(ckpt["network_weights"])
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           allow_tqdm=False)
    pred.manual_initialization(net.eval(), pm, cm, [ckpt["network_weights"]], dataset, "nnUNetTrainer", (0, 1, 2))
    return pred


def _case_files(case_dir):
    files = []
    for m in MODS:
        files.append(next(case_dir.glob(f"*MR_{m}.*/*.nii.gz")))
    return [str(f) for f in files]


def _reoriented_copy(src, dst):
    """The case with its axes swapped and flipped in the files (i, j, k) -> (j, i, K-1-k), same world."""
    for f in src.glob("*/*.nii.gz"):
        img = nib.load(f)
        d = np.asarray(img.dataobj)
        K = d.shape[2]
        new = np.ascontiguousarray(np.flip(d, 2).transpose(1, 0, 2))
        M = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, K - 1], [0, 0, 0, 1]], dtype=float)
        out = dst / f.parent.name / f.name
        out.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(new, img.affine @ M, img.header), out)
    return dst


@pytest.fixture(scope="module")
def resampled_folder(tmp_path_factory):
    """The sample folder with its configuration planned at 8 x 2 x 2 mm (the case is 6.5 x 2.8 x 2.8 mm):
    the case is resampled (in-plane cubic, z nearest) on the way in and back."""
    dst = tmp_path_factory.mktemp("nnunet") / "Dataset001_SampleStroke" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(sample_nnunet_path(), dst)
    plans = json.loads((dst / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["spacing"] = [8.0, 2.0, 2.0]
    (dst / "plans.json").write_text(json.dumps(plans))
    return dst


@pytest.mark.parametrize("which", ["sample", "resampled", "reoriented", "mirrored"])
def test_logits_and_probabilities_equal_nnunets_own_predictor(which, resampled_folder, tmp_path, monkeypatch):
    folder = resampled_folder if which == "resampled" else sample_nnunet_path()
    case_dir = sample_case_path(2)
    if which == "reoriented":
        case_dir = _reoriented_copy(case_dir, tmp_path / "case_02")
    model = nl.load_model(folder, fold=0, mirroring=which == "mirrored")
    case = nl.load_case(case_dir)
    files = _case_files(case_dir)
    data, props = SimpleITKIO().read_images(files)
    oracle = _oracle(folder, mirroring=which == "mirrored")
    # nnU-Net accumulates window logits in float16; in float32 its numbers are comparable to 1e-4
    monkeypatch.setattr(torch, "half", torch.float32)
    seg, probs = oracle.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, True)
    pred, logits, _ = predict_case(model, case)
    ours = torch.softmax(torch.from_numpy(logits).double(), 0).numpy()
    ours_sitk = to_nnunet_order(ours, case.grid)
    assert ours_sitk.shape == probs.shape  # the voxel order: file order reversed, as SimpleITK reads it
    np.testing.assert_allclose(ours_sitk, probs, rtol=0, atol=1e-4)
    ours_seg = to_nnunet_order(pred[None].astype(np.float32), case.grid)[0]
    assert (ours_seg != seg).mean() < 1e-4  # ties at 0.5 may break either way
    assert seg.sum() > 50  # the network finds the lesion (so the comparison is not of empty maps)
    # the model-grid logits themselves (nnU-Net's preprocessing + sliding window)
    prep = model.pipeline.prepare(case, model.card.modalities, model.network, model.device)
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    pre, _seg, _props = DefaultPreprocessor(verbose=False).run_case_npy(
        data, None, {"spacing": props["spacing"]}, oracle.plans_manager, oracle.configuration_manager,
        oracle.dataset_json)
    np.testing.assert_allclose(prep.crop(prep.x)[0].numpy(), pre, rtol=0, atol=1e-5)
    theirs = oracle.predict_logits_from_preprocessed_data(torch.from_numpy(pre)).numpy()
    from napari_lrp.pipeline.tiling import tiled_prediction

    blended, _ = tiled_prediction(prep.network, prep.x, model.pipeline.patch_size, 0.5, "nnunet")
    np.testing.assert_allclose(prep.crop(blended)[0].numpy(), theirs, rtol=0, atol=1e-4)


def test_voxels_round_trip_exactly(tmp_path):
    """Relevance at one model voxel lands on the one case voxel whose normalised value it holds, in a case
    whose files store the axes swapped and flipped; the start relevance goes the other way."""
    case = nl.load_case(_reoriented_copy(sample_case_path(1), tmp_path / "case_01"))
    model = nl.load_model(sample_nnunet_path(), fold=0)
    prep = model.pipeline.prepare(case, model.card.modalities, model.network, model.device)
    xm = prep.crop(prep.x)[0].numpy()
    assert xm.shape[1:] != case.shape  # the crop box and the voxel order differ from napari's
    rng = np.random.default_rng(0)
    inside = np.argwhere(np.abs(xm[3]) > 0.5)
    lo = np.array([b for b, _a in prep.pads])
    for v in inside[rng.choice(len(inside), 20, replace=False)]:
        R = torch.zeros((1, *prep.x.shape[1:]), dtype=torch.float64)
        R[(0, 3, *(v + lo))] = 1.0
        back = prep.relevance_to_case(R)[0].numpy()
        assert back.sum() == pytest.approx(1.0) and np.count_nonzero(back) == 1
        c, z, y, x = np.argwhere(back)[0]
        assert c == 3
        nonzero = case.image[3][np.any(case.image != 0, axis=0)]
        normalised = (case.image[3, z, y, x] - nonzero.mean()) / nonzero.std()
        assert normalised == pytest.approx(float(xm[3][tuple(v)]), abs=1e-4)
    blended = torch.zeros((1, 2, *prep.x.shape[2:]), dtype=torch.float64)
    blended[:, 1] = 1.0
    z, y, x = np.argwhere(case.image[0] > 0)[11]
    S = torch.zeros((1, 2, *case.shape), dtype=torch.float64)
    S[0, 1, z, y, x] = 1.0
    start, outside = prep.start_to_model(S, blended)
    assert outside == 0 and float(start.sum()) == pytest.approx(1.0) and int((start != 0).sum()) == 1
    v = [int(i) for i in torch.nonzero(start[0, 1])[0]]
    R = torch.zeros((1, *prep.x.shape[1:]), dtype=torch.float64)
    R[(0, 0, *v)] = 1.0
    assert prep.relevance_to_case(R)[0, 0, z, y, x] == 1.0  # and back again to the same voxel


def test_relevance_on_the_case_grid_balances_and_is_zero_outside_the_crop(resampled_folder):
    model = nl.load_model(resampled_folder, fold=0)
    case = load_sample_case(1)
    exp = nl.explain(model, case, preset="epsilon-gamma-box", target="ground truth")
    assert exp.relevance.shape == case.image.shape
    assert abs(exp.ledger.unaccounted) <= 1e-5, exp.ledger.unaccounted
    names = [e.name for e in exp.ledger.entries]
    assert "output to model grid" in names and "input to case grid" in names
    nonzero = np.any(case.image != 0, axis=0)
    assert np.abs(exp.relevance[:, ~nonzero]).max() == 0 or not (~nonzero).any()
    # the relevance sits where the lesion is: more per voxel inside the ground truth than outside
    gt = case.ground_truth
    s = np.abs(exp.relevance.sum(0))
    assert s[gt].mean() > 3 * s[~gt & nonzero].mean()


def test_fold_ensemble_relevance_is_the_mean_of_the_folds():
    case = load_sample_case(1)
    runs = {}
    for fold in (0, 1, None):
        model = nl.load_model(sample_nnunet_path(), fold=fold)
        runs[fold] = nl.explain(model, case, preset="epsilon-gamma-box", target="ground truth")
    assert isinstance(nl.load_model(sample_nnunet_path()).network, FoldEnsemble)
    mean = (runs[0].relevance.astype(np.float64) + runs[1].relevance) / 2
    scale = np.abs(mean).max()
    np.testing.assert_allclose(runs[None].relevance, mean, rtol=0, atol=1e-5 * scale)
    assert np.abs(runs[0].relevance - runs[1].relevance).max() > 0.05 * scale  # the folds differ


def test_a_file_inside_the_folder_loads_the_folder_and_the_fold():
    folder = sample_nnunet_path()
    assert nl.load_model(folder / "plans.json").pipeline.folds == ["fold_0", "fold_1"]
    m = nl.load_model(folder / "fold_1" / "checkpoint_final.pth")
    assert m.pipeline.folds == ["fold_1"] and m.card.modalities == MODS and m.card.classes == ["background", "lesion"]
    assert nl.models.loading.model_sha256(folder / "fold_1" / "checkpoint_final.pth") == m.sha256


def _broken(tmp_path, edit):
    dst = tmp_path / "Dataset001_X" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(sample_nnunet_path(), dst)
    plans = json.loads((dst / "plans.json").read_text())
    edit(plans, dst)
    (dst / "plans.json").write_text(json.dumps(plans))
    return dst


@pytest.mark.parametrize("edit,message", [
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"].update(network_class_name="os.system"),
     "not on the allow-list"),
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(nonlin="builtins.eval"),
     "not a torch.nn class"),
    (lambda p, d: p["configurations"]["3d_fullres"].pop("architecture"), "re-plan with nnU-Net >= 2.4"),
    (lambda p, d: p["configurations"]["3d_fullres"].update(normalization_schemes=["MyNorm"] * 6), "MyNorm"),
    (lambda p, d: shutil.rmtree(d / "fold_1"), "fold_1"),
    (lambda p, d: (d / "dataset.json").write_text(json.dumps({**json.loads((d / "dataset.json").read_text()),
                                                             "labels": {"background": 0, "lesion": [1, -2]}})),
     "a region is a label value or a list of them"),
])
def test_what_cannot_be_read_is_refused_with_file_and_field(tmp_path, edit, message):
    folder = _broken(tmp_path, edit)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace("+", r"\+")):
        nl.load_model(folder, fold=(0, 1))


def test_a_checkpoint_with_python_objects_needs_trust(tmp_path):
    folder = _broken(tmp_path, lambda p, d: None)
    path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(path, weights_only=False)
    ckpt["trainer"] = FoldEnsemble([torch.nn.Identity()])  # an arbitrary pickled object
    torch.save(ckpt, path)
    with pytest.raises(ModelError, match="weights_only=True.*trust=True"):
        nl.load_model(folder, fold=0)
    assert nl.load_model(folder, fold=0, trust=True).pipeline.folds == ["fold_0"]


def test_what_does_not_run_on_nnunet_windows_yet_is_refused_by_name():
    model = nl.load_model(sample_nnunet_path(), fold=0)
    case = load_sample_case(1)
    with pytest.raises(ValueError, match="method='gradient'"):
        nl.explain(model, case, method="gradient")
    with pytest.raises(ValueError, match="mc_samples"):
        nl.explain(model, case, mc_samples=2, dropout=0.1)
    exp = nl.explain(model, case)
    with pytest.raises(ValueError, match="not available yet"):
        exp.perturbation("morf")
    with pytest.raises(ValueError, match="single LRP run"):
        exp.with_rules({})


@pytest.fixture(scope="module")
def region_folder(tmp_path_factory):
    """The sample folder trained region-based, as nnU-Net's BraTS datasets declare it: two sigmoid heads for the
    regions {1, 2} and {2} (dataset.json's lists, regions_class_order), the checkpoint's two outputs as heads."""
    dst = tmp_path_factory.mktemp("nnunet") / "Dataset002_Regions" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(sample_nnunet_path(), dst)
    dataset = json.loads((dst / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "whole lesion": [1, 2], "lesion core": [2]}
    dataset["regions_class_order"] = [1, 2]
    (dst / "dataset.json").write_text(json.dumps(dataset))
    return dst


def test_a_region_based_folder_predicts_as_nnunet_and_explains_each_region(region_folder, monkeypatch):
    model = nl.load_model(region_folder, fold=0)
    assert model.card.classes == ["whole lesion", "lesion core"] and model.card.output_activation == "sigmoid"
    assert model.card.regions == {"whole lesion": [1, 2], "lesion core": [2]} and model.card.target_class == 0
    case_dir = sample_case_path(2)
    case = nl.load_case(case_dir)
    data, props = SimpleITKIO().read_images(_case_files(case_dir))
    oracle = _oracle(region_folder)
    monkeypatch.setattr(torch, "half", torch.float32)  # nnU-Net's window accumulation in float32
    seg, probs = oracle.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, True)
    pred, logits, _ = predict_case(model, case)
    ours = to_nnunet_order(torch.sigmoid(torch.from_numpy(logits).double()).numpy(), case.grid)
    assert ours.shape == probs.shape == (2, *seg.shape)  # one probability per region, no background channel
    np.testing.assert_allclose(ours, probs, rtol=0, atol=1e-4)
    # nnU-Net's label map from the regions: each region in regions_class_order paints its value over the last
    as_nnunet = model.card.label_map(pred)
    assert model.card.regions_class_order == [1, 2]
    assert (to_nnunet_order(as_nnunet[None].astype(np.float32), case.grid)[0] != seg).mean() < 1e-4
    for k in range(2):
        exp = nl.explain(model, case, target_class=k)
        np.testing.assert_array_equal(exp.target_region(), ((pred >> k) & 1) > 0)
        assert abs(exp.ledger.unaccounted) <= 1e-5, exp.ledger.unaccounted
        # each region's ground truth is its label values (the sample label holds 0 and 1: the core is empty)
        assert exp.ground_truth.sum() == (case.label > 0).sum() if k == 0 else not exp.ground_truth.any()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Results folders from nnU-Net's own fingerprint extraction and planners on a generated BraTS-like cohort
    (four channels, two nested regions), made once: the default planner and ResEnc M; a case as BraTS 2021
    names its files, and one scanned at another spacing than the cohort's (nnU-Net resamples it)."""
    from tests.models._nnunet_planner import planned_results_folders, write_case_folder

    root = tmp_path_factory.mktemp("planned")
    folders = planned_results_folders(root)
    return {"default": folders["ExperimentPlanner"], "resenc": folders["nnUNetPlannerResEncM"],
            "case": write_case_folder(root / "cases" / "BraTSLike_100"),
            "resampled case": write_case_folder(root / "cases" / "BraTSLike_101", seed=8,
                                                affine=np.diag([1.3, 0.8, 2.0, 1.0]))}


@pytest.mark.parametrize("which,mirroring", [("default", False), ("default", True), ("resenc", False),
                                             ("resampled", False)])
def test_planner_made_region_folders_equal_nnunets_predictor_and_explain_each_region(planned, which, mirroring,
                                                                                     monkeypatch):
    from tests.models._nnunet_planner import CHANNELS, case_files

    folder = planned["default" if which == "resampled" else which]
    case_dir = planned["resampled case" if which == "resampled" else "case"]
    plans = json.loads((folder / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"].endswith(
        "ResidualEncoderUNet" if which == "resenc" else "PlainConvUNet")
    model = nl.load_model(folder, fold=0, mirroring=mirroring)
    assert model.card.modalities == CHANNELS and model.card.classes == ["whole lesion", "lesion core"]
    case = nl.load_case(case_dir)  # BraTS file names: t1, t1ce, t2, flair mapped to the model's names
    assert [m.lower() for m in case.modalities] == [c.lower() for c in CHANNELS]
    data, props = SimpleITKIO().read_images(case_files(case_dir))
    target_spacing = plans["configurations"]["3d_fullres"]["spacing"]
    assert (which == "resampled") == (not np.allclose(props["spacing"], target_spacing)), (props, target_spacing)
    oracle = _oracle(folder, mirroring=mirroring)
    monkeypatch.setattr(torch, "half", torch.float32)  # nnU-Net's window accumulation in float32
    seg, probs = oracle.predict_single_npy_array(data, {"spacing": props["spacing"]}, None, None, True)
    pred, logits, _ = predict_case(model, case)
    ours = to_nnunet_order(torch.sigmoid(torch.from_numpy(logits).double()).numpy(), case.grid)
    assert ours.shape == probs.shape
    np.testing.assert_allclose(ours, probs, rtol=0, atol=1e-4)  # the whole case grid, the crop box's outside too
    assert (probs[:, data.sum(0) == 0] == 0).all()  # nnU-Net's background outside the crop box
    painted = model.card.label_map(pred)  # nnU-Net's label map: regions_class_order painted in order
    assert set(np.unique(painted)) <= {0, 1, 2}
    assert (to_nnunet_order(painted[None].astype(np.float32), case.grid)[0] != seg).mean() < 1e-4
    if mirroring or which == "resenc":
        return
    label = case.label
    from napari_lrp.metrics.measures import dice

    for k, values in enumerate(([1, 2], [2])):
        # Dice per region: ours from the region bits, nnU-Net's from its own probabilities > 0.5
        truth = np.isin(label, values)
        theirs = from_nnunet_order(probs[k:k + 1] > 0.5, case.grid)[0]
        expected = 2 * (theirs & truth).sum() / (theirs.sum() + truth.sum())
        assert dice(pred, truth, k, multilabel=True) == pytest.approx(expected, abs=1e-3)
        exp = nl.explain(model, case, target_class=k)
        assert exp.target_region().any() and abs(exp.ledger.unaccounted) <= 1e-5, exp.ledger.unaccounted
        assert np.array_equal(exp.ground_truth, np.isin(label, values))
        assert exp.for_target("groundtruth").target_region().sum() == np.isin(label, values).sum()


@pytest.mark.parametrize("shape,spacing,target", [
    ((13, 20, 17), (6.5, 2.8, 2.8), (5.0, 2.0, 2.0)),  # every axis at once, clipped per channel
    ((13, 20, 17), (6.5, 2.8, 2.8), (8.0, 2.0, 2.0)),  # in-plane first (clipped per slice), then z
])
def test_lrp0_through_a_clipping_resampling_is_gradient_x_input(shape, spacing, target):
    """A z-scored MRI with a sharp edge: the cubic spline overshoots the input's range and skimage clips it.
    LRP-0 through the resampling equals gradient x input of the clipped resampling (autograd through the same
    arrays, float64, itself checked by central differences), clipped voxels included, and conserves: a clipped
    voxel takes the value of the input voxel holding that end of the range, so the function's derivative goes
    there (the clip's derivative with respect to the interpolated value is 0 where it clips). (The background
    carries a little noise: where a voxel is interpolated exactly onto the range's end, the rule passes it the
    linear way while autograd splits the gradient of max(z, end) between the two: both conserve, neither is the
    gradient.)"""
    rng = np.random.default_rng(1)
    x = -0.8 + 0.01 * rng.random((2, *shape))  # the background after z-scoring without a mask
    x[:, 4:10, 5:15, 4:12] = rng.normal(1.5, 0.6, size=(2, 6, 10, 8))  # the head, with sharp edges
    r = resampling(shape, spacing, target, order=3)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = r(xt)
    inputs, outputs = r._forward(xt.detach())
    clipped = outputs[0] != inputs[1]  # the first stage's output before and after skimage's clip
    assert int(clipped.sum()) > 10, "the test input must overshoot the range somewhere"
    g_out = torch.from_numpy(rng.normal(size=tuple(y.shape)))
    (g_in,) = torch.autograd.grad(y, xt, g_out)
    # the gradient is the function's own: central differences at the voxels holding the range's ends (whose
    # value the clipped voxels take) and at a few others
    flat = x[0].ravel()
    picks = [int(np.argmax(flat)), int(np.argmin(flat)), *rng.integers(0, flat.size, 3).tolist()]
    for k in picks:
        idx = (0, *np.unravel_index(k, x.shape[1:]))
        h = 1e-6
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        numeric = float(((r(torch.from_numpy(up)) - r(torch.from_numpy(down))) * g_out).sum()) / (2 * h)
        assert numeric == pytest.approx(float(g_in[idx]), rel=1e-4, abs=1e-6), (k, numeric, float(g_in[idx]))
    lrp0 = r.relevance(xt.detach(), g_out * y.detach(), epsilon=0.0)
    np.testing.assert_allclose(lrp0.numpy(), (g_in * xt.detach()).numpy(), rtol=1e-9, atol=1e-12)
    assert float(lrp0.sum()) == pytest.approx(float((g_out * y.detach()).sum()), rel=1e-10)


def _bias_free_copy(folder, dst):
    """``folder`` with its network made bias-free and norm-free (plans' conv_bias false, norm_op none; every
    bias of nnU-Net's own builder zeroed in a trainer-written checkpoint): a piecewise-linear network, where
    LRP-0 is gradient x input."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    shutil.copytree(folder, dst)
    plans = json.loads((dst / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch.update(conv_bias=False, norm_op=None, norm_op_kwargs=None)
    (dst / "plans.json").write_text(json.dumps(plans))
    dataset = json.loads((dst / "dataset.json").read_text())
    cm = PlansManager(plans).get_configuration("3d_fullres")
    torch.manual_seed(1)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, len(dataset["channel_names"]), 2,
                                 allow_init=True, deep_supervision=True)
    weights = {k: torch.zeros_like(v) if k.endswith("bias") else v for k, v in net.state_dict().items()}
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt["network_weights"] = weights
    ckpt["init_args"]["plans"] = plans
    torch.save(ckpt, dst / "fold_0" / "checkpoint_final.pth")
    return dst


def test_lrp0_of_a_planner_made_folder_is_gradient_x_input_of_nnunets_own_pipeline_with_clipping(planned, tmp_path,
                                                                                                 monkeypatch):
    """The default planner's folder, made bias-free and norm-free, on a case scanned at another spacing (nnU-Net
    resamples it with cubic splines and clips the overshoot): LRP-0 relevance on the case grid equals gradient x
    input of nnU-Net's own pipeline (its cropping, normalisation, resampling, sliding windows and resampling back,
    run by nnU-Net's functions in float64) with respect to the normalised voxels, checked by central differences
    along a random direction and along the voxels holding the range's ends, whose values clipped voxels take."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from tests.models._nnunet_planner import case_files

    folder = _bias_free_copy(planned["default"], tmp_path / "Dataset003_BraTSLike" / planned["default"].name)
    case_dir = planned["resampled case"]
    model = nl.load_model(folder, fold=0)
    case = nl.load_case(case_dir)
    k = 0  # the whole lesion region
    exp = nl.explain(model, case, preset="lrp0", target="ground truth", target_class=k)
    assert abs(exp.ledger.unaccounted) <= 1e-6

    # nnU-Net's pipeline up to the normalised, cropped voxels (as DefaultPreprocessor.run_case_npy orders it)
    oracle = _oracle(folder)
    monkeypatch.setattr(torch, "half", torch.float64)  # nnU-Net's accumulators, in float64 here
    oracle.network.double()
    pm, cm = oracle.plans_manager, oracle.configuration_manager
    data, props = SimpleITKIO().read_images(case_files(case_dir))
    data = data.transpose([0, *[i + 1 for i in pm.transpose_forward]]).astype(np.float64)
    spacing = [props["spacing"][i] for i in pm.transpose_forward]
    label, _ = SimpleITKIO().read_seg(str(case_dir / f"{case_dir.name}_seg.nii.gz"))
    cropped, seg, bbox = crop_to_nonzero(data, label.transpose([0, *[i + 1 for i in pm.transpose_forward]]))
    normalised = DefaultPreprocessor()._normalize(cropped.copy(), seg, cm,
                                                  pm.foreground_intensity_properties_per_channel)
    new_shape = compute_new_shape(cropped.shape[1:], spacing, cm.spacing)
    region = np.isin(seg[0], [1, 2])  # the whole lesion's label values, on the cropped grid

    def pipeline(x: np.ndarray) -> float:
        resampled = cm.resampling_fn_data(x, new_shape, spacing, cm.spacing)
        with torch.no_grad():
            logits = oracle.predict_sliding_window_return_logits(torch.from_numpy(resampled).double())
        back = cm.resampling_fn_probabilities(logits.double().numpy(), cropped.shape[1:], cm.spacing, spacing)
        return float(back[k][region].sum())

    from skimage.transform import resize

    unclipped = np.stack([resize(c, new_shape, order=3, mode="edge", clip=False, anti_aliasing=False)
                          for c in normalised])
    clipped = unclipped != cm.resampling_fn_data(normalised, new_shape, spacing, cm.spacing)
    assert clipped.sum() > 100, "the resampling must clip somewhere for this test to mean anything"

    # ours, on the same grid: the case grid in nnU-Net's voxel order, cropped to its box
    ours = to_nnunet_order(exp.relevance.astype(np.float64), case.grid)
    ours = ours.transpose([0, *[i + 1 for i in pm.transpose_forward]])
    ours = ours[(slice(None), *[slice(a, b) for a, b in bbox])]
    assert ours.shape == normalised.shape
    assert pipeline(normalised) == pytest.approx(exp.ledger.start, rel=1e-5)  # the same function, the same start
    gradient = np.divide(ours, normalised, out=np.zeros_like(ours), where=np.abs(normalised) > 1e-3)
    rng = np.random.default_rng(0)
    ends = np.zeros(normalised.shape, bool)
    for c in range(normalised.shape[0]):  # the voxels holding each channel's range ends
        ends[c].flat[[int(np.argmax(normalised[c])), int(np.argmin(normalised[c]))]] = True
    usable = np.abs(normalised) > 1e-3
    # float64 central differences with a step small enough to cross no kink of the network's LeakyReLUs
    for v in (rng.normal(size=normalised.shape) * usable, ends * usable * 1.0):
        h = 1e-7 / max(np.abs(v).max(), 1e-30)
        numeric = (pipeline(normalised + h * v) - pipeline(normalised - h * v)) / (2 * h)
        assert numeric == pytest.approx(float((gradient * v).sum()), rel=1e-4, abs=1e-8 * abs(exp.ledger.start))
