"""STFT frames -> normalized ln-mel rows, numerically matching torchaudio's MelSpectrogram.

Speed matters here: on CPU the front end, not the network, decides throughput. Frames arrive as a
strided view (no copy), the FFT is scipy's float32 rfft, and the mel projection is one 2-D matmul.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from features.config import FrontEndConfig
from features.norm import NormStats


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def periodic_hann(n: int) -> np.ndarray:
    """[n] float32 periodic Hann window, as torch.hann_window(n) makes it: the STFT's."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


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


class LogMel:
    """[frames, n_fft] float32 samples -> [frames, n_mels] float32 (ln(power mel + eps) - mean) / std."""

    def __init__(self, config: FrontEndConfig, stats: NormStats):
        self.config = config
        self._filterbank = mel_filterbank(config)
        self._window = periodic_hann(config.n_fft)
        self._mean = stats.mean.astype(np.float32)
        self._inv_std = (1.0 / stats.std).astype(np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        spectrum = scipy.fft.rfft(frames * self._window, axis=-1, overwrite_x=True)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        mel = power @ self._filterbank
        mel += self.config.log_eps
        out = np.log(mel, out=mel)
        # Per-band stats apply per frame, before windows share frames: the same float32 operations as
        # FrontEnd.normalize on whole windows, so training and serving agree bit for bit.
        out -= self._mean
        out *= self._inv_std
        return out
