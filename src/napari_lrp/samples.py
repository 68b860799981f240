"""Where the shipped sample cohort and sample model live (package ``napari_lrp.sample_data``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .io import load_case
from .models import load_model

__all__ = ["sample_root", "sample_case_path", "sample_case_paths", "sample_model_path", "sample_dropout_model_path",
           "sample_nnunet_path",
           "load_sample_case", "load_sample_model"]


def sample_root() -> Path:
    """The folder of the shipped sample data (the package ``napari_lrp.sample_data``).

    Returns
    -------
    Path
    """
    return Path(str(resources.files("napari_lrp.sample_data")))


def sample_case_paths() -> list[Path]:
    """The folders of the shipped sample cases, in order.

    Returns
    -------
    list of Path
        case_01, case_02, case_03: three synthetic ISLES-2017-like cases.
    """
    return sorted(p for p in (sample_root() / "cohort").iterdir() if p.is_dir() and p.name.startswith("case_"))


def sample_case_path(i: int = 1) -> Path:
    """Folder of one shipped sample case.

    Parameters
    ----------
    i : int
        The case's number, 1 to 3.

    Returns
    -------
    Path
    """
    paths = sample_case_paths()
    if not 1 <= i <= len(paths):
        raise IndexError(f"there are {len(paths)} sample cases; asked for case {i}")
    return paths[i - 1]


def sample_model_path() -> Path:
    """The sample model's card (UNet3D, width 8, trained by sample_data/train.py).

    Returns
    -------
    Path
        card.json next to model.pt.
    """
    return sample_root() / "model" / "card.json"


def sample_dropout_model_path() -> Path:
    """The sample model fine-tuned with dropout 0.1 at the end of every block.

    ``UNet3D(dropout=0.1)`` for Monte Carlo dropout (``explain(..., mc_samples=T)``), made by
    sample_data/train.py --dropout 0.1 --init.

    Returns
    -------
    Path
        Its card.
    """
    return sample_root() / "model_dropout" / "card.json"


def sample_nnunet_path() -> Path:
    """The sample nnU-Net v2 results folder (PlainConvUNet, 3d_fullres, folds 0 and 1).

    Made by sample_data/make_nnunet.py; ``nl.load_model(sample_nnunet_path(), fold=0)`` loads one fold.

    Returns
    -------
    Path
    """
    return sample_root() / "nnunet" / "Dataset001_SampleStroke" / "nnUNetTrainer__nnUNetPlans__3d_fullres"


def load_sample_case(i: int = 1):
    """One shipped sample case, loaded.

    Parameters
    ----------
    i : int
        As for :func:`sample_case_path`.

    Returns
    -------
    Case
    """
    return load_case(sample_case_path(i))


def load_sample_model(device: str = "auto"):
    """The sample model, loaded.

    Parameters
    ----------
    device : str
        'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.

    Returns
    -------
    Model
    """
    return load_model(sample_model_path(), device=device)
