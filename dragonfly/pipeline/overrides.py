"""What an override ``KEY=VALUE`` means, the same in every command and in the flow.

``KEY`` is relative to the profile (``stages.general2.max_steps=5``,
``model.layout.select_k=2``), or to the data section when it starts with ``data.`` and
names one of its keys (``data.root=/mnt/data``). A stage setting on its own
(``max_steps=5``, ``data.mixture=my_vqa``) is short for that setting of every stage the
command trains: ``dragonfly train --stage S``'s one stage, each stage of an ablation's
chain, each stage the flow runs. Where that is a guess (a command that trains no stage, a
stage named first as in ``general2.max_steps=5``), the override is refused with the
profile-relative form that works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from dragonfly.config import PROFILE_KEYS, ConfigError
from dragonfly.data.config import DATA_KEYS
from dragonfly.train.config import DataSpec, StageConfig

# A stage's own settings (``name`` is the stage's key itself, not a setting).
STAGE_KEYS = frozenset(f.name for f in dataclasses.fields(StageConfig)) - {"name"}
STAGE_DATA_KEYS = frozenset(f.name for f in dataclasses.fields(DataSpec))
FORM = "overrides are relative to the profile, e.g. stages.general2.max_steps=5 (README, Configuration)"


def _key(item: str) -> list[str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value", hint=FORM)
    return item.split("=", 1)[0].strip().split(".")


def _stage_setting(key: list[str]) -> bool:
    """Whether a key is a stage's own (``lr``, ``data.mixture``) rather than the profile's or
    the data section's (``data.root``); ``data`` keys are the two sections' own, which share none."""
    if key[0] == "data":
        return len(key) > 1 and key[1] in STAGE_DATA_KEYS and key[1] not in DATA_KEYS
    return key[0] in STAGE_KEYS and key[0] not in PROFILE_KEYS


def profile_overrides(overrides: Sequence[str] | None, trained: Sequence[str], stages: Sequence[str]) -> list[str]:
    """``overrides`` with each stage setting on its own spelled out for every stage in
    ``trained`` (``max_steps=5`` → ``stages.general2.max_steps=5``); ``stages`` are the
    profile's. Anything else is kept as given: the profile's and the data section's loaders
    check those keys."""
    out: list[str] = []
    for item in overrides or []:
        key = _key(item)
        if key[0] in stages and key[0] not in PROFILE_KEYS:
            raise ConfigError(f"override {item!r} names a stage first; write stages.{item}", hint=FORM)
        if not _stage_setting(key):
            out.append(item)
        elif trained:  # an unknown stage is left to the stage loader's error
            out.extend(f"stages.{stage}.{item}" for stage in trained if stage in stages)
        else:
            raise ConfigError(
                f"override {item!r} is a stage setting and this command trains no stage; "
                f"write stages.<stage>.{item} (stages: {', '.join(stages) or 'none'})",
                hint=FORM,
            )
    return out
