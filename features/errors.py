"""Typed audio errors. The service maps each class to one HTTP status; nothing here knows HTTP."""

from __future__ import annotations


class AudioError(ValueError):
    """Base class: the input cannot be turned into features. The message says what to do."""


class EmptyAudioError(AudioError):
    """No bytes at all, or a valid file with zero samples."""


class UnsupportedFormatError(AudioError):
    """The bytes are not one of the accepted containers/codecs."""


class CorruptAudioError(AudioError):
    """The bytes look like an accepted format but cannot be decoded."""


class InvalidSamplesError(AudioError):
    """Decoded samples contain NaN or infinity."""


class AudioTooLongError(AudioError):
    """The recording is longer than the configured limit (checked before decoding samples)."""
