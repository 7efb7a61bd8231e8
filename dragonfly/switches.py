"""The on/off switches every command and the flow share, and how each reads.

A flag or flow parameter given (``--mlflow``/``--no-mlflow``, ``--debug``, the flow's
``mlflow``) wins; otherwise the switch's environment variable: unset or empty keeps the
default, ``0``, ``false``, ``no``, ``off`` (any case) turns it off, anything else on. Only
the edges (the CLI, the flow) call these; the library takes the resulting values as
arguments (README, "Configuration and errors").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TRACKING = "DRAGONFLY_TRACKING"  # log to MLflow; on by default
DEBUG = "DRAGONFLY_DEBUG"  # an expected error shows its traceback; off by default
OFF = ("0", "false", "no", "off")


def switch(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """The switch ``name`` of ``environ`` as a bool (``default`` when unset or empty)."""
    value = environ.get(name, "").strip().lower()
    return default if not value else value not in OFF


def tracking(flag: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to log to MLflow: ``flag`` when given, else :data:`TRACKING` (on when unset)."""
    return switch(TRACKING, True, environ) if flag is None else flag


def debug(flag: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether an expected error keeps its traceback: ``flag`` when given, else :data:`DEBUG`."""
    return switch(DEBUG, False, environ) if flag is None else flag
