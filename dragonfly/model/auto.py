"""Importing this module registers Dragonfly with the ``transformers`` Auto classes, so
``AutoConfig``, ``AutoModelForImageTextToText`` and ``AutoProcessor`` load a saved
Dragonfly directory. Apart from ``dragonfly/model/__init__.py`` so that reading the
typed settings (``dragonfly.model.specs``) loads neither torch nor transformers."""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

from dragonfly.model.modeling import DragonflyConfig, DragonflyForConditionalGeneration
from dragonfly.model.processor import DragonflyImageProcessor, DragonflyProcessor

AutoConfig.register("dragonfly", DragonflyConfig, exist_ok=True)
AutoModelForImageTextToText.register(DragonflyConfig, DragonflyForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(DragonflyConfig, image_processor_classes={"pil": DragonflyImageProcessor}, exist_ok=True)
AutoProcessor.register(DragonflyConfig, DragonflyProcessor, exist_ok=True)

__all__ = ["DragonflyConfig", "DragonflyForConditionalGeneration", "DragonflyImageProcessor", "DragonflyProcessor"]
