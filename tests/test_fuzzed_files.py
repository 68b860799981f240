"""Property-style fuzzing of the files users hand over: plans.json, dataset.json, inference.json, metadata.json,
card.json and settings.json are mutated (types, ranges, deletion, duplication, nesting) from a valid
original; each mutant must give a correct run or the project's own error (ModelError, CaseError or the
placement/validation ValueError) whose message names the file or the field. A traceback of any other kind
(KeyError, TypeError, AttributeError, IndexError, ...) is a bug, and the test prints the mutation."""

import copy
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import napari_lrp as nl
from napari_lrp.io import CaseError
from napari_lrp.models import ModelError
from napari_lrp.samples import sample_model_path, sample_nnunet_path
from tests.conftest import make_case_folder
from tests.models.test_bundle_transforms import make_bundle

#: mutants per file (deterministic: seeded per file)
N_MUTANTS = 40
SHAPE = (16, 14, 10)


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document, the root included."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _replacements(value):
    out = [None, [], {}, "x", -1, 0, 1e9, True, 1.5, [value], {"v": value}, "$len(@x)", "@nope"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out += [-value, value * 1000, float("nan"), 10**12]
    if isinstance(value, list):
        out += [value * 2, value[:-1], list(reversed(value))]
    if isinstance(value, str):
        out += [value.upper(), value + "x", ""]
    return out


def mutate(doc, rng: random.Random):
    """One mutant of ``doc`` and a description: a value replaced (other type, range, nesting), a key or item
    deleted, or a list's items duplicated."""
    doc = copy.deepcopy(doc)
    paths = [p for p, _ in _paths(doc)]
    path = rng.choice(paths)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    value = parent[path[-1]] if path else doc
    action = rng.choice(["replace", "replace", "replace", "delete", "duplicate"])
    if not path:
        return rng.choice([[doc], None, "x", 0]), "root -> other type"
    if action == "delete":
        del parent[path[-1]]
        return doc, f"{'.'.join(map(str, path))} deleted"
    if action == "duplicate" and isinstance(value, list):
        parent[path[-1]] = value + value
        return doc, f"{'.'.join(map(str, path))} duplicated"
    new = rng.choice(_replacements(value))
    parent[path[-1]] = new
    return doc, f"{'.'.join(map(str, path))} = {new!r:.60}"


def _acceptable(exc: BaseException, names: tuple[str, ...]) -> bool:
    """The project's own error: ModelError or CaseError (each names the model's file or folder, or the case
    and the model's names it lacks), or a ValueError naming the file or the field."""
    if isinstance(exc, (ModelError, CaseError)):
        return True
    return isinstance(exc, ValueError) and any(n in str(exc) for n in names)


def _fuzz(original: dict, write, run, names, seed: int):
    rng = random.Random(seed)
    bugs = []
    for _ in range(N_MUTANTS):
        mutant, what = mutate(original, rng)
        write(mutant)
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - sorted into ours and bugs below
            if not _acceptable(exc, names):
                bugs.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not bugs, "\n".join(bugs)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    return nl.load_case(make_case_folder(tmp_path_factory.mktemp("fz") / "case_01", shape=SHAPE))


def _run(model_path, case):
    def run():
        model = nl.load_model(model_path)
        exp = nl.explain(model, case, target="groundtruth")
        assert np.isfinite(exp.relevance).all()
    return run


@pytest.mark.parametrize("name", ["plans.json", "dataset.json"])
def test_fuzzed_nnunet_files(tmp_path, small_case, name):
    folder = Path(shutil.copytree(sample_nnunet_path(), tmp_path / "nn"))
    original = json.loads((folder / name).read_text())
    _fuzz(original, lambda d: (folder / name).write_text(json.dumps(d)), _run(folder, small_case),
          (name,), seed=sum(map(ord, name)))


@pytest.mark.parametrize("name", ["inference.json", "metadata.json"])
def test_fuzzed_bundle_files(tmp_path, small_case, name):
    bundle = make_bundle(tmp_path, resample=False)
    path = bundle / "configs" / name
    original = json.loads(path.read_text())
    _fuzz(original, lambda d: path.write_text(json.dumps(d)), _run(bundle, small_case), (name,),
          seed=sum(map(ord, name)))


def test_fuzzed_card(tmp_path, small_case):
    folder = Path(shutil.copytree(sample_model_path().parent, tmp_path / "m"))
    path = folder / "card.json"
    original = json.loads(path.read_text())
    _fuzz(original, lambda d: path.write_text(json.dumps(d)), _run(folder, small_case), ("card.json",), seed=7)


def test_fuzzed_settings(tmp_path, small_case):
    model = nl.load_model(sample_model_path())
    exp = nl.explain(model, small_case, target="groundtruth", filters={"encoders.1": nl.filters.Clamp(0, 0.2)},
                     rules={"decoders.0.*": nl.lrp.Epsilon(0.1)})
    path = tmp_path / "settings.json"
    original = json.loads(json.dumps(exp.settings()))

    def run():
        e = nl.explain(model, small_case, settings=path)
        assert np.isfinite(e.relevance).all()

    _fuzz(original, lambda d: path.write_text(json.dumps(d)), run, ("settings", "filter", "rule", "target", "preset",
                                                                    "method", "sampling", "tiling", "window"), seed=11)
