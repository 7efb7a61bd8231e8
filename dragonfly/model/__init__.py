"""The model core: image → tiles (``processing``) → zoom-in selection (``zoom``) → vision
tower, projector and LLM (``modeling``), the processor that builds inputs (``processor``),
image loading (``images``), the tiny builder (``tiny``), shared facts (``constants``) and
the typed settings (``specs``). Nothing here imports the rest of ``dragonfly`` except the
leaf ``dragonfly.errors``; ``tests/test_layers.py`` holds the rule.

The classes load lazily (``from dragonfly.model import DragonflyConfig`` imports
transformers; ``dragonfly.model.specs`` does not). Importing a class registers the Auto
classes (``dragonfly.model.auto``).
"""

_EXPORTS = ("DragonflyConfig", "DragonflyForConditionalGeneration", "DragonflyImageProcessor", "DragonflyProcessor")


def __getattr__(name: str):
    if name in _EXPORTS:
        from dragonfly.model import auto

        return getattr(auto, name)
    raise AttributeError(f"module 'dragonfly.model' has no attribute {name!r}")


__all__ = list(_EXPORTS)
