"""Typed front-end errors. The service maps each AudioError class to one HTTP status; nothing here knows HTTP."""

from __future__ import annotations


class FrontEndConfigError(ValueError):
    """A front-end config this code cannot honour (e.g. a model trained with an older front end). Not a client error."""


class AudioError(ValueError):
    """Base class: the input cannot be turned into features. The message says what to do."""


class EmptyAudioError(AudioError):
    """No bytes at all, or a valid file with zero samples."""


class UnsupportedFormatError(AudioError):
    """The bytes are not one of the accepted containers/codecs."""


class CorruptAudioError(AudioError):
    """The bytes look like an accepted format but cannot be decoded."""


class InvalidSamplesError(AudioError):
    """Decoded samples contain NaN or infinity (checked block by block)."""


class AudioTooLargeError(AudioError):
    """The recording decodes to more samples (frames x channels) than the configured limit: a small
    file can hold hours of many channels at a high rate. Checked from the header and on the samples."""


class AudioTooLongError(AudioError):
    """The recording is longer than the configured limit: refused from the header when it says so, and
    in any case as soon as the decoded samples pass the limit (headers can be absent or wrong)."""


class AnalysisStopped(Exception):
    """The caller asked the analysis to stop (its request gave up) before the recording's end. Not an
    AudioError: nothing is wrong with the input, and no client waits for an answer."""
