"""The start relevance at the output (lrp/targets.py): hand values."""

import numpy as np
import pytest
import torch

from napari_lrp.lrp.targets import predict, region_mask, start_relevance


def test_predict_argmax_and_single_sigmoid_channel():
    logits = torch.tensor([[[1.0, -2.0, 0.5]], [[0.0, 3.0, 0.5]]])[None]  # (1, K=2, 1, 3)
    assert predict(logits).tolist() == [[[0, 1, 0]]]  # ties go to the first class
    one = torch.tensor([[[[-0.1, 0.0, 2.0]]]])  # (1, 1, 1, 3)
    assert predict(one).tolist() == [[[0, 0, 1]]]
    assert predict(logits).dtype == torch.uint8


def test_several_sigmoid_channels_are_refused_not_argmaxed():
    logits = torch.zeros(1, 3, 2, 2, 2)
    with pytest.raises(ValueError, match="3 sigmoid output channels"):
        predict(logits, "sigmoid")
    assert predict(logits[:, :1], "sigmoid").shape == (1, 2, 2, 2)


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
