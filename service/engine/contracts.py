"""The array contracts between the API workers and the engine process.

BentoML's adaptive batching batches ONE array argument along axis 0 and returns one array, so
anything else a batched call carries rides inside those arrays. Each contract states its layout
once, with the pack and unpack that the two processes call, so neither side does index
arithmetic on the other's behalf.
"""

from __future__ import annotations

import numpy as np


class TimedRows:
    """Model outputs of a batch, with the seconds the model took on that batch.

    Layout: float32 [n, k + 1]: the k output columns of each row, then one column holding the
    ONNX Runtime seconds of the batch that carried the row (equal in every row of one batch).
    The API subtracts it from the round trip to tell its queue wait from model time.
    """

    @staticmethod
    def pack(outputs: np.ndarray, seconds: float) -> np.ndarray:
        rows = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
        return np.concatenate([rows, np.full((len(rows), 1), seconds, np.float32)], axis=1)

    @staticmethod
    def unpack(rows: np.ndarray) -> tuple[np.ndarray, float]:
        """(outputs [n, k], the longest batch time among the rows: a call split over several
        batches waited for the slowest)."""
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"timed rows are [n, k + 1] with k >= 1, got shape {list(rows.shape)}")
        return rows[:, :-1], float(rows[:, -1].max()) if len(rows) else 0.0


class StepPlanes:
    """A denoiser batch: images x_t [n, C, H, W] and one timestep t [n] per image.

    Layout: float32 [n, C + 1, H, W]: the C image planes, then a plane filled with the image's t,
    so images at different DDIM steps share one batch.
    """

    @staticmethod
    def pack(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        if x_t.ndim != 4 or t.shape != (len(x_t),):
            raise ValueError(f"x_t must be [n, C, H, W] and t [n], got {list(x_t.shape)} and {list(t.shape)}")
        plane = np.broadcast_to(t.astype(np.float32)[:, None, None, None], (len(t), 1, *x_t.shape[2:]))
        return np.concatenate([x_t.astype(np.float32), plane], axis=1)

    @staticmethod
    def unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x_t [n, C, H, W], t [n]), both views of `packed`."""
        if packed.ndim != 4 or packed.shape[1] < 2:
            raise ValueError(f"step planes are [n, C + 1, H, W], got shape {list(packed.shape)}")
        return packed[:, :-1], packed[:, -1, 0, 0]
