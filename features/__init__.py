"""The one audio front end: decode, mix (or split channels), resample, log-mel on one frame grid, normalize.

numpy, scipy, soundfile and soxr only. Training, export parity checks and serving all call this
package, so a model never sees features computed two different ways. Recordings stream through it
block by block, so memory depends on the block size, not on the recording.
"""

from features.config import FrontEndConfig
from features.decode import ACCEPTED_FORMATS, DEFAULT_BLOCK_SAMPLES, AudioFacts
from features.errors import (
    AudioError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    FrontEndConfigError,
    InvalidSamplesError,
    UnsupportedFormatError,
)
from features.frontend import Analysis, FrontEnd
from features.norm import NormStats
from features.stream import AudioStream, Channels
from features.windows import WindowBatch, WindowSpan, window_count

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_BLOCK_SAMPLES",
    "Analysis",
    "AudioError",
    "AudioFacts",
    "AudioStream",
    "AudioTooLongError",
    "Channels",
    "CorruptAudioError",
    "EmptyAudioError",
    "FrontEnd",
    "FrontEndConfig",
    "FrontEndConfigError",
    "InvalidSamplesError",
    "NormStats",
    "UnsupportedFormatError",
    "WindowBatch",
    "WindowSpan",
    "window_count",
]
