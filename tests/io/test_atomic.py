"""Atomic files and result folders (io/atomic.py): a failed write leaves the old version complete."""

import os

import pytest

from napari_lrp.io.atomic import MANIFEST, replacing, replacing_folder, write_text


def _listing(folder):
    """Every file under ``folder`` except the hidden manifest of what the last save wrote."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.name != MANIFEST}


def test_replacing_renames_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a.csv"
    write_text(target, "old")
    with pytest.raises(OSError), replacing(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.csv"]
    with replacing(target) as tmp:
        assert tmp.name.endswith(".csv") and tmp.parent == tmp_path
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["a.csv"]


def test_replacing_folder_replaces_the_last_saves_outputs_and_nothing_else(tmp_path):
    target = tmp_path / "results"
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("1")
        (tmp / "y.txt").write_text("1")
    assert _listing(target) == {"x.txt": b"1", "y.txt": b"1"}
    (target / "mine.md").write_text("a user's file")
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("2")
    # what this save wrote replaces what the last one wrote entirely (y, of the last run, does not stay
    # beside it); the user's own file is neither moved nor deleted; nothing is left beside the folder
    assert _listing(target) == {"x.txt": b"2", "mine.md": b"a user's file"}
    assert sorted(os.listdir(tmp_path)) == ["results"]
    assert sorted(os.listdir(target)) == sorted([MANIFEST, "x.txt", "mine.md"])


def test_replacing_folder_failure_leaves_the_old_folder_untouched(tmp_path):
    target = tmp_path / "results"
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("1")
    (target / "notes").mkdir()  # a folder of the user's, beside the results
    (target / "notes" / "n.md").write_text("mine")
    before = _listing(target)
    with pytest.raises(OSError, match="No space"), replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("2")
        raise OSError(28, "No space left on device")
    assert _listing(target) == before
    assert sorted(os.listdir(tmp_path)) == ["results"]
    # the user's folder stays where it is, untouched
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("3")
    assert _listing(target) == {"x.txt": b"3", "notes/n.md": b"mine"}


def test_replacing_folder_refuses_a_file(tmp_path):
    f = tmp_path / "results"
    f.write_text("a file")
    with pytest.raises(NotADirectoryError, match="is a file"), replacing_folder(f):
        pass
