"""Train the birdcall detector on windows made by the shared front end, calibrate it, report it.

Multi-label: one independent sigmoid per species, trained with binary cross-entropy over the
(window, species) pairs whose target is known. Plain BCE rather than focal or asymmetric loss:
those reshape the scores on purpose, which fights the calibration the scores must carry, and the
positives here are not rare enough (one pair in ~12) to need them. Windows known to hold no
species weigh more (BirdcallProfile.empty_window_weight): field recordings are mostly such windows,
where any detection is a false one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from features import FrontEndConfig, NormStats
from layout import artifacts
from layout.machine import keep_freed_memory
from layout.workspace import Workspace
from training.birdcall_augment import mix_pairs, roll_time
from training.birdcall_data import WindowSet, check_trainable, dataset_hash, featurize, read_manifest, species_of
from training.birdcall_generate import GenerateSpec, ensure_dataset
from training.birdcall_model import BirdCallArch, BirdCallNet, first_time_pool_for
from training.birdcall_report import StopReason, markdown_report, plot_split, recording_targets, split_figures
from training.calibration import calibrate, sigmoid
from training.checkpoint import save_checkpoint
from training.detection_metrics import detection_share, precision_recall, reliability
from training.plots import plot_curves, plot_reliability


@dataclass(frozen=True)
class BirdcallProfile:
    """One named set of data and training sizes."""

    name: str
    data: GenerateSpec
    max_epochs: int
    patience: int
    """Stop after this many epochs without a lower validation loss."""
    max_minutes: float
    """Wall-clock budget for the epoch loop; the learning-rate schedule runs on it (see _learning_rate)."""
    command_minutes: float | None = None
    """Wall-clock budget of the whole `chorus train birdcall` (start-up, data, training, report): the
    epoch loop gets what the data left of it, less COMMAND_RESERVE_SECONDS, when that is less than
    max_minutes. None: max_minutes alone. A slower host then runs fewer epochs, still annealed.
    Only on the generated stand-in data: a user's own data (--data) may take longer to read, and its
    training is not to be cut short for it."""
    batch_size: int = 32
    """32, not 64: on 2 CPU cores an epoch takes ~10% less time at 32 (14.6-15.1 s against 16.4 s
    for the 4,042 default windows), so the budget holds one or two more epochs of twice the steps."""
    lr: float = 2e-3
    """Peak learning rate (Adam)."""
    warmup: float = 0.1
    """Share of the budget spent warming the learning rate up."""
    weight_decay: float = 1e-4
    train_stride_seconds: float = 1.25
    """Training windows start this far apart (serving: 2.5 s): twice the windows from the same audio,
    each call seen at other positions and cuts."""
    mix_share: float = 1.0
    """Share of each batch mixed with another window (training.birdcall_augment). Every window: on
    two seeds both of two species were found in 91.9% and 91.9% of test windows against 88.3/89.3%
    at 0.75 and 89.3/86.3% at 0.5, for a little precision (docs/training.md has all the runs)."""
    mix_empty_with_empty: bool = True
    """An empty window's mixing partner is another empty window, so a batch keeps its third of
    empty windows (with every window mixed at random only ~1 in 9 stays empty). Seeds 0-2: background
    false detections 0%, 0% and 0.34% against 0.34%, 0% and 3.4%, and on the 8 kHz copy 0-1%
    against 3.4-5.7%; the other figures held (docs/training.md)."""
    empty_window_weight: float = 6.0
    """Loss weight of a window known to hold no species (background recordings, pauses between
    calls), against 1 for the others: field recordings are mostly such windows, far more than the
    generated data's third, and each false detection there is what users see first."""
    frequency_pooling: str = "flatten"
    """training.birdcall_model.BirdCallArch.frequency_pooling; "mean" trains the seed's network."""
    class_attention: bool = True
    """training.birdcall_model.BirdCallArch.class_attention: a pooling over time per species (on two
    seeds, test micro-F1 0.887/0.859 -> 0.919/0.925, both of two species found 53%/45% -> 75%/76%)."""
    dropout: float = 0.0
    """Transformer dropout; none, where the seed had 0.1: its random masks were 16% of a training step
    on CPU, and the mixing augmentation regularizes (at 30 epochs training loss stays above validation)."""
    pool_first: bool = True
    """training.birdcall_model.BirdCallArch.pool_first."""
    clock_budget: bool = True
    """Whether the wall-clock budgets (max_minutes, command_minutes) end the loop and drive the
    learning-rate schedule. False (`chorus train birdcall --epochs N`): max_epochs alone, so the
    same data and seed make the same weights, bit for bit, on one machine, however loaded it is."""
    seed: int = 0
    figures_epochs: int | None = None
    """Epochs with which the profile's figures in docs/training.md were reached on its generated data.
    When the clock ends the loop sooner there (2 cores without native bfloat16 fit 7-9 of the
    default's in its 5 minutes, against ~15 with it), the report says so and `chorus train` prints
    the `--epochs` command that trains them, with its time on this machine. None: no such figures."""


PROFILES = {
    "default": BirdcallProfile(
        "default",
        GenerateSpec(recordings_per_species=24, val_share=0.12, test_share=0.28),
        # The clock ends the loop (14-18 epochs on 2 cores at batch 32); 40 only bounds a fast machine.
        max_epochs=40,
        patience=6,
        max_minutes=6.0,
        command_minutes=5.0,
        figures_epochs=15,
    ),
    "full": BirdcallProfile(
        "full",
        GenerateSpec(recordings_per_species=150, mixed_recordings=750, background_recordings=1100),
        max_epochs=100,
        patience=10,
        max_minutes=120,
        lr=1e-3,
    ),
    # For tests: seconds, not minutes; accuracy is not the point.
    "tiny": BirdcallProfile(
        "tiny",
        GenerateSpec(recordings_per_species=3, mixed_recordings=6, background_recordings=36, min_seconds=3, max_seconds=7, n_species=12),
        max_epochs=2,
        patience=2,
        max_minutes=1,
    ),
}


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, empty_weight: float = 1.0) -> torch.Tensor:
    """Weighted mean binary cross-entropy over the pairs whose target is known; every pair of a
    window known to hold no species weighs `empty_weight`."""
    empty = (known.all(dim=1, keepdim=True) & (targets == 0).all(dim=1, keepdim=True)).float()
    weights = known * (1 + (empty_weight - 1) * empty)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * weights).sum() / weights.sum().clamp(min=1)


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def with_epochs(profile: BirdcallProfile, epochs: int) -> BirdcallProfile:
    """profile run for `epochs` epochs (fewer only when validation loss stops improving for `patience`),
    the schedule over them, without the clock: reproducible, and as long as the host needs."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    return replace(profile, max_epochs=epochs, clock_budget=False)


def _learning_rate(profile: BirdcallProfile, progress: float) -> float:
    """Linear warm-up, then cosine decay to zero, over progress in [0, 1].

    Progress is the larger of the share of the wall-clock budget used and the share of
    max_epochs done, so a slow machine still anneals before its budget runs out (it runs fewer
    epochs; a faster one runs more, up to max_epochs). Without the clock (clock_budget False) it is
    the share of max_epochs done.
    """
    if progress < profile.warmup:
        return profile.lr * max(progress / profile.warmup, 0.02)
    return profile.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - profile.warmup) / (1 - profile.warmup))))


class _Normalize:
    """ln-mel -> model input, with the training split's per-band statistics."""

    def __init__(self, stats: NormStats):
        self.mean = torch.from_numpy(stats.mean).reshape(1, 1, -1, 1)
        self.std = torch.from_numpy(stats.std).reshape(1, 1, -1, 1)

    def __call__(self, log_mels: torch.Tensor) -> torch.Tensor:
        return (log_mels - self.mean) / self.std


def _eval_tensors(windows: WindowSet, normalize: _Normalize) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalized inputs, targets, known as 0/1) of a split that is only evaluated."""
    x = normalize(torch.from_numpy(windows.log_mels))
    return x, torch.from_numpy(windows.targets), torch.from_numpy(windows.known.astype(np.float32))


COMMAND_RESERVE_SECONDS = 30.0
"""Of a command budget, what the epoch loop leaves to the rest: the imports before train_birdcall
starts its clock (~5 s, ~15 s on a cold machine) and what follows the loop (calibration, test
figures, report images: ~8 s), with some margin."""


def epoch_loop_seconds(profile: BirdcallProfile, seconds_so_far: float) -> float | None:
    """The epoch loop's wall-clock budget once data preparation has taken seconds_so_far (None: no clock)."""
    if not profile.clock_budget:
        return None
    budget = profile.max_minutes * 60
    if profile.command_minutes is not None:
        budget = min(budget, profile.command_minutes * 60 - seconds_so_far - COMMAND_RESERVE_SECONDS)
    return max(budget, 1.0)  # data that ate the whole budget still gets a (short, annealed) loop


@dataclass(frozen=True)
class FitOutcome:
    history: dict[str, list[float]]
    best_epoch: int
    stopped_by: StopReason
    """What ended the loop: "clock" (the time budget), "patience" (validation loss stopped falling)
    or "epochs" (max_epochs ran)."""
    epochs_trained: float
    """Epochs of optimizer steps taken: the clock may end the last one part way."""


def short_budget_note(profile: BirdcallProfile, fit: FitOutcome, seconds_training: float, seconds: float) -> str | None:
    """What to tell the user when the clock ended training short of the epochs the profile's figures
    need (None otherwise): a slower host's budget, not the data, decided how good the model is.
    seconds_training: the loop's time; seconds: the whole run's, whose rest an `--epochs` run spends too."""
    wanted = profile.figures_epochs
    if fit.stopped_by != "clock" or wanted is None or fit.epochs_trained >= wanted:
        return None
    minutes = (seconds - seconds_training + wanted * seconds_training / max(fit.epochs_trained, 1e-9)) / 60
    return (
        f"the {profile.command_minutes or profile.max_minutes:g}-minute budget trained {fit.epochs_trained:.1f} epochs on this"
        f" machine; the {profile.name} profile's figures (docs/training.md) were reached with {wanted}."
        f" `chorus train birdcall --epochs {wanted}` trains them without the clock (about {math.ceil(minutes)} minutes here)."
    )


def _fit(
    model: nn.Module,
    train: WindowSet,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    normalize: _Normalize,
    profile: BirdcallProfile,
    budget: float | None,
    clock: Callable[[], float] = time.perf_counter,
) -> FitOutcome:
    """The epoch loop, in at most `budget` seconds of `clock` (None: max_epochs); leaves the weights of the epoch with
    the lowest validation loss in model."""
    x_train = torch.from_numpy(train.log_mels)
    y_train, k_train = torch.from_numpy(train.targets), torch.from_numpy(train.known.astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    # bfloat16 matmuls and convs where the CPU has them natively (~1.3x here); the loss stays float32.
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_f1": [], "schedule_lr": []}
    best_loss, best_state, best_epoch, stale = np.inf, copy.deepcopy(model.state_dict()), 0, 0
    started = clock()
    generator = torch.Generator().manual_seed(profile.seed)
    steps_per_epoch = -(-len(x_train) // profile.batch_size)
    keep_freed_memory()  # from here: the data phase's large temporaries were mapped and given back as usual
    progress, steps_taken = 0.0, 0
    for epoch in range(1, profile.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total, seen = 0.0, 0
        for step, i in enumerate(tqdm(range(0, len(order), profile.batch_size), desc=f"epoch {epoch}", unit="batch", leave=False)):
            done = ((epoch - 1) * steps_per_epoch + step) / (profile.max_epochs * steps_per_epoch)
            progress = done if budget is None else max((clock() - started) / budget, done)
            if progress >= 1.0:
                break
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(profile, progress)
            idx = order[i : i + profile.batch_size]
            x, y, k = mix_pairs(
                roll_time(x_train[idx], generator),
                y_train[idx],
                k_train[idx],
                profile.mix_share,
                generator,
                empty_with_empty=profile.mix_empty_with_empty,
            )
            # The plain attention kernel: on 40 steps and 2 heads the CPU flash kernel's backward is
            # ~12% of a step slower.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16), sdpa_kernel(SDPBackend.MATH):
                logits = model(normalize(x).contiguous(memory_format=torch.channels_last))
            loss = masked_bce(logits.float(), y, k, profile.empty_window_weight)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            steps_taken += 1
            total += loss.item() * len(idx)
            seen += len(idx)
        if seen == 0:  # the clock ran out as this epoch began: it has nothing to validate or record
            break
        logits = predict_logits(model, val[0])
        val_loss = masked_bce(torch.from_numpy(logits), val[1], val[2], profile.empty_window_weight).item()
        val_f1 = precision_recall(sigmoid(logits), val[1].numpy(), val[2].numpy() > 0, 0.5)["f1"]
        history["train_loss"].append(total / seen)
        history["val_loss"].append(val_loss)
        history["val_f1"].append(val_f1)
        history["schedule_lr"].append(optimizer.param_groups[0]["lr"])
        tqdm.write(f"epoch {epoch}: train loss {total / seen:.4f} | val loss {val_loss:.4f} micro-F1@0.5 {val_f1:.4f}")
        if val_loss < best_loss:
            best_loss, best_state, best_epoch, stale = val_loss, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
        if stale >= profile.patience or progress >= 1.0:
            break
    model.load_state_dict(best_state)
    stopped_by: StopReason = "clock" if progress >= 1.0 else "patience" if stale >= profile.patience else "epochs"
    return FitOutcome(history, best_epoch, stopped_by, steps_taken / steps_per_epoch)


def train_birdcall(profile: BirdcallProfile, workspace: Workspace, data_csv: Path | None = None) -> dict:
    """Generate data if none is given, train, calibrate on val, measure on test, save checkpoint and report."""
    started = time.perf_counter()
    torch.manual_seed(profile.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    generated = data_csv is None
    if data_csv is None:
        data_csv = ensure_dataset(workspace.data_dir("birdcall") / profile.name, profile.data)
    items = read_manifest(data_csv)
    check_trainable(data_csv, items)
    labels = species_of(items)
    frontend_config = FrontEndConfig()
    split_items = {name: [i for i in items if i.split == name] for name in ("train", "val", "test")}
    train_config = replace(frontend_config, stride_seconds=profile.train_stride_seconds)
    spill_dir = workspace.data_dir("birdcall")  # the train split's features on disk: hours of audio fit
    spill_dir.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": featurize(split_items["train"], labels, train_config, desc="features train", spill_dir=spill_dir),
        **{name: featurize(split_items[name], labels, frontend_config, desc=f"features {name}") for name in ("val", "test")},
    }
    stats = NormStats.fit(splits["train"].log_mels)
    normalize = _Normalize(stats)
    tensors = {name: _eval_tensors(splits[name], normalize) for name in ("val", "test")}
    seconds_data = time.perf_counter() - started

    arch = BirdCallArch(
        n_classes=len(labels),
        n_mels=frontend_config.n_mels,
        n_frames=frontend_config.n_frames,
        dropout=profile.dropout,
        frequency_pooling=profile.frequency_pooling,
        class_attention=profile.class_attention,
        pool_first=profile.pool_first,
        first_time_pool=first_time_pool_for(frontend_config.n_frames),
    )
    model = BirdCallNet(arch)
    # Start every species at its prior (~7% of windows) rather than at 50%: the first epoch then
    # learns calls instead of the base rate.
    prior = float(np.clip(splits["train"].targets.mean(), 1e-3, 0.5))
    nn.init.constant_(model.head.bias, math.log(prior / (1 - prior)))
    # channels_last makes the conv blocks ~15% faster on CPU; the saved weights are the same.
    model = model.to(memory_format=torch.channels_last)
    loop_budget = epoch_loop_seconds(profile if generated else replace(profile, command_minutes=None), seconds_data)
    fit = _fit(model, splits["train"], tensors["val"], normalize, profile, loop_budget)
    history = fit.history
    seconds_training = time.perf_counter() - started - seconds_data

    logits = {name: predict_logits(model, tensors[name][0]) for name in ("val", "test")}
    val = splits["val"]
    calibration = calibrate(logits["val"], val.targets, val.known)
    scores = {name: sigmoid(z / calibration.temperature) for name, z in logits.items()}
    threshold = calibration.threshold
    rec_targets = {name: recording_targets(split_items[name], labels) for name in ("val", "test")}
    figures = {name: split_figures(scores[name], splits[name], rec_targets[name], threshold, labels) for name in ("val", "test")}
    val_shares, val_none = detection_share(scores["val"], threshold, labels)

    checkpoint_dir = workspace.checkpoint_dir("birdcall")
    reports = workspace.reports_dir("birdcall")
    plot_curves(history, reports / "training_curves.png", f"birdcall ({profile.name})")
    plot_reliability(
        reliability(sigmoid(logits["val"]), val.targets, val.known),
        reliability(scores["val"], val.targets, val.known),
        reports / "reliability.png",
        f"birdcall validation split, temperature {calibration.temperature:.2f}",
    )
    plot_split(
        scores["test"],
        splits["test"],
        rec_targets["test"],
        threshold,
        labels,
        reports / "detection_matrix.png",
        f"birdcall test split: detections at threshold {threshold} (micro-F1 {figures['test']['micro_f1']:.3f})",
    )
    metrics = {
        "model": "birdcall",
        "profile": profile.name,
        "threshold": threshold,
        "calibration": calibration.to_dict(),
        "test": figures["test"],
        "val": figures["val"],
        # The detection mix the service's drift alert compares live traffic with.
        "validation_detection_share": val_shares,
        "validation_no_detection_share": val_none,
        "train_class_share": {label: round(float(splits["train"].targets[:, i].mean()), 6) for i, label in enumerate(labels)},
        "best_epoch": fit.best_epoch,
        "epochs_run": len(history["val_loss"]),
        # Passes over the training windows: a last epoch the clock cut counts for the share it ran.
        "epochs_trained": round(fit.epochs_trained, 2),
        "stopped_by": fit.stopped_by,
        "windows": {name: len(ws) for name, ws in splits.items()},
        "n_classes": len(labels),
        "data_hash": dataset_hash(data_csv, items),
        "data_csv": str(data_csv),
        "seconds_data": round(seconds_data, 1),
        "epoch_loop_budget_seconds": None if loop_budget is None else round(loop_budget, 1),
        "seconds_training": round(seconds_training, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_threads": torch.get_num_threads(),
        "checkpoint": str(checkpoint_dir),
        "reports": str(reports),
    }
    # The figures are the generated data's: a user's own data has none to fall short of.
    metrics["short_budget_note"] = short_budget_note(profile, fit, seconds_training, metrics["seconds"]) if generated else None
    config = {
        "model": "birdcall",
        artifacts.ARCH: arch.to_dict(),
        artifacts.FRONTEND: frontend_config.to_dict(),
        "training": {"profile": asdict(profile), "history": history},
    }
    save_checkpoint(checkpoint_dir, model, config, metrics, labels=labels, norm_stats=stats.to_dict(), calibration=calibration.to_dict())
    (reports / "training_report.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (reports / "training_report.md").write_text(markdown_report(metrics))
    return metrics
