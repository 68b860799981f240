"""The README's scripting example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "no python example in the README"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["R"].shape == (1, 6, 19, 32, 32)
    assert (tmp_path / "relevance_sum.nii.gz").exists() and (tmp_path / "settings.json").exists()
    assert len(namespace["table"]) == 18 * 7
    card = namespace["card"]
    assert set(card.method) == {"lrp:paper", "gradient_x_input"} and len(card) == 2 * 7
