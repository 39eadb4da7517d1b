"""Data generators, loaders and the two training loops on tiny profiles."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import training.train_birdcall
from chorus.cli import main
from features import FrontEnd, FrontEndConfig
from features.norm import NormStats
from layout.workspace import Workspace
from training.birdcall_data import DataError, Item, featurize, read_manifest, species_of
from training.birdcall_generate import BACKGROUND_GROUPS, GenerateSpec, generate_dataset
from training.birdcall_model import BirdCallArch, BirdCallNet, ClassAttention, first_time_pool_for
from training.birdcall_synth import SPECIES, CallEvent, bird_track, synthesize_recording
from training.checkpoint import load_checkpoint, load_weights
from training.frames_data import load_frames
from training.frames_synth import render_frames
from training.train_birdcall import PROFILES, epoch_loop_seconds, train_birdcall, with_epochs


def test_at_least_twelve_species_with_distinct_spectra():
    assert len(SPECIES) >= 12
    # Distinct call structures: the average spectra of any two species must differ clearly.
    rate = 16_000
    spectra = {}
    for name in SPECIES:
        track, _ = bird_track(name, 6 * rate, rate, np.random.default_rng(1))
        power = np.abs(np.fft.rfft(track)) ** 2
        bands = np.add.reduceat(power, np.linspace(0, len(power) - 1, 65).astype(int)[:-1])
        spectra[name] = bands / bands.sum()
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(spectra[a] - spectra[b]).sum() > 0.05 or a == b, (a, b)


def test_generation_is_deterministic_and_varied():
    a = synthesize_recording("upsweep_finch", 4.0, 22_050, np.random.default_rng(7))
    b = synthesize_recording("upsweep_finch", 4.0, 22_050, np.random.default_rng(7))
    c = synthesize_recording("upsweep_finch", 4.0, 22_050, np.random.default_rng(8))
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.allclose(a.audio, c.audio)
    assert a.audio.dtype == np.float32 and np.abs(a.audio).max() <= 1.0


def test_generated_dataset_round_trips_through_the_real_loader(tmp_path):
    groups = len(BACKGROUND_GROUPS)
    spec = GenerateSpec(
        recordings_per_species=4, mixed_recordings=3, background_recordings=groups, min_seconds=3, max_seconds=4, n_species=12, seed=3
    )
    csv_path = generate_dataset(tmp_path, spec, workers=1)
    items = read_manifest(csv_path)
    assert len(items) == 48 + 3 + groups
    assert species_of(items) == sorted(list(SPECIES)[:12])
    assert sum(not i.labels for i in items) == groups
    assert sum(len(i.labels) >= 2 for i in items) >= 3
    # Split by recording: every recording sits in exactly one split, and every split gets some.
    assert {i.split for i in items} == {"train", "val", "test"}
    assert len({i.path for i in items}) == len(items)
    # Every call is an event of a species the recording's label names, inside the recording.
    for item in items:
        assert item.events is not None
        assert {e.label for e in item.events} == set(item.labels)
        duration = FrontEnd().analyze(item.path).audio.duration_seconds
        assert 3.0 <= duration <= 4.2
        assert all(0 <= e.start < e.end <= duration + 1e-3 for e in item.events)


def test_manifest_without_split_column_splits_by_hash(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"r{i}.wav,x\n" for i in range(200)))
    for i in range(200):
        (tmp_path / f"r{i}.wav").touch()
    items = read_manifest(tmp_path / "labels.csv")
    splits = [i.split for i in items]
    assert 0.6 < splits.count("train") / 200 < 0.95
    assert items == read_manifest(tmp_path / "labels.csv")


def test_manifest_errors_are_clear(tmp_path):
    (tmp_path / "bad.csv").write_text("file,species\na.wav,x\n")
    with pytest.raises(ValueError, match="path,label"):
        read_manifest(tmp_path / "bad.csv")


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
@pytest.mark.parametrize("class_attention", [False, True])
@pytest.mark.parametrize("pool_first", [False, True])
def test_birdcall_net_shapes(pooling, class_attention, pool_first):
    config = FrontEndConfig()
    arch = BirdCallArch(
        n_classes=15,
        n_mels=config.n_mels,
        n_frames=config.n_frames,
        first_time_pool=first_time_pool_for(config.n_frames),
        frequency_pooling=pooling,
        class_attention=class_attention,
        pool_first=pool_first,
    )
    assert arch.seq_len == 40  # 321 frames -> 80 -> 40
    model = BirdCallNet(arch).eval()
    x = torch.randn(3, *config.feature_shape)
    assert model(x).shape == (3, 15)
    embedding = model.embed(x)
    assert embedding.shape == (3, arch.d_model)
    logits, same_embedding = model.logits_and_embedding(x)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(same_embedding, embedding)
    # The embedding is what the head reads; class attention adds a term of its own per species.
    extra = model.class_attention(model.encode(x)) if class_attention else 0.0
    torch.testing.assert_close(model.head(embedding) + extra, logits)


def test_class_attention_pools_each_species_over_its_own_time_steps():
    pool = ClassAttention(d_model=2, n_classes=2)
    with torch.no_grad():
        # Species 0 is heard where feature 0 is high, species 1 where feature 1 is; each attends there.
        pool.logit.weight.copy_(torch.tensor([[8.0, 0.0], [0.0, 8.0]]))
        pool.logit.bias.fill_(-4.0)
        pool.score.weight.copy_(torch.tensor([[20.0, 0.0], [0.0, 20.0]]))
        pool.score.bias.zero_()
    sequence = torch.zeros(1, 40, 2)
    sequence[0, 3, 0] = 1.0  # one step of species 0 ...
    sequence[0, 30:33, 1] = 1.0  # ... and three of species 1, elsewhere in the window
    logits = pool(sequence)[0]
    # Both come out near their per-step logit (+4), where a mean over time would give about -3.8.
    assert logits[0] > 3.5 and logits[1] > 3.5
    sequence[0, 3, 0] = 0.0
    assert pool(sequence)[0, 0] < -3.5  # and a species that is not there stays absent


def test_tiny_birdcall_training_writes_a_complete_checkpoint(tiny_birdcall, tiny_workspace):
    assert 0.0 <= tiny_birdcall["test"]["micro_f1"] <= 1.0
    assert tiny_birdcall["n_classes"] == 12
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("birdcall"))
    assert checkpoint.labels == sorted(checkpoint.labels) and len(checkpoint.labels) == 12
    assert len(checkpoint.norm_stats["mean"]) == 64
    assert checkpoint.config["frontend"] == FrontEndConfig().to_dict()
    model = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config["arch"])), checkpoint)
    assert model(torch.zeros(1, *FrontEndConfig().feature_shape)).shape == (1, 12)
    # Calibration: what the service reads for its default threshold.
    calibration = checkpoint.calibration
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    assert 0.0 < calibration["threshold"] < 1.0 and 0.0 <= calibration["ece"] <= 1.0
    # The detection mix the drift alert compares with: shares of validation windows.
    shares = checkpoint.metrics["validation_detection_share"]
    assert set(shares) == set(checkpoint.labels) and all(0.0 <= v <= 1.0 for v in shares.values())
    assert 0.0 <= checkpoint.metrics["validation_no_detection_share"] <= 1.0
    test = checkpoint.metrics["test"]
    for key in ("background_false_detection_rate", "two_species_both_found", "recording_accuracy", "ece", "micro_f1"):
        assert 0.0 <= test[key] <= 1.0, key
    assert test["background_windows"] > 0
    assert set(test["per_class"]) == set(checkpoint.labels)
    reports = tiny_workspace.reports_dir("birdcall")
    for image in ("training_curves.png", "reliability.png", "detection_matrix.png"):
        assert (reports / image).stat().st_size > 1000, image
    assert "| window micro-F1 |" in (reports / "training_report.md").read_text()
    # No pickles anywhere: weights are safetensors, the rest JSON.
    for path in checkpoint.directory.iterdir():
        assert path.suffix in {".safetensors", ".json"}, path
        if path.suffix == ".json":
            json.loads(path.read_text())


class _LoopReached(Exception):
    pass


def test_a_users_own_data_is_not_held_to_the_stand_in_datas_time_budget(tiny_birdcall, tmp_path, monkeypatch):
    """The 5-minute budget of the default profile cuts the epoch loop to what the generated data
    left; a user's recordings (--data) may take longer to read, and keep the loop's own cap."""
    budgets = []

    def loop_given(*args):  # _fit's last argument, the budget, is all this test needs: no epochs run
        budgets.append(args[-1])
        raise _LoopReached

    monkeypatch.setattr(training.train_birdcall, "_fit", loop_given)
    hurried = replace(PROFILES["tiny"], command_minutes=0.01)  # already spent before the loop
    with pytest.raises(_LoopReached):
        train_birdcall(hurried, Workspace(tmp_path), data_csv=Path(tiny_birdcall["data_csv"]))
    assert budgets == [hurried.max_minutes * 60]
    assert epoch_loop_seconds(hurried, 0.0) == 1.0  # what generated data would get, even read in no time


def test_a_users_own_data_gets_no_note_about_the_generated_datas_figures(tiny_birdcall, tmp_path):
    """The clock cuts this run short of `figures_epochs`, but those figures are the stand-in data's."""
    hurried = replace(PROFILES["tiny"], max_minutes=1e-6, max_epochs=50, patience=50, figures_epochs=50)
    result = train_birdcall(hurried, Workspace(tmp_path), data_csv=Path(tiny_birdcall["data_csv"]))
    assert result["stopped_by"] == "clock" and result["short_budget_note"] is None


def test_fixed_epochs_ignore_the_clock_and_repeat_bit_for_bit(tiny_birdcall, tmp_path):
    """`chorus train birdcall --epochs N`: N epochs however short the time budget, and the same
    weights from the same data and seed (the clock-driven default varies with the host's load)."""
    hurried = with_epochs(replace(PROFILES["tiny"], max_minutes=1e-6, patience=10), 3)
    data = Path(tiny_birdcall["data_csv"])
    runs = [train_birdcall(hurried, Workspace(tmp_path / name), data_csv=data) for name in ("a", "b")]
    assert [(run["epochs_run"], run["epochs_trained"]) for run in runs] == [(3, 3.0), (3, 3.0)]
    report = (tmp_path / "a" / "reports" / "birdcall" / "training_report.md").read_text()
    assert "3 epochs (3 passes over the training windows; best " in report
    assert runs[0]["epoch_loop_budget_seconds"] is None
    assert runs[0]["stopped_by"] == "epochs" and runs[0]["short_budget_note"] is None
    weights = [(tmp_path / name / "checkpoints" / "birdcall" / "model.safetensors").read_bytes() for name in ("a", "b")]
    assert weights[0] == weights[1]
    with pytest.raises(ValueError, match="at least 1"):
        with_epochs(PROFILES["tiny"], 0)


def test_chorus_train_says_when_the_clock_ended_training_short_of_the_figures_epochs(tmp_path, monkeypatch, capsys):
    """A slow host's 5-minute budget makes a weaker model: the user is told, with the command that trains it fully."""
    from training import train_birdcall as birdcall_training

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    note = "the 5-minute budget trained 8.0 epochs on this machine; ..."
    monkeypatch.setattr(birdcall_training, "train_birdcall", lambda profile, workspace, data_csv: {"short_budget_note": note})
    assert main(["train", "birdcall"]) == 0
    captured = capsys.readouterr()
    assert f"chorus train: note: {note}" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"short_budget_note": note}


def test_epochs_are_refused_for_frames_with_the_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    assert main(["train", "frames", "--profile", "tiny", "--epochs", "2"]) == 2
    assert "--epochs is for birdcall" in capsys.readouterr().err


def test_chorus_up_trains_what_is_missing_with_the_default_options(tmp_path, monkeypatch):
    """`chorus up` on an empty home trains both models as `chorus train MODEL` would (the default
    profile, the clock-bound loop), then exports and serves."""
    import chorus.cli as cli
    from training import train_birdcall as birdcall_training
    from training import train_frames as frames_training

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    trained, steps = {}, []
    monkeypatch.setattr(
        birdcall_training,
        "train_birdcall",
        lambda profile, workspace, data_csv: {"profile": trained.setdefault("birdcall", profile), "short_budget_note": None},
    )
    monkeypatch.setattr(frames_training, "train_frames", lambda profile, workspace, data_dir: trained.setdefault("frames", profile))
    monkeypatch.setattr(cli, "_print_result", lambda result: None)
    monkeypatch.setattr(cli, "_export_model", lambda model, variants: steps.append(("export", model, variants)) or {})
    monkeypatch.setattr(cli, "_serve", lambda args: steps.append(("serve", args.port)) or 0)
    assert main(["up"]) == 0
    assert trained["birdcall"] == PROFILES["default"] and trained["birdcall"].clock_budget
    assert trained["frames"].name == "default"
    assert steps == [("export", "birdcall", ("fp32", "int8", "fp16")), ("export", "frames", ("fp32", "fp16")), ("serve", 3000)]


def failing_gate(fails: set[str], calls: list):
    """An _export_model whose gate fails for the variants in `fails` (the first of them it exports)."""
    from export.parity import ParityError

    def export(model, variants):
        calls.append(variants)
        failing = [v for v in variants if v in fails]
        if failing:
            raise ParityError(failing[0], "embedding", "min cosine similarity", 0.96, 0.99, "below")
        return {"model": model}

    return export


def test_chorus_up_serves_without_a_variant_that_fails_its_gate_unless_it_is_the_one_served(tmp_path, monkeypatch, capsys):
    """A CPU's int8 arithmetic failed birdcall's gate once and kept `make up` from serving fp32."""
    import chorus.cli as cli

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    for model in ("birdcall", "frames"):
        (tmp_path / "home" / "checkpoints" / model).mkdir(parents=True)
        (tmp_path / "home" / "checkpoints" / model / "model.safetensors").write_bytes(b"")
    served = []
    monkeypatch.setattr(cli, "_serve", lambda args: served.append(args.port) or 0)
    calls: list = []
    monkeypatch.setattr(cli, "_export_model", failing_gate({"int8"}, calls))
    assert main(["up"]) == 0 and served == [3000]
    assert calls == [("fp32", "int8", "fp16"), ("fp32", "fp16"), ("fp32", "fp16")]
    assert "warning: parity gate failed for variant 'int8'" in capsys.readouterr().err

    monkeypatch.setenv("CHORUS_BIRDCALL_VARIANT", "int8")
    monkeypatch.setattr(cli, "_export_model", failing_gate({"int8"}, []))
    assert main(["up"]) == 1 and served == [3000]
    assert "birdcall int8 cannot be served" in capsys.readouterr().err


def test_chorus_export_says_which_gate_failed_and_how_to_register_the_rest(tmp_path, monkeypatch, capsys):
    import chorus.cli as cli

    monkeypatch.setattr(cli, "_export_model", failing_gate({"int8"}, []))
    assert main(["export", "birdcall"]) == 1
    err = capsys.readouterr().err
    assert "variant 'int8'" in err and "chorus export birdcall --variants fp32,fp16" in err
    assert main(["export", "birdcall", "--variants", "fp32,fp16"]) == 0
    for bad in ("fp16", "fp32,int4", "fp32,int8"):
        model = "frames" if bad == "fp32,int8" else "birdcall"
        assert main(["export", model, "--variants", bad]) == 2
        assert "fp32 among them" in capsys.readouterr().err


def test_the_command_lines_variants_are_the_exporters():
    import chorus.cli as cli
    from export import birdcall, frames

    assert cli.EXPORT_VARIANTS == {"birdcall": birdcall.VARIANTS, "frames": frames.VARIANTS}


def test_rendered_keyboards_look_like_keyboards():
    frames = render_frames(8, 32, seed=0)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, render_frames(8, 32, seed=0))
    # Keys: bright white keys, near-black black keys, and vertical stripes (edges across x
    # outweigh edges across y) in every frame.
    for frame in frames:
        gray = frame.mean(axis=2)
        assert (gray > 180).mean() > 0.08
        assert (gray < 60).mean() > 0.03
        assert np.abs(np.diff(gray, axis=1)).mean() > 1.5 * np.abs(np.diff(gray, axis=0)).mean()


def test_frames_loader_reads_any_image_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (20, 30), (0, 255, 0)).save(tmp_path / "sub" / "b.png")
    frames = load_frames(tmp_path, 16)
    assert frames.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="no images"):
        load_frames(tmp_path / "sub" / "missing", 16)


def test_tiny_frames_training_saves_weights_schedule_and_samples(tiny_frames, tiny_workspace):
    assert np.isfinite(tiny_frames["final_loss"])
    checkpoint = load_checkpoint(tiny_workspace.checkpoint_dir("frames"))
    assert checkpoint.config["arch"]["objective"] == "pred_v"
    assert checkpoint.config["arch"]["beta_schedule"] == "sigmoid"
    alphas = np.array(checkpoint.config["alphas_cumprod"])
    assert alphas.shape == (1000,) and np.all(np.diff(alphas) < 0)
    assert (tiny_workspace.reports_dir("frames") / "samples.png").stat().st_size > 100


def test_a_recording_that_cannot_be_read_or_an_event_past_its_end_is_a_data_error_naming_it(tmp_path):
    good = tmp_path / "owl.wav"
    sf.write(good, np.zeros(16_000 * 4, np.float32), 16_000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    config = FrontEndConfig()
    with pytest.raises(DataError, match=r"empty\.wav: .*empty"):
        featurize([Item(good, ("owl",), "train"), Item(empty, ("owl",), "train")], ["owl"], config, workers=1)
    late = Item(good, ("owl",), "train", events=(CallEvent("owl", 10.0, 12.0),))
    with pytest.raises(DataError, match=r"owl\.wav: the event of owl at 10.0-12.0 s starts after its end \(4.00 s\)"):
        featurize([late], ["owl"], config, workers=1)


def test_spilled_features_are_the_same_windows_memory_mapped_and_leave_no_file(tmp_path):
    """The train split goes to disk so that hours of audio need no RAM: nothing else may change."""
    paths = []
    for i, seconds in enumerate((3.0, 9.0, 12.5)):
        paths.append(tmp_path / f"r{i}.wav")
        sf.write(paths[-1], np.random.default_rng(i).standard_normal(int(16_000 * seconds)).astype(np.float32) * 0.1, 16_000)
    items = [Item(path, ("owl",), "train") for path in paths]
    in_memory = featurize(items, ["owl"], FrontEndConfig(), workers=1)
    spill = tmp_path / "spill"
    spill.mkdir()
    mapped = featurize(items, ["owl"], FrontEndConfig(), workers=1, spill_dir=spill)
    assert isinstance(mapped.log_mels, np.memmap) and list(spill.iterdir()) == []
    np.testing.assert_array_equal(mapped.log_mels, in_memory.log_mels)
    np.testing.assert_array_equal(mapped.recording, in_memory.recording)
    chunked, whole = NormStats.fit(mapped.log_mels, chunk=2), NormStats.fit(in_memory.log_mels)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-6)
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-6)
    np.testing.assert_allclose(whole.std, in_memory.log_mels.std(axis=(0, 1, 3), dtype=np.float64), rtol=1e-6)


def test_long_whole_labelled_recordings_and_a_species_heard_mostly_band_limited_are_warned_of(tmp_path, capsys):
    """Neither stops training, both are easy to miss: every window of an hour labelled with its
    species, and a species whose recordings all lack the top bands."""
    long = tmp_path / "hour.wav"
    sf.write(long, np.zeros(16_000 * 61, np.float32), 16_000)
    narrow = tmp_path / "phone.wav"
    sf.write(narrow, np.zeros(8_000 * 6, np.float32), 8_000)
    items = [Item(long, ("owl",), "train"), Item(narrow, ("lark",), "train")]
    featurize(items, ["lark", "owl"], FrontEndConfig(), workers=1)
    err = capsys.readouterr().err
    assert "1 recording(s) over 60 s have no events (['hour.wav']...)" in err
    assert "most recordings of ['lark'] are below 16000 Hz" in err and "'owl'" not in err.split("most recordings")[1]


def test_chorus_train_on_bad_data_exits_2_with_the_reason(tmp_path, monkeypatch, capsys):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\nx.wav,owl,wren\n")
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    assert main(["train", "birdcall", "--profile", "tiny", "--data", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chorus train:") and "line 2: 3 fields" in err


def test_a_model_stored_before_the_finer_grid_builds_as_it_was_trained():
    # config.json of a model trained on the seed's 500-sample hop: no first_time_pool, no pool_first.
    stored = {"n_classes": 15, "n_mels": 64, "n_frames": 161, "d_model": 64, "n_heads": 2, "ff_dim": 2048, "dropout": 0.1}
    model = BirdCallNet(BirdCallArch(**stored, frequency_pooling="flatten", class_attention=True))
    assert model.arch.seq_len == 40
    assert first_time_pool_for(161) == model.arch.first_time_pool  # retraining on that grid builds the same
    first = model.features[0]
    assert [type(layer) for layer in first] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert first[3].kernel_size == (2, 2)
    assert model(torch.randn(2, 1, 64, 161)).shape == (2, 15)
