"""The house rules (docs/architecture.md): the import graph, the package's rooms and one home per concept."""

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
    # the core: io, models, lrp, metrics, pipeline, analysis, batch and layerdata; the widgets, the npe2 glue
    # (_npe2.py), the CLI's demo and the package's nl.show may reach napari
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
                assert node.func.id not in ("Pass", "Clamp", "Amplify"), \
                    f"{path.relative_to(SRC)} builds {node.func.id}"


def _graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, imports inside functions included."""
    modules = {_module_name(p): p for p in FILES}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target, names in _imports(path):
            if not target.startswith("napari_lrp"):
                continue
            for n in names:
                deps.add(f"{target}.{n}" if f"{target}.{n}" in modules else target)
            if not names:
                deps.add(target)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_name():
    modules = {_module_name(p) for p in FILES}
    for path in FILES:
        own = _module_name(path)
        aliases = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "napari_lrp" in (node.module or "") or \
                    isinstance(node, ast.ImportFrom) and node.level:
                for a in node.names:
                    assert not a.name.startswith("_") or a.name == "__future__", \
                        f"{path.relative_to(SRC)} imports the private name {a.name}"
                    aliases[a.asname or a.name] = a.name
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # module._private read through an imported module
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.value.id in aliases:
                target = aliases[node.value.id]
                assert not any(m.endswith(f".{target}") for m in modules) or target == own, \
                    f"{path.relative_to(SRC)} reads {node.value.id}.{node.attr}"


#: what the widgets may use of lrp/ and models/: their public surface
WIDGET_SURFACE = {
    "napari_lrp.lrp.filters": {"FILTER_KINDS", "Filter", "describe_filter", "heatmap_filter", "make_filter"},
    "napari_lrp.lrp.blocks": {"block_names", "filterable_layers"},
    "napari_lrp.lrp.engine": {"Cancelled"},
    "napari_lrp.lrp.presets": {"PRESETS"},
    "napari_lrp.models": {"available_devices", "load_model"},
}


def test_the_widgets_use_only_the_public_surface_of_lrp_and_models():
    for path in sorted((SRC / "widgets").rglob("*.py")):
        for target, names in _imports(path):
            if target.startswith(("napari_lrp.lrp", "napari_lrp.models")):
                allowed = WIDGET_SURFACE.get(target, set())
                extra = sorted(set(names) - allowed)
                assert not extra, f"widgets/{path.name} imports {extra} from {target}"


def test_the_package_root_holds_only_its_entry_points_and_subpackages():
    files = sorted(p.name for p in SRC.iterdir() if p.suffix == ".py")
    assert files == ["__init__.py", "_npe2.py", "cli.py", "layerdata.py", "samples.py"]
    packages = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == ["analysis", "batch", "io", "lrp", "metrics", "models", "pipeline", "widgets"]


def _body_lines(node) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return node.end_lineno - first.lineno + 1


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 80:
                long.append(f"{path.relative_to(SRC)}:{node.name} ({_body_lines(node)} lines)")
    assert not long, long


def test_every_functional_table_has_a_handler_in_the_engine():
    from napari_lrp.lrp import engine, types

    tables = {name for name in dir(types) if name.endswith("_FUNCTIONS")} - {"CONV3D_FUNCTIONS", "ROUTING_FUNCTIONS"}
    handled = {name for name in tables if any(getattr(types, name) is t for t, _h in engine.FUNCTIONAL_HANDLERS)}
    assert handled == tables
    for table, handler in engine.FUNCTIONAL_HANDLERS:
        for func in table:  # the first table that holds a function decides
            first = next(h for t, h in engine.FUNCTIONAL_HANDLERS if func in t)
            assert engine._DISPATCH[func] is first
            assert func not in table or first is handler or any(func in t for t, _h in engine.FUNCTIONAL_HANDLERS
                                                                  if t is not table)
