"""Dragonfly: multi-resolution zoom-in vision-language model (Chen et al., 2024).

Importing the package registers the model, config and processors with the
``transformers`` Auto classes, so ``AutoConfig``, ``AutoModelForImageTextToText`` and
``AutoProcessor`` load saved Dragonfly checkpoints.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from dragonfly.modeling import DragonflyConfig, DragonflyForConditionalGeneration
from dragonfly.processor import DragonflyImageProcessor, DragonflyProcessor

AutoConfig.register("dragonfly", DragonflyConfig, exist_ok=True)
AutoModelForImageTextToText.register(DragonflyConfig, DragonflyForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(DragonflyConfig, image_processor_classes={"pil": DragonflyImageProcessor}, exist_ok=True)
AutoProcessor.register(DragonflyConfig, DragonflyProcessor, exist_ok=True)

__all__ = [
    "DragonflyConfig",
    "DragonflyForConditionalGeneration",
    "DragonflyImageProcessor",
    "DragonflyProcessor",
]
