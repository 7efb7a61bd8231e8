"""Dragonfly: multi-resolution zoom-in vision-language model (Chen et al., 2024).

The package is layered (docs/architecture.md): ``dragonfly.model`` (the model core) →
``dragonfly.data`` → ``dragonfly.train`` / ``dragonfly.eval`` → ``dragonfly.pipeline`` →
``dragonfly.cli``. Importing ``dragonfly`` loads nothing heavy, and is all the
``transformers`` Auto classes need to load a Dragonfly folder: the classes register
themselves when transformers loads its Auto classes (``dragonfly.model.registration``).
"""

from dragonfly.model import __all__, __getattr__  # noqa: F401  (the model classes, loaded lazily)
from dragonfly.model.registration import register_when_transformers_loads

register_when_transformers_loads()
