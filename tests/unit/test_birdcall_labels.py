"""Multi-label manifests, events and how labels reach windows; the non-bird sound generators."""

from __future__ import annotations

import numpy as np
import pytest

from features import WindowSpan
from training.background_synth import BACKGROUNDS
from training.birdcall_data import (
    DataError,
    Item,
    check_trainable,
    events_path,
    parse_labels,
    read_manifest,
    species_of,
    window_targets,
)
from training.birdcall_synth import (
    CallEvent,
    SceneSpec,
    _active_segments,
    bird_track,
    call_levels,
    mel_power,
    synthesize_scene,
)


def test_labels_split_on_semicolons_and_background_means_none():
    assert parse_labels("b;a") == ("a", "b")
    assert parse_labels(" a ; a ;") == ("a",)
    assert parse_labels("background") == ()
    assert parse_labels("") == ()
    assert parse_labels("hooting  owl;hooting owl") == ("hooting owl",)  # a double space is no second species


def test_a_species_no_test_recording_has_is_said_to_go_unmeasured(tmp_path, capsys):
    csv_path = _manifest(tmp_path, "path,label,split\nx.wav,owl;lark,train\ny.wav,owl,val\nz.wav,owl,test\n")
    check_trainable(csv_path, read_manifest(csv_path))
    assert "['lark'] have no recording in the test split" in capsys.readouterr().err


def test_manifest_reads_several_labels_background_rows_and_events(tmp_path):
    csv_path = _manifest(
        tmp_path,
        "path,label,split\nx.wav,owl;wren,train\ny.wav,background,val\nz.wav,,test\nw.wav,owl,train\n",
        "path,label,start,end\nx.wav,owl,0.5,1.0\nx.wav,wren,2.0,2.4\n",
    )
    items = {i.path.name: i for i in read_manifest(csv_path)}
    assert items["x.wav"].labels == ("owl", "wren")
    assert items["x.wav"].events == (CallEvent("owl", 0.5, 1.0), CallEvent("wren", 2.0, 2.4))
    # With an events file, background rows are known to be empty; rows without events fall back to weak labels.
    assert items["y.wav"].labels == () and items["y.wav"].events == ()
    assert items["z.wav"].labels == ()
    assert items["w.wav"].events is None
    assert species_of(list(items.values())) == ["owl", "wren"]


def test_events_must_match_the_labels_and_the_recordings(tmp_path):
    csv_path = _manifest(tmp_path, "path,label\nx.wav,owl\n", "path,label,start,end\nx.wav,wren,0.5,1.0\n")
    with pytest.raises(ValueError, match="does not"):
        read_manifest(csv_path)
    events_path(csv_path).write_text("path,label,start,end\nq.wav,owl,0.5,1.0\n")
    with pytest.raises(ValueError, match="does not list"):
        read_manifest(csv_path)
    events_path(csv_path).write_text("path,label,start,end\nx.wav,owl,1.0,0.5\n")
    with pytest.raises(ValueError, match=r"start 1\.0 and end 0\.5"):
        read_manifest(csv_path)


def test_window_targets_follow_the_calls():
    spans = [WindowSpan(0.0, 5.0), WindowSpan(2.5, 7.5), WindowSpan(5.0, 10.0), WindowSpan(7.5, 10.0)]
    index = {"owl": 0, "wren": 1, "crow": 2}
    item = Item(
        path=None,  # type: ignore[arg-type]
        labels=("owl", "wren"),
        split="train",
        events=(
            CallEvent("owl", 1.0, 2.0),  # only in window 0
            CallEvent("wren", 4.9, 5.6, snr_db=3.0),  # 0.1 s in window 0 (cut: neither), 0.6 s in windows 1 and 2
            CallEvent("wren", 9.0, 9.05, snr_db=12.0),  # a short whole call in windows 2 and 3
        ),
    )
    targets, known, snr = window_targets(item, spans, index)
    np.testing.assert_array_equal(targets[:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(targets[:, 1], [0, 1, 1, 1])
    np.testing.assert_array_equal(known[:, 1], [False, True, True, True])
    assert known[:, 0].all() and known[:, 2].all() and not targets[:, 2].any()
    # The level of the loudest call of the species in a window where it is present.
    np.testing.assert_array_equal(snr[:, 1], [np.nan, 3.0, 12.0, 12.0])
    assert np.isnan(snr[:, 0]).all()
    # Without events, the recording's labels hold for every window.
    weak, weak_known, _ = window_targets(Item(None, ("crow",), "train"), spans, index)  # type: ignore[arg-type]
    assert weak[:, 2].all() and not weak[:, :2].any() and weak_known.all()


def test_calls_under_the_noise_make_no_window_present():
    spans = [WindowSpan(0.0, 5.0), WindowSpan(2.5, 7.5), WindowSpan(5.0, 10.0)]
    item = Item(
        path=None,  # type: ignore[arg-type]
        labels=("owl",),
        split="train",
        events=(
            CallEvent("owl", 1.0, 2.0, snr_db=-3.0),  # under the noise: window 0 holds nothing heard
            CallEvent("owl", 6.0, 6.5, snr_db=-1.0),  # under the noise too ...
            CallEvent("owl", 6.5, 7.0, snr_db=4.0),  # ... beside a heard one: windows 1 and 2 hold it
        ),
    )
    targets, known, level = window_targets(item, spans, {"owl": 0})
    np.testing.assert_array_equal(targets[:, 0], [0, 1, 1])
    np.testing.assert_array_equal(known[:, 0], [False, True, True])  # a call, but none the audio shows: left out
    np.testing.assert_array_equal(level[:, 0], [np.nan, 4.0, 4.0])  # the heard call's level, not the louder-looking sum


def test_call_levels_measure_the_call_over_the_rest_in_the_model_cells():
    rate = 16_000
    t = np.arange(2 * rate) / rate
    tone = np.sin(2 * np.pi * 3000 * t) * (t >= 0.5) * (t < 1.5)
    noise = np.random.default_rng(0).standard_normal(len(t))
    event = [CallEvent("x", 0.5, 1.5)]
    call, masker = mel_power(tone, rate), mel_power(noise, rate)
    loud = call_levels(call, masker, event)[0]
    # 12 dB quieter call, 12 dB lower level; the same call under 10x the noise, 10 dB lower.
    assert call_levels(mel_power(tone / 4, rate), masker, event)[0] == pytest.approx(loud - 12.04, abs=0.2)
    assert call_levels(call, mel_power(noise * np.sqrt(10), rate), event)[0] == pytest.approx(loud - 10, abs=0.2)
    assert loud > 10  # a pure tone stands far out of white noise in its own band


def test_scene_events_carry_their_level_over_sound_silence_and_a_narrow_band():
    rate = 16_000
    scene = SceneSpec(("hooting_owl", "fast_trill_wren"), ("rain",), 8.0)
    rec = synthesize_scene(scene, rate, np.random.default_rng(3), lowpass_probability=0.0)
    assert rec.events and all(e.snr_db is not None and np.isfinite(e.snr_db) for e in rec.events)
    # Over silence the calls stand far out of the self-noise and the front end's floor ...
    scene = SceneSpec(("hooting_owl", "pulsing_nightjar"), ("silence",), 6.0)
    quiet = synthesize_scene(scene, rate, np.random.default_rng(3))
    assert quiet.events and all(e.snr_db is not None and e.snr_db > 20 for e in quiet.events)
    # ... unless written at 8 kHz: the pulses at 6.5 kHz are gone, the owl's hoots at 450 Hz are not.
    narrow = synthesize_scene(scene, rate, np.random.default_rng(3), file_rate=8_000)
    assert narrow.sample_rate == 8_000 and len(narrow.audio) == 6 * 8_000 and narrow.lowpassed_hz == 4_000
    levels = {e.label: e.snr_db for e in narrow.events}
    assert levels["hooting_owl"] > 20 and levels["pulsing_nightjar"] < 0


@pytest.mark.parametrize("kind", list(BACKGROUNDS))
def test_every_background_kind_is_finite_deterministic_and_birdless(kind):
    rate = 22_050
    a = synthesize_scene(SceneSpec((), (kind,), 3.0), rate, np.random.default_rng(5))
    b = synthesize_scene(SceneSpec((), (kind,), 3.0), rate, np.random.default_rng(5))
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.events == () and len(a.audio) == 3 * rate
    assert np.isfinite(a.audio).all() and np.abs(a.audio).max() <= 1.0
    if kind != "silence":
        assert np.sqrt(np.mean(a.audio**2)) > 1e-3


def test_scenes_record_every_call_and_clip_when_asked():
    rate = 16_000
    scene = SceneSpec(("hooting_owl", "fast_trill_wren"), ("rain",), 6.0, clipped=True)
    rec = synthesize_scene(scene, rate, np.random.default_rng(2), lowpass_probability=0.0)
    assert {e.label for e in rec.events} == {"hooting_owl", "fast_trill_wren"}
    assert rec.clipped and np.mean(np.abs(rec.audio) >= 0.999 * np.abs(rec.audio).max()) > 0.001
    # The owl's events are where its energy is: 400-1000 Hz power is higher inside them than outside.
    spectrum_hz = np.fft.rfftfreq(400, 1 / rate)
    band = (spectrum_hz > 380) & (spectrum_hz < 1000)
    frames = rec.audio[: len(rec.audio) // 400 * 400].reshape(-1, 400)
    power = (np.abs(np.fft.rfft(frames, axis=1))[:, band] ** 2).sum(axis=1)
    inside = np.zeros(len(frames), bool)
    for e in rec.events:
        if e.label == "hooting_owl":
            inside[int(e.start * rate) // 400 : int(e.end * rate) // 400] = True
    assert power[inside].mean() > 3 * power[~inside].mean()


def test_a_bout_cut_to_a_few_samples_by_the_recording_end_is_no_event():
    rate = 16_000
    assert _active_segments(np.ones(10), rate) == []
    # Every event a track reports has a length the events file can hold (ms resolution).
    for seed in range(40):
        n = int(np.random.default_rng(seed).uniform(3, 8) * rate)
        _, events = bird_track("pulsing_nightjar", n, rate, np.random.default_rng(seed))
        assert all(round(e.end, 3) > round(e.start, 3) for e in events)


def _manifest(tmp_path, text: str, events: str | None = None, encoding: str = "utf-8"):
    """labels.csv (and its events) in tmp_path, with an empty file for each plain path it lists."""
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(text.encode(encoding))
    if events is not None:
        events_path(csv_path).write_text(events)
    for line in text.splitlines()[1:]:
        name = line.split(",")[0].strip()
        if name.endswith(".wav") and '"' not in name:
            (tmp_path / name).touch()
    return csv_path


def test_a_spreadsheets_csv_reads_bom_padded_header_crlf_and_blank_rows(tmp_path):
    csv_path = _manifest(tmp_path, "\ufeffPath, Label ,SPLIT\r\nx.wav,Background,train\r\ny.wav,owl,val\r\n,,\r\n", encoding="utf-8")
    items = read_manifest(csv_path)
    assert [(i.path.name, i.labels, i.split) for i in items] == [("x.wav", (), "train"), ("y.wav", ("owl",), "val")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,label\nx.wav,owl,wren\n", r"line 2: 3 fields where the header has 2 .*separate several species with ';'"),
        ("path,label,split\nx.wav,owl,train\ny.wav\n", r"line 3: 1 fields where the header has 3"),
        ("path,label\nx.wav,owl\ny.wav,wren\nx.wav,wren\n", r"line 4: x.wav is listed already on line 2"),
        ("path,label\nx.wav,Owl\ny.wav,owl\n", r"differ only in case .*\['Owl', 'owl'\]"),
        ("", r"lacks column\(s\) \['label', 'path'\]: its header has nothing \(the file is empty\)"),
        ("file,species\nx.wav,owl\n", r"its header has file,species; expected path,label\[,split\]"),
        ("path,label,split\nx.wav,owl,validation\n", r"line 2: split 'validation' for x.wav"),
        ('path,label\nx.wav,"owl\ny.wav,wren\n', r"line 3: not CSV as path,label\[,split\] \(unexpected end of data\); check its quotes"),
        ('path,label\nx.wav,"owl"wren\n', r"line 2: not CSV .*check its quotes"),
        ("path,label\nx.wav," + "o" * 200_000 + "\n", r"line 2: not CSV .*field larger than field limit"),
        ("path,label\nx.wav,owl\x00\n", r"line 2: a field holds a control character"),
        # Found by a review (2026-11-30):
        ("path,label\nx.wav,owl\nmissing.flac,owl\n", r"line 3: 'missing.flac' is not a file under .* relative to the CSV's folder"),
        ("path,label\nx.wav,owl\n./x.wav,owl\n", r"line 3: ./x.wav is listed already on line 2"),
        ("path,label\nx.wav,background;owl\n", r"line 2: label 'background;owl' names 'background' beside species"),
        ('path,label\nx.wav,"owl,wren"\n', r"line 2: label .* has a comma in a species name; separate species with ';'"),
        ("path,label,start,end\nx.wav,owl,1,2\n", r"column\(s\) \['end', 'start'\]: where calls sit goes in labels.events.csv"),
        ("path,label\naudio\\x.wav,owl\n", r"line 2: audio\\x.wav has a backslash; write paths with '/'"),
    ],
)
def test_manifest_problems_name_the_file_line_and_what_is_accepted(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_manifest(_manifest(tmp_path, text))


def test_a_manifest_that_is_not_utf8_or_not_there_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not UTF-8 text; save it as CSV UTF-8"):
        read_manifest(_manifest(tmp_path, "path,label\nx.wav,mésange\n", encoding="latin-1"))
    with pytest.raises(DataError, match="cannot read"):
        read_manifest(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ("path,label,start,end\nx.wav,owl,0:01.0,2\n", r"labels.events.csv line 2: start '0:01.0' is not a number of seconds"),
        ("path,label,start,end,snr_db\nx.wav,owl,1,2,loud\n", r"line 2: snr_db 'loud' is not a number of dB"),
        ("path,label,start,end,snr_db\nx.wav,owl,1,2,nan\n", r"line 2: snr_db 'nan' is not a number of dB"),
        ("path,label,start,end\nx.wav,wren,1,2\n", r"events of x.wav name \['wren'\], which its label 'owl' does not"),
    ],
)
def test_events_problems_name_the_line_and_the_species(tmp_path, events, match):
    with pytest.raises(DataError, match=match):
        read_manifest(_manifest(tmp_path, "path,label\nx.wav,owl\n", events))


def test_a_labelled_species_without_events_is_unknown_in_every_window_not_absent():
    spans = [WindowSpan(0.0, 5.0), WindowSpan(2.5, 7.5)]
    item = Item(None, ("owl", "wren"), "train", events=(CallEvent("owl", 1.0, 2.0),))  # type: ignore[arg-type]
    targets, known, _ = window_targets(item, spans, {"owl": 0, "wren": 1})
    np.testing.assert_array_equal(targets[:, 0], [1, 0])
    assert known[:, 0].all() and not known[:, 1].any()


def test_data_that_would_train_or_measure_nothing_is_refused_before_any_audio_is_read(tmp_path):
    only_background = _manifest(tmp_path, "path,label,split\nx.wav,background,train\ny.wav,,val\nz.wav,background,test\n")
    with pytest.raises(DataError, match="names no species"):
        check_trainable(only_background, read_manifest(only_background))
    no_val = _manifest(tmp_path, "path,label,split\nx.wav,owl,train\nz.wav,owl,test\n")
    with pytest.raises(DataError, match=r"no recordings in split\(s\) \['val'\].*split=val in a split column"):
        check_trainable(no_val, read_manifest(no_val))
    rare_in_test = _manifest(tmp_path, "path,label,split\nx.wav,owl,train\ny.wav,owl,val\nz.wav,owl;bittern,test\n")
    with pytest.raises(DataError, match=r"\['bittern'\] never sing in the train split"):
        check_trainable(rare_in_test, read_manifest(rare_in_test))
