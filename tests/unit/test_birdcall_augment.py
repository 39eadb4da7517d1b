"""Training augmentation keeps labels right; the loss weighs empty windows; the learning-rate schedule warms up and anneals
within the command's time budget."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import torch

from training.birdcall_augment import mix_pairs, roll_time
from training.train_birdcall import COMMAND_RESERVE_SECONDS, PROFILES, _learning_rate, epoch_loop_seconds, masked_bce


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


def test_loss_weighs_windows_known_to_be_empty():
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    known = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # the third may hold a cut call: not empty
    logits = torch.tensor([[2.0, 2.0], [0.0, 0.0], [1.0, 5.0]])
    per_pair = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weights = torch.tensor([[3.0, 3.0], [1.0, 1.0], [1.0, 0.0]])
    assert torch.isclose(masked_bce(logits, targets, known, 3.0), (per_pair * weights).sum() / weights.sum())
    assert torch.isclose(masked_bce(logits, targets, known), (per_pair * known).sum() / known.sum())
