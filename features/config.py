"""Front-end parameters. They travel with every trained model (its config JSON), never only in code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from features.errors import FrontEndConfigError


@dataclass(frozen=True)
class FrontEndConfig:
    """How audio becomes model input. Defaults: the birdcall seed's log-mel bands on a finer grid (a
    250-sample hop and a 512-sample STFT instead of the seed's 500 and 1024, docs/training.md: trills
    and pulses at 25-30 Hz are a steady tone at the seed's 32 frames a second, which follow at most 16 Hz).

    Frames sit on one grid per recording (frame j centred at sample j * hop_length), and a window is
    a slice of that grid, so stride and clip must be whole numbers of hops: checked on construction.
    """

    sample_rate: int = 16_000
    """Rate every recording is resampled to, in Hz."""
    clip_seconds: float = 5.0
    """Length of one classified window, in seconds (320 hops at the defaults)."""
    stride_seconds: float = 2.5
    """Distance between window starts, in seconds (160 hops; windows overlap by half)."""
    n_fft: int = 512
    """STFT size in samples (periodic Hann window of the same length, frames centred, zeros outside the recording)."""
    hop_length: int = 250
    """STFT hop in samples (15.625 ms at 16 kHz)."""
    n_mels: int = 64
    """Number of mel bands (HTK scale, no filter normalization, as torchaudio's default)."""
    f_min: float = 20.0
    """Lowest mel filter edge, in Hz."""
    f_max: float = 8_000.0
    """Highest mel filter edge, in Hz."""
    log_eps: float = 1e-6
    """Features are ln(power_mel + log_eps)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("clip_seconds", "stride_seconds"):
            seconds = getattr(self, name)
            samples = seconds * self.sample_rate
            if samples <= 0 or abs(samples - round(samples)) > 1e-6:
                problems.append(f"{name}={seconds} is not a positive whole number of samples at {self.sample_rate} Hz")
            elif round(samples) % self.hop_length:
                problems.append(f"{name}={seconds} ({round(samples)} samples) is not a whole number of hops of {self.hop_length}")
        if self.n_fft <= 0 or self.n_fft % 2:
            problems.append(f"n_fft={self.n_fft} must be positive and even")
        if problems:
            raise FrontEndConfigError(
                "front-end config: " + "; ".join(problems) + ". Windows are slices of one frame grid, so clip and stride must"
                " be whole numbers of hops (the defaults: hop 250 at 16 kHz, stride 160 hops, clip 320 hops). A model whose"
                " stored config fails this check was trained with the older per-window front end: retrain it with"
                " `chorus train birdcall` (then `chorus export birdcall`)."
            )

    def band_limited(self, sample_rate: int) -> str | None:
        """Why a recording at `sample_rate` is analyzed out of the model's reach, or None when it is not.

        Below twice f_max the recording holds nothing in the model's top bands: no species calling
        there can be found, and a model that never heard such audio scores it wildly (before the
        default birdcall model trained on 8 kHz recordings, 8 kHz noise scored species at 0.98 in
        every window)."""
        if sample_rate >= 2 * self.f_max:
            return None
        top = sample_rate / 2
        return (
            f"recorded at {sample_rate} Hz, so it holds nothing above {top:g} Hz, while the model listens up to"
            f" {self.f_max:g} Hz: species calling above {top:g} Hz cannot be detected in it, and a model trained"
            f" without such recordings may report false ones; record at {2 * self.f_max:g} Hz or more"
        )

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def stride_samples(self) -> int:
        return round(self.stride_seconds * self.sample_rate)

    @property
    def clip_hops(self) -> int:
        return self.clip_samples // self.hop_length

    @property
    def stride_hops(self) -> int:
        return self.stride_samples // self.hop_length

    @property
    def n_frames(self) -> int:
        """Frames per window: both ends of the clip are frame centres, so 321 for the defaults."""
        return self.clip_hops + 1

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape of one window's features: (channels, mels, frames)."""
        return (1, self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontEndConfig:
        """Raises FrontEndConfigError for a config of the old per-window front end (hop 512)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
