"""Label-preserving augmentation of training windows, on unnormalized ln-mel batches (torch).

- Time roll: a window's content moved circularly in time. Window labels say what the window
  holds, not where, so they stay right; the calls land at new positions for the positional
  embeddings.
- Mixing: a window plus another training window, summed in the power domain (ln-mel of a sum is
  logaddexp of the ln-mels, up to the cross terms, which average out), with the union of their
  labels. The partner is 0-6 dB below the window in mean power, so the window's own calls keep
  most of their margin. It makes overlapping species and calls over foreign backgrounds far more
  varied than the generated recordings alone.
"""

from __future__ import annotations

import math

import torch


def roll_time(log_mels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each window rolled by its own random number of frames."""
    n, frames = log_mels.shape[0], log_mels.shape[-1]
    shifts = torch.randint(0, frames, (n,), generator=generator)
    index = (torch.arange(frames).reshape(1, -1) - shifts.reshape(-1, 1)) % frames
    return torch.gather(log_mels, -1, index.reshape(n, 1, 1, frames).expand_as(log_mels))


def mix_pairs(
    log_mels: torch.Tensor,
    targets: torch.Tensor,
    known: torch.Tensor,
    share: float,
    generator: torch.Generator,
    max_drop_db: float = 6.0,
    empty_with_empty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix a `share` of the batch's windows with another window of the batch; returns (log_mels, targets, known).

    A mixed pair is present where either window holds the species, known-absent where both are
    known-absent, unknown otherwise. empty_with_empty: a window holding no species takes its
    partner among such windows, so the batch keeps its share of empty windows.
    """
    n = log_mels.shape[0]
    chosen = (torch.rand(n, generator=generator) < share).reshape(-1, 1)
    partner = torch.randperm(n, generator=generator)
    if empty_with_empty:
        empty = torch.nonzero(~(targets * known).bool().any(dim=1)).flatten()
        if len(empty):
            partner[empty] = empty[torch.randint(len(empty), (len(empty),), generator=generator)]
    flat = log_mels.flatten(1)
    # ln of each window's summed power, so the gain sets the partner's power relative to the window's.
    gap = torch.logsumexp(flat, dim=1) - torch.logsumexp(flat[partner], dim=1)
    drop = torch.rand(n, generator=generator) * max_drop_db * math.log(10) / 10
    mixed = torch.logaddexp(log_mels, log_mels[partner] + (gap - drop).reshape(-1, 1, 1, 1))
    present = torch.maximum(targets * known, targets[partner] * known[partner])
    mixed_known = torch.maximum(present, known * known[partner])
    return (
        torch.where(chosen.reshape(-1, 1, 1, 1), mixed, log_mels),
        torch.where(chosen, present, targets),
        torch.where(chosen, mixed_known, known),
    )
