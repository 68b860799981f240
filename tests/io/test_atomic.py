"""Atomic files and result folders (io/atomic.py): a failed write leaves the old version complete."""

import os

import pytest

from napari_lrp.io.atomic import replacing, replacing_folder, write_text


def _listing(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


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


def test_replacing_folder_swaps_the_whole_folder(tmp_path):
    target = tmp_path / "results"
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("1")
        (tmp / "y.txt").write_text("1")
    assert _listing(target) == {"x.txt": b"1", "y.txt": b"1"}
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("2")
    # the new x replaces the old; y, not written this time, is carried over; nothing else is left beside it
    assert _listing(target) == {"x.txt": b"2", "y.txt": b"1"}
    assert sorted(os.listdir(tmp_path)) == ["results"]


def test_replacing_folder_failure_leaves_the_old_folder_untouched(tmp_path):
    target = tmp_path / "results"
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("1")
        (tmp / "notes").mkdir()
        (tmp / "notes" / "n.md").write_text("mine")
    before = _listing(target)
    with pytest.raises(OSError, match="No space"), replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("2")
        raise OSError(28, "No space left on device")
    assert _listing(target) == before
    assert sorted(os.listdir(tmp_path)) == ["results"]
    # carried-over folders are copies (or hard links): the new folder does not share the old one's tree
    with replacing_folder(target) as tmp:
        (tmp / "x.txt").write_text("3")
    assert _listing(target) == {"x.txt": b"3", "notes/n.md": b"mine"}


def test_replacing_folder_refuses_a_file(tmp_path):
    f = tmp_path / "results"
    f.write_text("a file")
    with pytest.raises(NotADirectoryError, match="is a file"), replacing_folder(f):
        pass
