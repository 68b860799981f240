"""The start relevance at the output (lrp/targets.py): hand values."""

import numpy as np
import pytest
import torch

from napari_lrp.lrp.targets import class_view, is_multilabel, predict, region_mask, start_relevance, target_of


def test_predict_argmax_and_single_sigmoid_channel():
    logits = torch.tensor([[[1.0, -2.0, 0.5]], [[0.0, 3.0, 0.5]]])[None]  # (1, K=2, 1, 3)
    assert predict(logits).tolist() == [[[0, 1, 0]]]  # ties go to the first class
    one = torch.tensor([[[[-0.1, 0.0, 2.0]]]])  # (1, 1, 1, 3)
    assert predict(one).tolist() == [[[0, 0, 1]]]
    assert predict(logits).dtype == torch.uint8


def test_several_sigmoid_channels_are_independent_regions_one_bit_each():
    # three nested regions on four voxels: whole (0), core (1), enhancing (2), as BraTS' sigmoid heads
    logits = torch.tensor([[-1.0, 2.0, 2.0, 2.0], [-1.0, -1.0, 0.5, 0.5], [3.0, -2.0, -0.1, 1.0]])
    logits = logits.view(1, 3, 1, 1, 4)
    pred = predict(logits, "sigmoid")
    assert pred.tolist() == [[[[4, 1, 3, 7]]]] and pred.dtype == torch.uint8  # bit k: sigmoid(logit_k) > 1/2
    assert predict(logits, "softmax").tolist() == [[[[2, 0, 0, 0]]]]  # the same logits as classes: argmax
    assert is_multilabel("sigmoid", 3) and not is_multilabel("sigmoid", 1) and not is_multilabel("softmax", 3)
    p = pred[0].numpy()
    for k, region in enumerate(([False, True, True, True], [False, False, True, True], [True, False, False, True])):
        view = class_view(p, k, True)
        assert (view == k).ravel().tolist() == region
        assert region_mask("region", view, None, k).ravel().tolist() == region
    assert class_view(p, 1, False) is p
    with pytest.raises(ValueError, match="at most 8 regions"):
        predict(torch.zeros(1, 9, 1, 1, 1), "sigmoid")
    # the target of region 1 starts at its logit on its own predicted region
    prediction, mask = target_of(logits, "sigmoid", "region", 1)
    assert mask.ravel().tolist() == [False, False, True, True]
    R = start_relevance(logits, mask, 1)
    assert R[0, 1].ravel().tolist() == [0.0, 0.0, 0.5, 0.5] and float(R[0, [0, 2]].abs().sum()) == 0


def test_region_masks():
    pred = np.array([[[0, 1, 2]]], np.uint8)
    label = np.array([[[False, True, True]]])  # the case's ground truth (Case.ground_truth)
    assert region_mask("region", pred, label, 1).tolist() == [[[False, True, False]]]
    assert region_mask("groundtruth", pred, label, 1).tolist() == [[[False, True, True]]]
    assert region_mask("groundtruth", pred, label, 2).tolist() == [[[False, True, True]]]  # the region, any class
    assert region_mask("output", pred, label, 1) is None
    assert region_mask(np.array([[[0, 255, 0]]]), pred, None, 1).tolist() == [[[False, True, False]]]
    assert region_mask((0, 0, 2), pred, label, 1).tolist() == [[[False, False, True]]]
    with pytest.raises(ValueError, match="outside the volume"):
        region_mask((0, 0, 3), pred, label, 1)
    with pytest.raises(ValueError, match="needs a case with a label"):
        region_mask("groundtruth", pred, None, 1)
    with pytest.raises(ValueError, match="unknown target"):
        region_mask("lesion", pred, label, 1)
    with pytest.raises(ValueError, match="target mask has shape"):
        region_mask(np.ones((2, 2, 2)), pred, label, 1)


def test_start_relevance_is_the_class_logit_inside_the_mask():
    logits = torch.arange(12, dtype=torch.float32).reshape(1, 2, 1, 2, 3)
    mask = np.array([[[True, False, True], [False, False, True]]])
    R = start_relevance(logits, mask, 1)
    assert R[0, 0].abs().sum() == 0
    assert R[0, 1].tolist() == [[[6.0, 0.0, 8.0], [0.0, 0.0, 11.0]]]
    out = start_relevance(logits, None, 1)
    assert torch.equal(out, logits) and out is not logits
