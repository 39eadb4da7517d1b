"""The birdcall network (the seed's "autobird" architecture): conv blocks, one transformer layer,
attention pooling, linear head. Input: normalized ln-mel windows [B, 1, n_mels, n_frames].

The head gives one independent logit per species (multi-label: sigmoid, not softmax), and the
pooled vector before it is the call embedding.

Two changes to the seed, both training's choice (the defaults are the seed's; docs/training.md
has the comparisons):

- `frequency_pooling="flatten"`: the seed averages the conv features over frequency, which makes
  it blind to pitch (a steady tone at 2.2 kHz and one at 3.8 kHz look the same to it), and once
  hum, music and crickets are in the data its steady-tone species fall to 15-40% F1. Flattening
  the 16 pooled bands into the projection keeps where in frequency a pattern sits.
- `class_attention`: each species' logit also gets a pooling over time of its own, so that where
  two species sing the quieter one is not averaged away by the one shared pool."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from features import FrontEndConfig

_FRONT_END = FrontEndConfig()


@dataclass(frozen=True)
class BirdCallArch:
    n_classes: int
    # The input's shape is the front end's: train_birdcall passes its config's values.
    n_mels: int = _FRONT_END.n_mels
    n_frames: int = _FRONT_END.n_frames
    d_model: int = 64
    n_heads: int = 2
    ff_dim: int = 2048
    dropout: float = 0.1
    frequency_pooling: str = "mean"
    """How the conv features become one vector per time step: "mean" over frequency (the seed) or
    "flatten" (all pooled bands into the projection, which keeps where in frequency a pattern sits)."""
    class_attention: bool = False
    """Add to each species' logit a pooling over time of its own: per-step species logits weighted by
    a per-species softmax over time, so that a second, quieter species is not averaged away by the
    one attention pool that the embedding (and the seed's head) share."""
    first_time_pool: int = 2
    """How much the first conv block pools time (the second pools it by 2): 2 on the seed's 500-sample
    hop, 4 on a 250-sample one, so the encoder sees 40 steps of a 5 s window either way."""
    pool_first: bool = False
    """Conv blocks as conv -> max-pool -> BatchNorm -> ReLU instead of the seed's conv -> BatchNorm ->
    ReLU -> max-pool: the normalization and the activation run on a quarter of the cells."""

    @property
    def seq_len(self) -> int:
        """Time steps after the two conv blocks: 321 -> 80 -> 40 for the default front end."""
        return self.n_frames // self.first_time_pool // 2

    def to_dict(self) -> dict:
        return asdict(self)


def first_time_pool_for(n_frames: int) -> int:
    """BirdCallArch.first_time_pool that gives the encoder ~40 steps of a window: 161 frames (the
    seed's 500-sample hop) pool by 2, 321 (a 250-sample hop) by 4."""
    return max(2, n_frames // 80)


def _conv_block(c_in: int, c_out: int, pool_first: bool, time_pool: int = 2) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU, and a max-pool halving frequency and dividing time by time_pool
    (last, as the seed had it; right after the conv with pool_first)."""
    pool = nn.MaxPool2d((2, time_pool))
    if pool_first:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), pool, nn.BatchNorm2d(c_out), nn.ReLU())
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), pool)


class AttentionPool(nn.Module):
    """Softmax-weighted sum over time: the model learns which steps hold the call."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, D]
        weights = torch.softmax(self.score(x), dim=1)
        return (weights * x).sum(dim=1)


class ClassAttention(nn.Module):
    """Per species: a logit at every time step, pooled with that species' own softmax over time."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.logit = nn.Linear(d_model, n_classes)
        self.score = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, C]
        weights = torch.softmax(self.score(x), dim=1)
        return (weights * self.logit(x)).sum(dim=1)


class BirdCallNet(nn.Module):
    def __init__(self, arch: BirdCallArch):
        super().__init__()
        self.arch = arch
        self.features = nn.Sequential(_conv_block(1, 32, arch.pool_first, arch.first_time_pool), _conv_block(32, 64, arch.pool_first))
        bands = arch.n_mels // 2 // 2 if arch.frequency_pooling == "flatten" else 1
        self.project = nn.Linear(64 * bands, arch.d_model)
        self.position = nn.Parameter(torch.zeros(1, arch.seq_len, arch.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.encoder = nn.TransformerEncoderLayer(
            arch.d_model, arch.n_heads, dim_feedforward=arch.ff_dim, dropout=arch.dropout, batch_first=True
        )
        self.pool = AttentionPool(arch.d_model)
        self.head = nn.Linear(arch.d_model, arch.n_classes)
        self.class_attention = ClassAttention(arch.d_model, arch.n_classes) if arch.class_attention else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, n_frames] -> the encoder's sequence [B, seq_len, d_model]."""
        h = self.features(x)  # [B, 64, bands, T]
        h = h.flatten(1, 2) if self.arch.frequency_pooling == "flatten" else h.mean(dim=2)  # [B, 64 (x bands), T]
        return self.encoder(self.project(h.transpose(1, 2)) + self.position)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, n_frames] -> pooled embedding [B, d_model] (the head's input)."""
        return self.pool(self.encode(x))

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 1, n_mels, n_frames] -> (one logit per species [B, n_classes], embedding [B, d_model])."""
        sequence = self.encode(x)
        embedding = self.pool(sequence)
        logits = self.head(embedding)
        if self.class_attention is not None:
            logits = logits + self.class_attention(sequence)
        return logits, embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mels, n_frames] -> one logit per species [B, n_classes]."""
        return self.logits_and_embedding(x)[0]
