"""What a label file means: the one binarisation of ground truth, and brain masks told apart from lesions.

One rule everywhere (targets, inclusivity, Dice, sweeps): a *binary* label (zero and one other value,
whatever it is: 0/1, 0/255, 0/2) marks the region with every non-zero voxel; a *multi-label* file (two or
more non-zero values, e.g. BraTS 1/2/4) needs the value(s) of the region named (``label_values=`` in
:func:`napari_lrp.load_case`, ``--label-value`` on the command line), and anything else is refused with a
message that says so. A boolean mask is taken as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .nifti import CaseError

__all__ = ["BRAIN_MASK", "ground_truth_mask", "is_brain_mask_name", "label_value_summary"]

#: what :func:`napari_lrp.io.case.recognise` returns for a brain (skull-strip) mask
BRAIN_MASK = "brain mask"


def label_value_summary(label: np.ndarray) -> list[int]:
    """The non-zero values of a label array, sorted.

    Parameters
    ----------
    label : numpy.ndarray
        (Z, Y, X) integer labels.

    Returns
    -------
    list of int
    """
    values = np.unique(np.asarray(label))
    return [int(v) for v in values if v != 0]


def ground_truth_mask(label, label_values: Sequence[int] | None = None, source: str = "the label") -> np.ndarray:
    """The ground-truth region of a label.

    Parameters
    ----------
    label : numpy.ndarray
        A bool mask (taken as it is) or an integer label array.
    label_values : sequence of int, optional
        The value(s) that make the region (needed for a multi-label file).
    source : str
        Named in refusals.

    Returns
    -------
    numpy.ndarray
        Bool, the label's shape.

    Raises
    ------
    CaseError
        When a multi-label file comes without values, or when a named value does not occur.
    """
    label = np.asarray(label)
    if label.dtype == bool:
        return label
    if label_values is not None:
        values = [int(v) for v in (label_values if isinstance(label_values, Sequence) else [label_values])]
        present = label_value_summary(label)
        missing = [v for v in values if v not in present]
        if missing:
            raise CaseError(f"{source}: label value(s) {missing} do not occur; the file holds {present or 'only 0'}")
        return np.isin(label, values)
    present = label_value_summary(label)
    if len(present) > 1:
        raise CaseError(f"{source}: a multi-label file (values {present}); name the value(s) of the region: "
                        f"load_case(..., label_values=[...]) or --label-value on the command line")
    return label != 0


def is_brain_mask_name(tokens: Sequence[str]) -> bool:
    """Whether a file or folder name names a brain (skull-strip) mask.

    Parameters
    ----------
    tokens : sequence of str
        The name split into lower-case tokens.

    Returns
    -------
    bool
    """
    toks = set(tokens)
    return bool(toks & {"brainmask", "brainmasks", "skullstrip", "skullstripmask"}) or (
        "brain" in toks and bool(toks & {"mask", "msk"}))
