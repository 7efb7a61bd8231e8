"""How an on/off ``DRAGONFLY_*`` environment switch reads, one meaning for all of them.

Unset or empty: the switch's default; ``0``, ``false``, ``no``, ``off`` (any case): off;
anything else: on. Only the edges (the CLI, the flow) read the environment; the library
takes the resulting values as arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OFF = ("0", "false", "no", "off")


def switch(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """The switch ``name`` of ``environ`` as a bool (``default`` when unset or empty)."""
    value = environ.get(name, "").strip().lower()
    return default if not value else value not in OFF
