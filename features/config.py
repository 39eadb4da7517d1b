"""Front-end parameters. They travel with every trained model (its config JSON), never only in code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class FrontEndConfig:
    """How audio becomes model input. Defaults are the birdcall seed's preprocessing."""

    sample_rate: int = 16_000
    """Rate every recording is resampled to, in Hz."""
    clip_seconds: float = 5.0
    """Length of one classified window, in seconds."""
    stride_seconds: float = 2.5
    """Distance between window starts, in seconds (windows overlap by half)."""
    n_fft: int = 1024
    """STFT size in samples (Hann window of the same length, centered frames, reflect padding)."""
    hop_length: int = 512
    """STFT hop in samples."""
    n_mels: int = 64
    """Number of mel bands (HTK scale, no filter normalization, as torchaudio's default)."""
    f_min: float = 20.0
    """Lowest mel filter edge, in Hz."""
    f_max: float = 8_000.0
    """Highest mel filter edge, in Hz."""
    log_eps: float = 1e-6
    """Features are ln(power_mel + log_eps)."""

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def stride_samples(self) -> int:
        return round(self.stride_seconds * self.sample_rate)

    @property
    def n_frames(self) -> int:
        """STFT frames per window: 157 for the defaults."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape of one window's features: (channels, mels, frames)."""
        return (1, self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontEndConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
