"""Dragonfly: multi-resolution zoom-in vision-language model (Chen et al., 2024).

The package is layered (docs/architecture.md): ``dragonfly.model`` (the model core) →
``dragonfly.data`` → ``dragonfly.train`` / ``dragonfly.eval`` → ``dragonfly.pipeline`` →
``dragonfly.cli``. Importing ``dragonfly`` loads nothing heavy; ``import dragonfly.model.auto``
(or importing any model class, e.g. ``from dragonfly import DragonflyConfig``) registers the
classes with the ``transformers`` Auto classes.
"""

from dragonfly.model import __all__, __getattr__  # noqa: F401  (the model classes, loaded lazily)
