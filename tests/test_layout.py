"""The house rules (DESIGN section 2, issue #12): the import graph and one home per concept."""

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_lrp"
STDLIB = set(sys.stdlib_module_names)
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(absolute module imported, names) for every import in the file, relative ones resolved."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names]


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_the_package_init(path):
    for target, names in _imports(path):
        if target == "napari_lrp" and path != SRC / "__init__.py":
            submodules = [n for n in names if (SRC / f"{n}.py").exists() or (SRC / n).is_dir()]
            assert submodules == names, f"{path.name} imports {names} from the package __init__"


def test_lrp_imports_only_torch_numpy_and_itself():
    for path in sorted((SRC / "lrp").rglob("*.py")):
        for target, _names in _imports(path):
            top = target.split(".")[0]
            assert top in ("torch", "numpy", "__future__") or top in STDLIB and top != "napari_lrp" or \
                target.startswith("napari_lrp.lrp"), f"{path.name} imports {target}"


def test_the_core_never_imports_napari_or_qt():
    # the core of DESIGN section 2: io, models, lrp, metrics, batch and the pipeline above lrp; the widgets,
    # the npe2 glue (_npe2.py), the CLI's demo and the package's nl.show may reach napari
    glue = ("cli.py", "__init__.py", "_npe2.py")
    core = [p for p in FILES if not p.is_relative_to(SRC / "widgets") and not (p.parent == SRC and p.name in glue)]
    for path in core:
        for target, _names in _imports(path):
            assert target.split(".")[0] not in GUI, f"{path.relative_to(SRC)} imports {target}"


def test_no_outside_reads_of_an_explanations_private_parts():
    for path in FILES:
        if path.name == "result.py":
            continue
        text = path.read_text()
        for private in ("._prepared", "._prop.", "._prop)", "._run."):
            assert private not in text, f"{path.relative_to(SRC)} reads {private}"


def _defined(name: str) -> list[str]:
    """Files of src that define (class, def or assignment at module level) ``name``."""
    out = []
    for path in FILES:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name or any(
                    isinstance(t, ast.Name) and t.id == name for t in targets):
                out.append(str(path.relative_to(SRC)))
    return out


@pytest.mark.parametrize("name, home", [
    ("PRESETS", "lrp/presets.py"), ("default_rule", "lrp/presets.py"), ("resolve_rule", "lrp/presets.py"),
    ("Epsilon", "lrp/rules.py"), ("ZPlus", "lrp/rules.py"), ("Pass", "lrp/filters.py"),
    ("FILTER_KINDS", "lrp/filters.py"), ("make_filter", "lrp/filters.py"), ("default_grid", "lrp/filters.py"),
    ("heatmap", "lrp/filters.py"), ("conv3d", "lrp/kernels.py"), ("Ledger", "lrp/ledger.py"),
    ("BatchNormFolding", "lrp/folding.py"), ("LINEAR_TYPES", "lrp/types.py"), ("PASS_FUNCTIONS", "lrp/types.py"),
    ("Explanation", "pipeline/result.py"), ("sweep", "analysis/sweep.py"), ("measure", "metrics/table.py"),
    ("ModelCard", "models/card.py"), ("resolve_device", "models/devices.py"), ("load_weights", "models/weights.py"),
    ("card_from_bundle", "models/bundles.py"), ("replacing_folder", "io/atomic.py"),
])
def test_each_concept_has_one_home(name, home):
    assert _defined(name) == [home]


def test_filters_are_built_only_in_the_filter_vocabulary():
    """Only lrp/filters.py constructs Pass, Clamp or Amplify; everything else calls make_filter or parses a spec."""
    for path in FILES:
        if path.name == "filters.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("Pass", "Clamp", "Amplify"), f"{path.relative_to(SRC)} builds {node.func.id}"
