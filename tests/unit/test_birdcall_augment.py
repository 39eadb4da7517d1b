"""Training augmentation keeps labels right; the loss weighs empty windows; the learning-rate schedule warms up and anneals
within the command's time budget."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise
from typing import get_args

import numpy as np
import torch

from training.birdcall_augment import mix_pairs, roll_time
from training.birdcall_data import WindowSet
from training.birdcall_report import STOPPED_BY, StopReason
from training.train_birdcall import (
    COMMAND_RESERVE_SECONDS,
    PROFILES,
    FitOutcome,
    _fit,
    _learning_rate,
    epoch_loop_seconds,
    masked_bce,
    short_budget_note,
)


def test_roll_moves_each_window_in_time_only():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 1, 3, 5)
    rolled = roll_time(x, torch.Generator().manual_seed(0))
    for i in range(2):
        # Same frames, same bands, circularly shifted.
        assert any(torch.equal(rolled[i], torch.roll(x[i], s, dims=-1)) for s in range(5))


def test_mixing_sums_power_and_unites_labels():
    g = torch.Generator().manual_seed(1)
    log_mels = torch.log(torch.rand(64, 1, 4, 6, generator=g) + 1e-3)
    targets = torch.zeros(64, 3)
    targets[:, 0] = 1.0
    targets[32:, 0], targets[32:, 1] = 0.0, 1.0
    known = torch.ones(64, 3)
    known[5, 2] = 0.0
    mixed, t, k = mix_pairs(log_mels, targets, known, share=1.0, generator=torch.Generator().manual_seed(2))
    # Power only adds: every bin is at least as loud as before.
    assert (mixed >= log_mels - 1e-6).all()
    assert (t >= targets).all() and ((t == 0) | (t == 1)).all()
    # A pair stays known-absent only when both windows are known to lack the species.
    assert (k[t == 1] == 1).all()
    assert t.sum() > targets.sum()
    untouched = mix_pairs(log_mels, targets, known, share=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(untouched[0], log_mels) and torch.equal(untouched[1], targets) and torch.equal(untouched[2], known)


def test_empty_windows_can_keep_to_empty_partners():
    """With empty_with_empty, a window holding no species is mixed with another such window: it
    stays empty, so the batch keeps its share of empty windows; the others still take any partner."""
    g = torch.Generator().manual_seed(3)
    log_mels = torch.log(torch.rand(48, 1, 4, 6, generator=g) + 1e-3)
    targets = torch.zeros(48, 3)
    targets[:16, 0] = 1.0
    known = torch.ones(48, 3)
    mixed, t, k = mix_pairs(log_mels, targets, known, 1.0, torch.Generator().manual_seed(4), empty_with_empty=True)
    assert (t[16:] == 0).all() and (k[16:] == 1).all()
    assert (t[:16, 0] == 1).all() and not torch.equal(mixed[16:], log_mels[16:])
    _, anyone, _ = mix_pairs(log_mels, targets, known, 1.0, torch.Generator().manual_seed(4))
    assert anyone[16:].sum() > 0  # without it, empty windows pick up species from their partners


def test_learning_rate_warms_up_then_anneals_to_zero():
    profile = PROFILES["default"]
    rates = [_learning_rate(profile, p / 100) for p in range(101)]
    peak = rates.index(max(rates))
    assert math.isclose(max(rates), profile.lr) and abs(peak / 100 - profile.warmup) <= 0.01
    assert all(a <= b for a, b in pairwise(rates[: peak + 1]))
    assert all(a >= b for a, b in pairwise(rates[peak:]))
    assert rates[-1] < 1e-9


def test_the_epoch_loop_leaves_the_command_its_five_minutes():
    profile = PROFILES["default"]
    assert profile.command_minutes == 5.0
    # A fast host's data (47 s) leaves more than the loop needs; a slow one's (97 s) caps it.
    assert epoch_loop_seconds(profile, 47.0) == 300 - 47 - COMMAND_RESERVE_SECONDS
    assert epoch_loop_seconds(profile, 97.0) + 97.0 + COMMAND_RESERVE_SECONDS == 300
    assert epoch_loop_seconds(profile, 400.0) == 1.0  # data past the budget: a short, annealed loop
    unbounded = replace(profile, command_minutes=None)
    assert epoch_loop_seconds(unbounded, 97.0) == profile.max_minutes * 60
    assert epoch_loop_seconds(replace(profile, max_minutes=2.0), 47.0) == 120


def test_a_budget_that_ends_training_short_of_the_figures_epochs_says_so_with_the_command():
    profile = PROFILES["default"]
    assert profile.figures_epochs == 15
    # A CPU without bfloat16: 7.6 epochs in 190 s of loop, 270 s in all (80 s outside it).
    slow = FitOutcome({}, 7, "clock", 7.6)
    note = short_budget_note(profile, slow, 190.0, 270.0)
    assert note is not None and "trained 7.6 epochs" in note and "`chorus train birdcall --epochs 15`" in note
    assert "about 8 minutes here" in note  # (80 + 15 * 25) / 60 = 7.6, rounded up
    # Nothing to say when the figures' epochs ran, when the validation loss stopped falling, or
    # without the clock (--epochs), or for a profile with no figures.
    assert short_budget_note(profile, FitOutcome({}, 14, "clock", 15.2), 190.0, 270.0) is None
    assert short_budget_note(profile, FitOutcome({}, 3, "patience", 7.0), 190.0, 270.0) is None
    assert short_budget_note(profile, FitOutcome({}, 7, "epochs", 7.0), 190.0, 270.0) is None
    assert short_budget_note(PROFILES["tiny"], slow, 190.0, 270.0) is None


def _windows(n: int, classes: int = 3) -> WindowSet:
    rng = np.random.default_rng(0)
    targets = (rng.random((n, classes)) < 0.3).astype(np.float32)
    return WindowSet(
        rng.normal(size=(n, 1, 4, 8)).astype(np.float32),
        targets,
        np.ones_like(targets, dtype=bool),
        np.arange(n),
        np.full(targets.shape, np.nan, np.float32),
    )


def test_the_clock_ends_the_loop_at_a_step_and_an_epoch_it_did_not_start_is_not_recorded():
    """Four windows, batch 2: two steps an epoch. A clock that ticks one second a reading, against a
    budget of 4.5 s, runs out as epoch 3 begins (the readings: start, then one a step)."""
    ticks = iter(range(100))
    profile = replace(PROFILES["tiny"], batch_size=2, max_epochs=10, patience=10, mix_share=0.0)
    train, val = _windows(4), _windows(4)
    val_tensors = (torch.from_numpy(val.log_mels), torch.from_numpy(val.targets), torch.ones(4, 3))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32, 3))
    fit = _fit(model, train, val_tensors, lambda x: x, profile, budget=4.5, clock=lambda: float(next(ticks)))
    assert fit.stopped_by == "clock" and fit.epochs_trained == 2.0
    assert len(fit.history["val_loss"]) == 2 and all(loss > 0 for loss in fit.history["train_loss"])
    unbounded = _fit(model, train, val_tensors, lambda x: x, replace(profile, max_epochs=3), budget=None)
    assert unbounded.stopped_by == "epochs" and unbounded.epochs_trained == 3.0 and len(unbounded.history["val_loss"]) == 3


def test_the_report_words_every_reason_the_loop_can_stop_for():
    assert set(STOPPED_BY) == set(get_args(StopReason)) and all(STOPPED_BY.values())


def test_loss_weighs_windows_known_to_be_empty():
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    known = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # the third may hold a cut call: not empty
    logits = torch.tensor([[2.0, 2.0], [0.0, 0.0], [1.0, 5.0]])
    per_pair = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weights = torch.tensor([[3.0, 3.0], [1.0, 1.0], [1.0, 0.0]])
    assert torch.isclose(masked_bce(logits, targets, known, 3.0), (per_pair * weights).sum() / weights.sum())
    assert torch.isclose(masked_bce(logits, targets, known), (per_pair * known).sum() / known.sum())
