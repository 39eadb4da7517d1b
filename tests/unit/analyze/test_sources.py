"""Expanding PATH arguments: folders, globs, manifests, and the files that must be skipped or refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analyze.sources import SourceError, expand_sources


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_searched_recursively_for_audio_extensions_in_any_case(tmp_path):
    a = touch(tmp_path / "site1" / "20240517_053000.WAV")
    b = touch(tmp_path / "site1" / "deep" / "b.flac")
    c = touch(tmp_path / "c.Mp3")
    d = touch(tmp_path / "d.opus")
    e = touch(tmp_path / "e.ogg")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "site1" / "CONFIG.TXT")
    assert expand_sources([tmp_path]) == sorted([a, b, c, d, e], key=lambda p: p.parts)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    keep = touch(tmp_path / "rec" / "a.wav")
    touch(tmp_path / "rec" / ".a.wav")  # macOS AppleDouble files look exactly like this
    touch(tmp_path / "rec" / ".Trash" / "b.wav")
    assert expand_sources([tmp_path / "rec"]) == [keep]
    assert expand_sources([str(tmp_path / "rec" / "**" / "*.wav")]) == [keep]


def test_glob_patterns_search_folders_and_keep_only_audio(tmp_path):
    a = touch(tmp_path / "siteA" / "x" / "1.wav")
    b = touch(tmp_path / "siteB" / "2.WAV")
    touch(tmp_path / "siteB" / "readme.md")
    touch(tmp_path / "other" / "3.wav")
    assert expand_sources([str(tmp_path / "site*")]) == [a, b]
    assert expand_sources([str(tmp_path / "**" / "*.wav")]) == [tmp_path / "other" / "3.wav", a]


def test_results_are_absolute_sorted_and_deduplicated(tmp_path, monkeypatch):
    a = touch(tmp_path / "d" / "a.wav")
    b = touch(tmp_path / "d" / "b.wav")
    monkeypatch.chdir(tmp_path)
    found = expand_sources(["d/b.wav", "d", "d/../d/a.wav", str(tmp_path / "d" / "*.wav")])
    assert found == [a, b]
    assert all(p.is_absolute() for p in found)


def test_sorting_is_by_path_components_not_by_string(tmp_path):
    # As strings "a b/..." < "a/..." (space sorts before slash); by folder, "a" comes first.
    first = touch(tmp_path / "a" / "z.wav")
    second = touch(tmp_path / "a b" / "a.wav")
    assert expand_sources([tmp_path]) == [first, second]


def test_a_file_named_directly_is_taken_whatever_its_extension(tmp_path):
    odd = touch(tmp_path / "recording.aiff")
    assert expand_sources([odd]) == [odd]


def test_symlinks_keep_their_own_name(tmp_path):
    target = touch(tmp_path / "store" / "blob.wav")
    link = tmp_path / "named" / "SM4_20240517_053000.wav"
    link.parent.mkdir()
    link.symlink_to(target)
    assert expand_sources([tmp_path / "named"]) == [link]


def test_symlinked_folders_are_followed_under_their_link_name_and_a_link_loop_ends(tmp_path):
    card = touch(tmp_path / "card" / "20240517_053000.WAV").parent
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "site1").symlink_to(card)
    (tmp_path / "card" / "loop").symlink_to(tmp_path / "card")
    assert expand_sources([tmp_path / "project"]) == [tmp_path / "project" / "site1" / "20240517_053000.WAV"]


def test_a_folder_that_cannot_be_listed_stops_the_command_naming_it(tmp_path, monkeypatch):
    touch(tmp_path / "site1" / "a.wav")
    touch(tmp_path / "locked" / "b.wav")
    listing = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match=r"locked: the folder cannot be listed \(Permission denied\)"):
        expand_sources([tmp_path])


def test_a_fifo_named_directly_is_refused_as_not_a_file(tmp_path):
    os.mkfifo(tmp_path / "live.wav")
    with pytest.raises(SourceError, match=r"live\.wav: not a regular file or folder"):
        expand_sources([tmp_path / "live.wav"])


def test_a_missing_path_is_an_error_naming_it(tmp_path):
    touch(tmp_path / "a.wav")
    with pytest.raises(SourceError, match=r"nope\.wav: no such file or folder"):
        expand_sources([tmp_path / "a.wav", tmp_path / "nope.wav"])


def test_a_glob_matching_nothing_is_an_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match=r"\*\.flac: the pattern matches no file"):
        expand_sources([str(tmp_path / "*.flac")])


def test_no_audio_at_all_is_an_error(tmp_path):
    touch(tmp_path / "notes.txt")
    with pytest.raises(SourceError, match=r"no audio files \(\.aif .* \.wav, in any case\) found in"):
        expand_sources([tmp_path])


def test_a_folder_or_pattern_without_audio_among_others_is_named_not_dropped(tmp_path):
    touch(tmp_path / "moth1" / "20240517_053000.WAV")
    touch(tmp_path / "moth2" / "CONFIG.TXT")  # the wrong card, or a typo in the folder
    with pytest.raises(SourceError, match=r"found in: .*moth2$"):
        expand_sources([tmp_path / "moth1", tmp_path / "moth2"])
    with pytest.raises(SourceError, match=r"found in: .*moth2/\*\.TXT"):
        expand_sources([tmp_path / "moth1", str(tmp_path / "moth2" / "*.TXT")])


def test_names_with_spaces_unicode_and_tabs_are_kept_exactly(tmp_path):
    names = ["with space.wav", "Grünspecht ñ 鳥.flac", "tab\there.wav", "new\nline.mp3"]
    paths = [touch(tmp_path / n) for n in names]
    assert sorted(expand_sources([tmp_path]), key=lambda p: p.name) == sorted(paths, key=lambda p: p.name)


def test_a_file_name_that_is_not_utf8_is_found(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    with open(raw, "wb") as f:
        f.write(b"x")
    [found] = expand_sources([tmp_path])
    assert os.fsencode(found) == raw


class TestManifest:
    def test_relative_paths_are_relative_to_the_manifest_folder(self, tmp_path, monkeypatch):
        a = touch(tmp_path / "data" / "a.wav")
        b = touch(tmp_path / "elsewhere" / "b.bin")  # listed: taken as given, even without an audio extension
        manifest = tmp_path / "data" / "list.csv"
        manifest.write_text(f"site,path\nx,a.wav\ny,{b}\nz, a.wav \n")
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert expand_sources([manifest]) == [a, b]

    def test_a_byte_order_mark_and_header_case_are_tolerated(self, tmp_path):
        a = touch(tmp_path / "a b.wav")
        manifest = tmp_path / "m.CSV"
        manifest.write_text('\ufeffPath,comment\n"a b.wav","x, y"\n', encoding="utf-8")
        assert expand_sources([manifest]) == [a]

    def test_blank_rows_a_spreadsheet_leaves_are_skipped(self, tmp_path):
        a = touch(tmp_path / "a.wav")
        manifest = tmp_path / "m.csv"
        manifest.write_text("path,site\r\na.wav,x\r\n,\r\n , \r\n")
        assert expand_sources([manifest]) == [a]

    def test_a_manifest_that_is_not_utf8_is_an_error_naming_it(self, tmp_path):
        manifest = tmp_path / "m.csv"
        manifest.write_bytes("path,site\na.wav,Forêt\n".encode("cp1252"))
        with pytest.raises(SourceError, match=r"m.csv: not UTF-8 text; save the manifest as CSV UTF-8"):
            expand_sources([manifest])

    def test_a_missing_path_column_is_an_error_listing_the_columns(self, tmp_path):
        manifest = tmp_path / "m.csv"
        manifest.write_text("file,site\na.wav,x\n")
        with pytest.raises(SourceError, match=r"needs a 'path' column \(columns found: file, site\)"):
            expand_sources([manifest])

    def test_an_empty_manifest_is_an_error(self, tmp_path):
        manifest = tmp_path / "m.csv"
        manifest.write_text("")
        with pytest.raises(SourceError, match="columns found: none"):
            expand_sources([manifest])

    def test_a_missing_entry_is_an_error_naming_it_and_its_line(self, tmp_path):
        touch(tmp_path / "a.wav")
        manifest = tmp_path / "m.csv"
        manifest.write_text("path\na.wav\ngone.wav\n")
        with pytest.raises(SourceError, match=r"m.csv, line 3: no such file: gone.wav"):
            expand_sources([manifest])

    def test_a_folder_entry_or_empty_cell_is_an_error(self, tmp_path):
        (tmp_path / "sub").mkdir()
        manifest = tmp_path / "m.csv"
        manifest.write_text("path\nsub\n")
        with pytest.raises(SourceError, match="line 2: not a file: sub"):
            expand_sources([manifest])
        manifest.write_text("path,x\n,1\n")
        with pytest.raises(SourceError, match="line 2: empty 'path'"):
            expand_sources([manifest])


def test_a_folder_named_twice_through_a_link_is_analyzed_once(tmp_path):
    a = touch(tmp_path / "in" / "moth1" / "a.wav")
    (tmp_path / "alias").symlink_to(tmp_path / "in" / "moth1")
    assert expand_sources([tmp_path / "in" / "moth1", tmp_path / "alias"]) == [tmp_path / "alias" / "a.wav"]
    assert expand_sources([a, tmp_path / "in"]) == [a]
    # Links with names of their own are recordings of their own names (clock times): kept.
    (tmp_path / "in" / "20240501_053000.wav").symlink_to(a)
    os.link(a, tmp_path / "in" / "moth1" / "20240501_060000.wav")
    assert len(expand_sources([tmp_path / "in"])) == 3
