"""Typed configuration: nested dataclasses loaded from ``params.yaml`` profiles, with
dotted ``key=value`` overrides. Unknown keys are errors that name the key and its path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dragonfly.modeling import PAPER_HIGH, PAPER_MEDIUM
from dragonfly.tiny import TinySpec

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


@dataclass
class Layout:
    """How an image becomes visual tokens (paper §3; ablations of Tables 1, 5, 6)."""

    medium_grids: list[list[int]] = field(default_factory=lambda: [list(g) for g in PAPER_MEDIUM])
    high_grids: list[list[int]] = field(default_factory=lambda: [list(g) for g in PAPER_HIGH])
    select_k: int = 3
    strategy: str = "region"
    select_order: str = "most_similar"  # or least_similar (ours; see dragonfly/zoom.py)
    projector_type: str = "linear"
    vision_feature_layer: int = -2
    keep_cls: bool = True
    resize_mode: str = "stretch"


@dataclass
class ModelSection:
    """Where the model comes from: a tiny random init, or pretrained backbones."""

    source: str = "tiny"  # "tiny" | "backbones"
    vision: str = "openai/clip-vit-base-patch32"
    llm: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    dtype: str = "float32"
    seed: int = 0
    tiny: TinySpec = field(default_factory=TinySpec)
    layout: Layout = field(default_factory=Layout)


@dataclass
class Profile:
    name: str = "tiny"
    model: ModelSection = field(default_factory=ModelSection)
    extra: dict = field(default_factory=dict)  # sections owned by later stages (data, train, eval)


def _resolve_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass ``cls`` from ``data``, recursively; unknown keys raise ConfigError."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(f'{where}{k}' for k in unknown)}; "
                          f"valid keys under {where or 'top level'}: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        tp = _resolve_type(hints[key])
        if value is None and _optional(hints[key]):
            kwargs[key] = None
        elif dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)


def _optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _coerce(value, tp, name: str):
    """Scalars as their declared type (YAML reads ``1e-3`` as a string); errors name the key."""
    if tp in (int, float) and not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if tp is int:
            if number != int(number):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            return int(number)
        return number
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def set_dotted(tree: dict, dotted: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (numbers, lists...)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found")
    return yaml.safe_load(path.read_text()) or {}


def load_profile(name: str = "tiny", path: str | Path | None = DEFAULT_PARAMS,
                 overrides: list[str] | None = None) -> Profile:
    """The named profile of ``params.yaml`` (or the built-in defaults when path is None)."""
    tree: dict[str, Any] = {}
    if path is not None:
        profiles = load_params(path).get("profiles", {})
        if name not in profiles:
            raise ConfigError(f"profile {name!r} not in {path}; available: {', '.join(profiles) or 'none'}")
        tree = dict(profiles[name] or {})
    for item in overrides or []:
        set_dotted(tree, item)
    model = tree.pop("model", {})
    return Profile(name=name, model=from_dict(ModelSection, model, "model."), extra=tree)
