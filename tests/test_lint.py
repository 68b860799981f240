"""ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade; pyproject.toml) holds over the repository."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "scripts", "docs",
                           "sample_data", "--output-format", "concise"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_ruff_reports_a_long_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = '" + "a" * 130 + "'\n")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", str(bad), "--config", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "E501" in done.stdout
