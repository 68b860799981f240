"""Reference cases of a layer's channels across the sample cohort (batch/references.py) on a LocalCluster: the
per-case relevance equals the API's, the ranking is by it, the crops sit where the channel's relevance peaks,
and a rerun reuses every case unless the layer changes."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

import napari_lrp as nl
from napari_lrp.batch import concept_references
from napari_lrp.cli import main
from napari_lrp.samples import sample_case_paths, sample_model_path, sample_root

LAYER = "decoders.2"


def test_reference_cases_on_the_sample_cohort(tmp_path):
    cohort = sample_root() / "cohort"
    out = tmp_path / "refs"
    # serial (workers=0) here; the CLI test below runs the same on a LocalCluster
    refs = concept_references(cohort, sample_model_path(), out, LAYER, top=2, workers=0, crop=8,
                              show_progress=False)
    n_cases = len(sample_case_paths())
    model = nl.load_model(sample_model_path())
    first = nl.load_case(sample_case_paths()[0])
    exp = nl.explain(model, first, keep=[LAYER])
    want = exp.concepts(LAYER)
    per_case = pd.read_csv(out / "cases" / f"{first.name}.csv")
    np.testing.assert_allclose(per_case.relevance, want.relevance, rtol=1e-6)
    n_channels = len(want)
    assert len(refs) == n_channels * min(2, n_cases) and list(refs.columns)[:3] == ["channel", "rank", "case"]
    assert (refs.layer == LAYER).all()
    assert {Path(f).name for f in refs.case_folder} <= {p.name for p in cohort.iterdir()}
    for c, rows in refs.groupby("channel"):
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert rows.relevance.is_monotonic_decreasing
        everyone = [pd.read_csv(p).set_index("channel").loc[c, "relevance"] for p in (out / "cases").glob("*.csv")]
        assert rows.relevance.iloc[0] == max(everyone)
    # a crop holds the conditional map around the peak, on the file's grid (its affine shifted to the corner)
    r = refs[refs.case == first.name].iloc[0]
    img = nib.load(str(out / r.crop))
    assert img.shape == (8, 8, 8) or all(s <= 8 for s in img.shape)
    full = exp.conditional(LAYER, [int(r.channel)]).sum(axis=0)
    file_full = first.grid.from_napari(full)
    corner = np.round(np.linalg.solve(first.grid.affine, img.affine @ [0, 0, 0, 1])[:3]).astype(int)
    np.testing.assert_allclose(np.asarray(img.dataobj),
                               file_full[tuple(slice(a, a + s) for a, s in zip(corner, img.shape))], rtol=1e-5,
                               atol=1e-12)
    # a rerun reuses every case; another layer recomputes them
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*.csv")}
    concept_references(cohort, sample_model_path(), out, LAYER, top=2, workers=0, crop=8, show_progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*.csv")} == stamps
    concept_references(cohort, sample_model_path(), out, "decoders.1", top=1, workers=0, crop=8,
                       show_progress=False)
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in (out / "cases").glob("*.csv"))


def test_cli_concepts(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    import shutil

    for p in sample_case_paths()[:2]:
        shutil.copytree(p, cohort / p.name)
    # on a LocalCluster of one worker process (the cohort's dask path), as a researcher runs it
    rc = main(["concepts", str(cohort), "--model", str(sample_model_path()), "--layer", LAYER, "--top", "1",
               "--workers", "1", "--crop", "4", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "references.csv").is_file() and any((tmp_path / "o" / "crops").iterdir())
    assert sorted(p.name for p in (tmp_path / "o" / "cases").glob("*.csv")) == sorted(
        f"{p.name}.csv" for p in cohort.iterdir())
    rc = main(["concepts", str(cohort), "--model", str(sample_model_path()), "--layer", "decoder.9",
               "--workers", "0", "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and "'decoder.9' matches no module" in err and "decoders.1" in err
    assert not (tmp_path / "o2" / "cases").exists()  # refused before any case ran
