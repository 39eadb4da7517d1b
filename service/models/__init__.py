"""The served models: one module each, found through this registry.

Adding a model: a module here with a ServedModel subclass, its entry below, and its methods on
the engine (service/engine_service.py), where BentoML needs them declared.
"""

from __future__ import annotations

from service.models.base import ServedModel
from service.models.birdcall import BirdcallModel
from service.models.frames import FramesModel

MODELS: tuple[type[ServedModel], ...] = (BirdcallModel, FramesModel)
"""Every model kind the service serves, in the order the protocols list them."""

__all__ = ["MODELS", "ServedModel"]
