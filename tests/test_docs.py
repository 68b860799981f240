"""The documentation: a strict build (a broken link or a page missing from the navigation fails), a short
README whose test command is the one CI runs, and no references to documents or issue numbers the
repository does not hold."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("napari_lrp.explain", "napari_lrp.Explanation", "RunSpec", "run_tiled", "case_from_layers"):
        assert name in api, f"the API reference lacks {name}"


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[missing](nowhere.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\nstrict: true\nnav:\n  - Home: index.md\n")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "nowhere.md" in done.stderr


def test_the_readme_is_short_and_its_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    command = "scripts/setup.sh --test && .venv/bin/python -m pytest"
    assert command in readme
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in lines if line and not line.startswith(("#", "set", "cd"))]
    assert ci == [command]
    assert "scripts/setup.sh && .venv/bin/napari-lrp demo" in readme
    for page in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / page).exists(), f"the README links to {page}, which does not exist"


def test_no_reference_to_a_design_file_or_an_issue_number():
    tracked = subprocess.run(["git", "ls-files", "src", "tests", "benchmarks", "scripts", "docs", "sample_data",
                              "README.md"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    bad = re.compile(r"DESIGN|\bissue #?\d+|\(#\d+\b|#\d+ item")
    found = []
    for name in tracked:
        if not name.endswith((".py", ".md", ".sh", ".yaml", ".yml")) or name == "tests/test_docs.py":
            continue
        for i, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            if bad.search(line):
                found.append(f"{name}:{i}: {line.strip()[:80]}")
    assert not found, found


def _numpydoc_gaps(func, owner=None) -> list[str]:
    """What a public function's docstring lacks: a docstring, 'Parameters' when it takes any, 'Returns' (or
    'Yields', or 'Raises' for one that only refuses) when it returns. A method that overrides a documented
    method of a base class (``owner``'s MRO) may leave its parameters to that documentation."""
    import ast
    import inspect
    import textwrap

    doc = inspect.getdoc(func) or ""
    params = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    def own_returns(node):  # a nested function's returns are its own
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Return) and child.value is not None:
                yield child
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from own_returns(child)

    returns = any(r.value is not None and not (isinstance(r.value, ast.Constant) and r.value.value is None)
                  for r in own_returns(tree.body[0]))
    gaps = [] if doc else ["docstring"]
    if params and "Parameters\n----------" not in doc:
        gaps.append("Parameters")
    if returns and not any(f"{w}\n{'-' * len(w)}" in doc for w in ("Returns", "Yields", "Raises")):
        gaps.append("Returns")
    if gaps and doc and owner is not None:
        for base in owner.__mro__[1:]:
            if func.__name__ in vars(base) and not _numpydoc_gaps(getattr(base, func.__name__)):
                return []
    return gaps


def test_the_public_api_has_numpydoc_parameters_and_returns():
    import inspect

    import napari_lrp
    from napari_lrp import layerdata, pipeline
    from napari_lrp.lrp import blocks
    from napari_lrp.models import pipeline as model_pipeline
    from napari_lrp.pipeline import runs

    funcs = {f"napari_lrp.{n}": getattr(napari_lrp, n) for n in napari_lrp.__all__
             if inspect.isfunction(getattr(napari_lrp, n))}
    for module in (pipeline, layerdata, blocks, model_pipeline):
        funcs.update({f"{module.__name__}.{n}": getattr(module, n) for n in module.__all__
                      if inspect.isfunction(getattr(module, n))})
    for cls in (napari_lrp.Explanation, runs.RunRecord, runs.LRPRun):
        funcs.update({f"{cls.__name__}.{n}": f for n, f in vars(cls).items()
                      if inspect.isfunction(f) and not n.startswith("_")})
    gaps = {name: g for name, f in funcs.items() if (g := _numpydoc_gaps(f))}
    assert len(funcs) > 40 and not gaps, gaps


def test_the_numpydoc_check_finds_a_gap():
    def undocumented(a, b):
        """Adds."""
        return a + b

    assert _numpydoc_gaps(undocumented) == ["Parameters", "Returns"]


def test_every_public_function_and_class_of_the_package_has_numpydoc_sections():
    """Every public function, class, method and property of every public module (napari's docks included)."""
    import importlib
    import inspect
    import pkgutil

    import napari_lrp

    gaps, count = {}, 0
    for info in pkgutil.walk_packages(napari_lrp.__path__, "napari_lrp."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            count += 1
            if inspect.isfunction(obj):
                if g := _numpydoc_gaps(obj):
                    gaps[f"{info.name}.{name}"] = g
                continue
            if not inspect.isclass(obj):
                continue
            if not inspect.getdoc(obj):
                gaps[f"{info.name}.{name}"] = ["docstring"]
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                count += 1
                if isinstance(member, property):
                    if not inspect.getdoc(member):
                        gaps[f"{info.name}.{name}.{attr}"] = ["docstring"]
                    continue
                func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if inspect.isfunction(func) and (g := _numpydoc_gaps(getattr(obj, attr), obj)):
                    gaps[f"{info.name}.{name}.{attr}"] = g
    assert count > 400 and not gaps, f"{len(gaps)} lack numpydoc sections: {gaps}"
