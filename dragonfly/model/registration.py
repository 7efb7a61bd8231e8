"""``import dragonfly`` is enough for transformers' Auto classes, and costs no torch.

Registering a class with ``AutoConfig`` or ``AutoModelForImageTextToText`` needs the class,
hence torch and transformers (seconds); reading ``params.yaml`` needs neither. So the import
only asks to be told when transformers loads each Auto module (wrapt's post-import hooks: the
standard library has none since PEP 369; a module already loaded is handled at once), and
then registers what that Auto module looks up. A user of the Auto classes has paid for
transformers by then.

Two import orders shape the code. The config and the model register at the end of their own
modules, and their hooks only import those modules: when our modeling module is what made
transformers load its Auto models, the hook gets it back half-imported (Python hands a
module being imported to its own importer as it is) and the module registers when it
finishes. The processors register in their hooks, through the Auto module just loaded, and
``processor.py`` imports no Auto module: transformers loads its image-processor Auto module
from inside its processor Auto module, which cannot be imported from before it finishes.
"""

from __future__ import annotations

import importlib


def _image_processor(auto) -> None:
    from dragonfly.model.configuration import DragonflyConfig
    from dragonfly.model.processor import DragonflyImageProcessor

    classes = {"pil": DragonflyImageProcessor}
    auto.AutoImageProcessor.register(DragonflyConfig, image_processor_classes=classes, exist_ok=True)


def _processor(auto) -> None:
    from dragonfly.model.configuration import DragonflyConfig
    from dragonfly.model.processor import DragonflyProcessor

    auto.AutoProcessor.register(DragonflyConfig, DragonflyProcessor, exist_ok=True)


def _importer(module: str):
    return lambda _auto: importlib.import_module(module)


# transformers' Auto module → what registers Dragonfly's class with it once it is loaded.
HOOKS = {
    "transformers.models.auto.configuration_auto": _importer("dragonfly.model.configuration"),
    "transformers.models.auto.modeling_auto": _importer("dragonfly.model.modeling"),
    "transformers.models.auto.image_processing_auto": _image_processor,
    "transformers.models.auto.processing_auto": _processor,
}


def register_when_transformers_loads() -> None:
    import wrapt

    for auto_module, hook in HOOKS.items():
        wrapt.register_post_import_hook(hook, auto_module)
