"""Importing this module registers Dragonfly with the ``transformers`` Auto classes
(``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoImageProcessor``, ``AutoProcessor``).
Each class registers itself where it is defined; ``import dragonfly`` alone arranges the same
on transformers' first use (``dragonfly.model.registration``)."""

from dragonfly.model.configuration import DragonflyConfig
from dragonfly.model.modeling import DragonflyForConditionalGeneration
from dragonfly.model.processor import DragonflyImageProcessor, DragonflyProcessor

__all__ = ["DragonflyConfig", "DragonflyForConditionalGeneration", "DragonflyImageProcessor", "DragonflyProcessor"]
