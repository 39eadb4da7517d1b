"""Log-mel features for 5 s windows, numerically matching torchaudio's MelSpectrogram.

Speed matters here: on CPU the front end, not the network, decides throughput. Frames are a
strided view (no copy), the FFT is scipy's float32 rfft, and the mel projection is one matmul.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from features.config import FrontEndConfig
from features.decode import DecodedAudio, decode_audio, resample
from features.windows import WindowSpan, split_windows, window_spans


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(config: FrontEndConfig) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] triangular HTK filters, unnormalized (torchaudio's defaults)."""
    n_freqs = config.n_fft // 2 + 1
    all_freqs = np.linspace(0, config.sample_rate // 2, n_freqs)
    m_pts = np.linspace(_hz_to_mel(np.array(config.f_min)), _hz_to_mel(np.array(config.f_max)), config.n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


@dataclass(frozen=True)
class NormStats:
    """Per-mel-band mean and std of ln-mel features over the training split."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, n_mels: int) -> NormStats:
        return cls(np.zeros(n_mels, np.float32), np.ones(n_mels, np.float32))

    @classmethod
    def fit(cls, log_mels: np.ndarray) -> NormStats:
        """From [n, 1, n_mels, frames] unnormalized features; std is floored to avoid division by ~0."""
        mean = log_mels.mean(axis=(0, 1, 3), dtype=np.float64)
        std = log_mels.std(axis=(0, 1, 3), dtype=np.float64)
        return cls(mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> NormStats:
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> NormStats:
        return cls.from_dict(json.loads(path.read_text()))


class FrontEnd:
    """Audio -> normalized log-mel windows [n, 1, n_mels, n_frames] float32."""

    def __init__(self, config: FrontEndConfig | None = None, stats: NormStats | None = None, fft_workers: int = 1):
        self.config = config or FrontEndConfig()
        self.stats = stats or NormStats.identity(self.config.n_mels)
        self.fft_workers = fft_workers
        self._filterbank = mel_filterbank(self.config)
        # Periodic Hann, as torch.hann_window(n_fft) makes it.
        n = self.config.n_fft
        self._window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
        self._mean = self.stats.mean.reshape(1, 1, -1, 1)
        self._inv_std = (1.0 / self.stats.std).reshape(1, 1, -1, 1)

    def load(self, source: bytes | str | Path, *, max_seconds: float | None = None) -> tuple[DecodedAudio, np.ndarray]:
        """Decode and resample: returns the decoded file and its mono waveform at the model's rate."""
        decoded = decode_audio(source, max_seconds=max_seconds)
        return decoded, resample(decoded.waveform, decoded.sample_rate, self.config.sample_rate)

    def windows(self, waveform: np.ndarray) -> tuple[np.ndarray, list[WindowSpan]]:
        """[n_samples] at the model's rate -> ([n, clip_samples], spans)."""
        return split_windows(waveform, self.config), window_spans(len(waveform), self.config)

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """[n, clip_samples] -> unnormalized ln-mel [n, 1, n_mels, n_frames] float32."""
        cfg = self.config
        half = cfg.n_fft // 2
        padded = np.pad(np.asarray(windows, np.float32), ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=-1)[:, :: cfg.hop_length]
        spectrum = scipy.fft.rfft(frames * self._window, axis=-1, workers=self.fft_workers)
        power = spectrum.real**2 + spectrum.imag**2
        # One 2-D matmul: a stacked 3-D one is a BLAS call per window.
        mel = (power.reshape(-1, power.shape[-1]) @ self._filterbank).reshape(*power.shape[:-1], -1)  # [n, frames, n_mels]
        out = np.log(mel + cfg.log_eps).transpose(0, 2, 1)
        return np.ascontiguousarray(out[:, None], dtype=np.float32)

    def normalize(self, log_mels: np.ndarray) -> np.ndarray:
        return ((log_mels - self._mean) * self._inv_std).astype(np.float32, copy=False)

    def features(self, windows: np.ndarray) -> np.ndarray:
        """[n, clip_samples] -> normalized model input [n, 1, n_mels, n_frames]."""
        return self.normalize(self.log_mel(windows))
