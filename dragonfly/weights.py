"""Strict ``from_pretrained``: a checkpoint whose tensors do not match the model is an error.

transformers fills missing tensors with a fresh random init and only prints a table, so a
weights file with the wrong names loads as a random model that answers garbage. Every
load of a Dragonfly checkpoint or a backbone goes through :func:`load_strict` instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from dragonfly.errors import DragonflyError

# Tensors of a full CLIP/SigLIP checkpoint that a vision tower does not use (the text
# encoder and the contrastive heads): dropping them is the documented way to take the
# vision half of a dual encoder, so they are the only unexpected keys accepted, by name.
DUAL_ENCODER_UNUSED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias")


class WeightsMismatchError(DragonflyError):
    """A checkpoint whose tensor names do not match the model it is loaded into."""


def _listing(keys: Iterable[str], limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_loading_info(path: str | Path, info: dict, allowed_unexpected: tuple[str, ...] = ()) -> None:
    """Raise naming the missing, unexpected or wrongly shaped tensors of ``info``."""
    missing = set(info.get("missing_keys") or ())
    unexpected = {k for k in info.get("unexpected_keys") or () if not k.startswith(allowed_unexpected)}
    mismatched = {str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or ()}
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape: {_listing(mismatched)}")
    if problems:
        raise WeightsMismatchError(
            f"{path}: the weights do not match the model ({'; '.join(problems)})",
            hint="is this the checkpoint you meant? a model with fresh random "
            "weights in their place would answer garbage",
        )


def load_strict(auto_class, path: str | Path, allowed_unexpected: tuple[str, ...] = (), **kwargs):
    """``auto_class.from_pretrained(path, **kwargs)`` that refuses a mismatched checkpoint."""
    from transformers.utils import logging

    # transformers would print its own table of the same mismatch; ours is the one error.
    # Its loading bar is kept for a person at a terminal and left out of redirected logs.
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    if not sys.stderr.isatty():
        logging.disable_progress_bar()
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    check_loading_info(path, info, allowed_unexpected)
    return model


@contextlib.contextmanager
def hf_bars(enabled: bool):
    """transformers draws a bar of its own in ``save_pretrained`` ("Writing model shards"):
    off when the stage shows none, so a log file stays free of bars."""
    from transformers.utils import logging as hf_logging

    switch = hf_logging.is_progress_bar_enabled() and not enabled
    if switch:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if switch:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def unprobed() -> Iterator[None]:
    """A block that handles no DeepSpeed engine runs without importing DeepSpeed.

    accelerate's ``extract_model_from_parallel``, behind ``Accelerator.unwrap_model`` and
    transformers' ``save_pretrained``, imports DeepSpeed whenever it is installed only to
    test ``isinstance(model, DeepSpeedEngine)``: seconds, and a "Setting accelerator to CPU"
    warning, in runs that never use it. Inside the block that probe says "not installed"; a
    model in no DeepSpeed engine unwraps the same. Where DeepSpeed is loaded already (its
    own runs) nothing changes."""
    import accelerate.utils.other as other

    probe = getattr(other, "is_deepspeed_available", None)
    if probe is None or "deepspeed" in sys.modules:  # another accelerate layout (then only slower), or paid for
        yield
        return
    other.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        other.is_deepspeed_available = probe
