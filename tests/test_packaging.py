"""A wheel built from the repository carries the manifest and the sample data; in a fresh virtual
environment ``npe2 validate napari-lrp`` passes."""

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_manifest_and_validates_in_fresh_venv(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("napari_lrp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_lrp/napari.yaml" in names
    assert "napari_lrp/sample_data/model/card.json" in names and "napari_lrp/sample_data/model/model.pt" in names
    assert any(n.startswith("napari_lrp/sample_data/cohort/case_01/") and n.endswith(".nii.gz") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-lrp = napari_lrp:napari.yaml" in entry
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "npe2"], check=True, capture_output=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    out = subprocess.run([str(env / "bin" / "npe2"), "validate", "napari-lrp"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout
