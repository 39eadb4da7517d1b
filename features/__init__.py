"""The one audio front end: decode, mix to mono, resample, window, log-mel, normalize.

numpy, scipy, soundfile and soxr only. Training, export parity checks and serving all call this
package, so a model never sees features computed two different ways.
"""

from features.config import FrontEndConfig
from features.decode import ACCEPTED_FORMATS, DecodedAudio, decode_audio, resample
from features.errors import (
    AudioError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedFormatError,
)
from features.frontend import FrontEnd, NormStats
from features.windows import WindowSpan, split_windows, window_spans

__all__ = [
    "ACCEPTED_FORMATS",
    "AudioError",
    "AudioTooLongError",
    "CorruptAudioError",
    "DecodedAudio",
    "EmptyAudioError",
    "FrontEnd",
    "FrontEndConfig",
    "InvalidSamplesError",
    "NormStats",
    "UnsupportedFormatError",
    "WindowSpan",
    "decode_audio",
    "split_windows",
    "resample",
    "window_spans",
]
