"""What the decoders print: captured per file in a worker, kept with the file's path in the run's log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from analyze.chatter import MAX_BYTES_PER_FILE, DecoderLog, StderrCapture


def test_a_capture_takes_what_c_code_and_python_wrote_to_stderr_and_empties_it(capfd):
    with StderrCapture() as capture:
        os.write(2, b"Note: Trying to resync...\n")  # as a C library writes it: to fd 2, unbuffered
        print("a Python warning", file=sys.__stderr__)  # a worker's sys.stderr
        assert capture.take() == "Note: Trying to resync...\na Python warning\n"
        assert capture.take() == ""
        os.write(2, b"next file\n")
        assert capture.take() == "next file\n"  # after emptying, writes land at the start again
    assert capfd.readouterr().err == ""


def test_a_capture_keeps_the_first_bytes_of_a_flood_and_says_how_much_more():
    with StderrCapture() as capture:
        os.write(2, b"x" * (MAX_BYTES_PER_FILE + 500))
        said = capture.take()
    assert said == "x" * MAX_BYTES_PER_FILE + "\n[500 more bytes not kept]"


def test_leaving_a_capture_restores_stderr_and_gives_it_what_was_not_taken(capfd):
    with StderrCapture():
        os.write(2, b"a traceback on the way out\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "a traceback on the way out\nafter\n"


def test_the_log_keeps_each_line_after_its_files_path_under_a_line_per_run(tmp_path):
    for _ in range(2):  # two runs
        log = DecoderLog(tmp_path)
        log(Path("/field/a.mp3"), "   Note: Illegal Audio-MPEG-Header 0x770915b5 at offset 20124.\nNote: Trying to resync...\n\n")
        log(Path("/field/b.mp3"), "Warning: Xing stream size off by more than 1%\n")
        log.close()
        assert log.files == 2
    lines = (tmp_path / "decoders.log").read_text().splitlines()
    assert [line.startswith("# chorus analyze, ") for line in lines] == [True, False, False, False] * 2
    assert lines[1:4] == [
        "/field/a.mp3: Note: Illegal Audio-MPEG-Header 0x770915b5 at offset 20124.",
        "/field/a.mp3: Note: Trying to resync...",
        "/field/b.mp3: Warning: Xing stream size off by more than 1%",
    ]


def test_a_log_nothing_was_said_to_writes_no_file(tmp_path):
    log = DecoderLog(tmp_path)
    log.close()
    assert log.files == 0 and not (tmp_path / "decoders.log").exists()


def test_a_recording_named_in_another_encoding_than_utf8_is_logged_not_fatal(tmp_path):
    """A Latin-1 name from an old recorder ("café.mp3" as bytes) is a str with a lone surrogate."""
    recording = Path(os.fsdecode(b"/data/caf\xe9.mp3"))
    log = DecoderLog(tmp_path)
    log(recording, "[mp3float @ 0x1] Header missing\n")
    log.close()
    [line] = (tmp_path / DecoderLog.NAME).read_text(encoding="utf-8").splitlines()[1:]
    assert line.startswith("/data/caf") and line.endswith(".mp3: [mp3float @ 0x1] Header missing")
