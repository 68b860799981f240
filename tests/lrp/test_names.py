"""Name matching (lrp/names.py): one rule for rules, filters and kept layers."""

from napari_lrp.lrp.names import expand, is_glob, matches


def test_matches_exact_or_glob_case_sensitively():
    assert matches("encoders.1.0", "encoders.1.0") and matches("encoders.1.0", "encoders.*")
    assert matches("dec2", "dec?") and matches("up1", "up[0-9]")
    assert not matches("Encoders.1", "encoders.*") and not matches("encoders.10", "encoders.1")
    assert is_glob("*block*") and not is_glob("head")


def test_expand_keeps_plain_names_and_expands_globs():
    names = ["enc.0", "enc.1", "dec.0", "head"]
    assert expand(["enc.*", "head"], names) == {"enc.0", "enc.1", "head"}
    assert expand(["missing"], names) == {"missing"}
    assert expand(["zz*"], names) == set()
