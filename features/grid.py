"""One signal's ln-mel frames on the recording's hop grid, cut into windows as soon as they are complete.

The definition (training's and serving's): the signal x, at the model's rate, is zero outside
[0, N); frame j covers x[j*hop - n_fft/2 : j*hop + n_fft/2] (torchaudio's center=True with constant
padding); window i is frames i*stride_hops ... i*stride_hops + clip_hops, and there are
window_count(N) windows (the last one reaches into the zeros past the end). Overlapping windows
share frames, so each frame is computed once.

Frames are computed in fixed groups, group i ending at window i's last frame: every FFT and matmul
runs on the same rows whatever blocks the samples arrive in, so results never depend on the block
size, bit for bit. Memory: about one window of samples and frames, plus what was pushed.
"""

from __future__ import annotations

import numpy as np

from features.config import FrontEndConfig
from features.mel import LogMel
from features.windows import WindowBatch, WindowSpan, window_count


class MelGrid:
    """Push samples of x in any pieces, then finish(); each call returns the windows it completed."""

    def __init__(self, config: FrontEndConfig, log_mel: LogMel, channel: int | None = None):
        self.config = config
        self.channel = channel
        self.received = 0
        """Samples of x pushed so far."""
        self._log_mel = log_mel
        self._half = config.n_fft // 2
        # The padded stream p (p[k] = x[k - half], so frame j is p[j*hop : j*hop + n_fft]) from p index
        # _origin on, then pushed pieces not yet joined to it.
        self._samples = np.zeros(self._half, np.float32)
        self._origin = 0
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        # ln-mel rows from frame _row0 on; per-hop sums of x**2 from hop _hop0 on (for window RMS).
        self._rows = np.empty((0, config.n_mels), np.float32)
        self._row0 = 0
        self._energy = np.empty(0, np.float64)
        self._hop0 = 0
        self._next = 0
        self._total: int | None = None

    def push(self, samples: np.ndarray) -> WindowBatch:
        """Append samples of x (copied: the caller may reuse its buffer)."""
        if len(samples):
            self._pending.append(np.array(samples, np.float32))
            self._pending_len += len(samples)
            self.received += len(samples)
        return self._drain()

    def finish(self) -> WindowBatch:
        """End of x: zero-pad through the last window's last frame and return the remaining windows."""
        cfg = self.config
        self._total = window_count(self.received, cfg)
        needed = (self._total - 1) * cfg.stride_samples + cfg.clip_samples + cfg.n_fft
        missing = needed - self._stream_end()  # at least n_fft / 2: the padding past the last frame
        self._pending.append(np.zeros(missing, np.float32))
        self._pending_len += missing
        return self._drain()

    def _stream_end(self) -> int:
        return self._origin + len(self._samples) + self._pending_len

    def _drain(self) -> WindowBatch:
        cfg = self.config
        done: list[tuple[np.ndarray, float, WindowSpan]] = []
        while self._total is None or self._next < self._total:
            last = self._next * cfg.stride_hops + cfg.clip_hops
            if last * cfg.hop_length + cfg.n_fft > self._stream_end():
                break
            if self._pending:
                self._samples = np.concatenate([self._samples, *self._pending])
                self._pending, self._pending_len = [], 0
            done.append(self._complete(self._next, last))
            self._next += 1
        if not done:
            return WindowBatch.empty(cfg)
        # Keep p from the next frame's first sample or the next hop's first sample, whichever is earlier.
        end = (self._next - 1) * cfg.stride_hops + cfg.clip_hops  # the last frame computed
        keep = min((end + 1) * cfg.hop_length, end * cfg.hop_length + self._half)
        self._samples = self._samples[keep - self._origin :]
        self._origin = keep
        return WindowBatch(
            np.stack([features for features, _, _ in done])[:, None],
            [span for _, _, span in done],
            np.array([rms for _, rms, _ in done], np.float32),
        )

    def _complete(self, index: int, last: int) -> tuple[np.ndarray, float, WindowSpan]:
        """Compute the group of frames that ends at window `index`'s last frame, and cut that window."""
        cfg, hop = self.config, self.config.hop_length
        first = last - cfg.stride_hops + 1 if index else 0
        segment = self._samples[first * hop - self._origin : last * hop + cfg.n_fft - self._origin]
        frames = np.lib.stride_tricks.sliding_window_view(segment, cfg.n_fft)[::hop]
        self._rows = np.concatenate((self._rows, self._log_mel(frames)))
        # Sums of squares of x per hop, up to this window's end (x[h*hop] is p[h*hop + half]).
        h0 = self._hop0 + len(self._energy)
        x = self._samples[h0 * hop + self._half - self._origin : last * hop + self._half - self._origin]
        hops = x.astype(np.float64).reshape(-1, hop)
        self._energy = np.concatenate((self._energy, np.einsum("ij,ij->i", hops, hops)))

        start = index * cfg.stride_hops
        features = self._rows[start - self._row0 : last + 1 - self._row0].T
        rms = float(np.sqrt(self._energy[start - self._hop0 : last - self._hop0].sum() / cfg.clip_samples))
        begin = index * cfg.stride_seconds
        span = WindowSpan(begin, min(begin + cfg.clip_seconds, self.received / cfg.sample_rate), self.channel)
        # Drop what the next window does not need (it starts stride_hops later).
        keep = start + cfg.stride_hops
        cut = min(keep - self._row0, len(self._rows))
        self._rows, self._row0 = self._rows[cut:], self._row0 + cut
        cut = min(keep - self._hop0, len(self._energy))
        self._energy, self._hop0 = self._energy[cut:], self._hop0 + cut
        return features, rms, span
