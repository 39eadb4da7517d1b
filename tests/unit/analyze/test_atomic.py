"""Atomic writes: a failure mid-write leaves the previous file whole and no stray temporary file."""

from __future__ import annotations

import os
import stat

import pytest

from analyze.atomic import TMP_SUFFIX, atomic_path, atomic_text, remove_leftovers, write_text


def test_write_text_creates_folders_and_replaces_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "table.txt"
    write_text(target, "one\n")
    write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.txt"]


def test_a_crash_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.txt"
    write_text(target, "complete\n")
    with pytest.raises(RuntimeError), atomic_text(target) as f:
        f.write("half a ta")
        raise RuntimeError("killed")
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.txt"]


def test_the_temporary_is_hidden_and_next_to_the_target(tmp_path):
    target = tmp_path / "out.parquet"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(TMP_SUFFIX) and len(tmp.name) < 40
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"


def test_leftovers_of_a_kill_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "raven").mkdir()
    leftover = tmp_path / "raven" / f".a.wav.selections.txt.k3j2{TMP_SUFFIX}"
    leftover.write_text("half")
    kept = [tmp_path / ".notes.tmp", tmp_path / "raven" / "a.wav.selections.txt"]
    for path in kept:
        path.write_text("x")
    remove_leftovers(tmp_path)
    assert not leftover.exists() and all(p.exists() for p in kept)


def test_files_get_the_permissions_the_umask_gives_new_files(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "shared.txt", "x\n")
        with atomic_path(tmp_path / "t.parquet") as tmp:
            tmp.write_bytes(b"x")
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_a_target_whose_name_fills_the_file_systems_limit_is_written(tmp_path):
    """The temporary must not repeat the name: 255 bytes of it and more would not fit."""
    target = tmp_path / ("x" * 251 + ".txt")
    write_text(target, "table")
    assert target.read_text() == "table"


def test_leftovers_in_another_runs_folder_are_that_runs(tmp_path):
    """A run into results/ must not delete what a run into results/site1 is writing right now."""
    (tmp_path / "site1" / ".journal").mkdir(parents=True)
    theirs = tmp_path / "site1" / f".0a1b{TMP_SUFFIX}"
    ours = tmp_path / f".0a1b{TMP_SUFFIX}"
    theirs.write_text("half")
    ours.write_text("half")
    remove_leftovers(tmp_path, fenced=".journal")
    assert theirs.exists() and not ours.exists()
