"""Typed configuration: nested dataclasses loaded from ``params.yaml`` profiles, with
dotted ``key=value`` overrides. Unknown keys are errors that name the key and its path.

Written here, not with OmegaConf structured configs (2.3.1 is pinned): OmegaConf cannot type
the layout's grids (``tuple[tuple[int, int], ...]``: "Unsupported value type"), and its errors
span three lines with no suggestion, where ours are one line naming the closest valid key.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dragonfly.errors import DragonflyError, close_match
from dragonfly.model.specs import LAYOUT_KEYS, Layout, TinySpec

DEFAULT_PARAMS = Path("params.yaml")
# The sections of params.yaml. `anchors:` holds YAML anchors (`&name`) only; the loader
# never reads it, so shared blocks can live there without being a setting of their own.
# `dvc:` is read by dvc.yaml only (its profile and evaluation flags).
TOP_LEVEL = ("anchors", "profiles", "ablations", "data", "registry", "dvc")
PARAMS_HINT = "run from the project directory (it holds params.yaml) or pass --params FILE"


class ConfigError(DragonflyError, ValueError):
    """A configuration that cannot be used; the message names the key."""


def check_keys(data: dict, valid, where: str = "") -> None:
    """ConfigError naming each unknown key of ``data``, where it is, and the valid keys."""
    valid = sorted(valid)
    unknown = [k for k in data if k not in valid]
    if unknown:
        key = unknown[0]
        more = f" (and {', '.join(map(str, unknown[1:]))})" if len(unknown) > 1 else ""
        raise ConfigError(
            f"unknown key {where}{key}{close_match(str(key), valid)}{more}; "
            f"valid keys under {where.rstrip('.') or 'the top level'}: {', '.join(valid)}"
        )


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
    """One entry of ``profiles:``. ``stages`` and ``vision_pretrain`` stay mappings here and
    are typed by their owners (``train.config.load_stage``, ``train.backbone``), which the
    pipeline's loader runs over every entry, so a typo anywhere fails every command."""

    name: str = "tiny"
    model: ModelSection = field(default_factory=ModelSection)
    stages: dict = field(default_factory=dict)
    vision_pretrain: dict = field(default_factory=dict)
    runs_dir: str = "runs"  # stage outputs go to <runs_dir>/<profile>/<stage>


PROFILE_KEYS = ("model", "stages", "vision_pretrain", "runs_dir")


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
    check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
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
    """The whole params file as a mapping; a missing file or unknown section is an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found", hint=PARAMS_HINT)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    tree = tree or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(tree).__name__}")
    check_keys(tree, TOP_LEVEL)
    for name, layout in (tree.get("ablations") or {}).items():
        if not isinstance(layout, dict):
            raise ConfigError(f"ablations.{name}: expected a mapping of layout keys")
        check_keys(layout, LAYOUT_KEYS, f"ablations.{name}.")
    return tree


def split_overrides(overrides: list[str] | None) -> tuple[list[str], list[str]]:
    """(profile overrides, ``data.*`` overrides): ``--set data.root=x`` edits the data section."""
    items = list(overrides or [])
    return [o for o in items if not o.startswith("data.")], [o[5:] for o in items if o.startswith("data.")]


def load_profile(name: str = "tiny", path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None) -> Profile:
    """The named profile of ``params.yaml`` with dotted overrides applied (profile-relative)."""
    profiles = load_params(path).get("profiles") or {}
    if name not in profiles:
        raise ConfigError(
            f"profile {name!r} not in {path}{close_match(name, profiles)}; available: {', '.join(profiles) or 'none'}"
        )
    tree: dict[str, Any] = copy.deepcopy(profiles[name] or {})
    for item in overrides or []:
        if item.startswith("data."):
            raise ConfigError(
                f"override {item!r} edits the data section, not the profile; pass it where the data config is loaded"
            )
        set_dotted(tree, item)
    check_keys(tree, PROFILE_KEYS, f"profiles.{name}.")
    for key in ("stages", "vision_pretrain"):
        if not isinstance(tree.get(key) or {}, dict):
            raise ConfigError(f"profiles.{name}.{key}: expected a mapping")
    return Profile(
        name=name,
        model=from_dict(ModelSection, tree.get("model"), "model."),
        stages=tree.get("stages") or {},
        vision_pretrain=tree.get("vision_pretrain") or {},
        runs_dir=str(tree.get("runs_dir", "runs")),
    )
