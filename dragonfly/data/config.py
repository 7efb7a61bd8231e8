"""Typed data configuration: the `data:` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dragonfly.config import DEFAULT_PARAMS as PARAMS_FILE
from dragonfly.config import ConfigError, check_keys, load_params, set_dotted
from dragonfly.data.mixture import MixtureConfig
from dragonfly.data.synth import SynthConfig
from dragonfly.errors import close_match

DATA_KEYS = ("root", "out_dir", "synth", "mixtures")


def synth_from_dict(d: dict[str, Any], where: str = "data.synth[0].") -> SynthConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected a mapping")
    check_keys(d, SynthConfig.__dataclass_fields__, where)
    d = dict(d)
    if "sizes" in d:
        d["sizes"] = tuple(tuple(int(v) for v in s) for s in d["sizes"])
    if "tasks" in d:
        d["tasks"] = tuple(d["tasks"])
    return SynthConfig(**d)


@dataclass(frozen=True)
class DataConfig:
    """`root`: where images and source files live (paths in samples are relative to it);
    `out_dir`: where built mixtures go (one folder per mixture name)."""

    root: str = "data"
    out_dir: str = "data/mixtures"
    synth: tuple[SynthConfig, ...] = ()
    mixtures: dict[str, MixtureConfig] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        if not isinstance(d, dict):
            raise ConfigError("data: expected a mapping")
        check_keys(d, DATA_KEYS, "data.")
        return cls(
            root=str(d.get("root", "data")),
            out_dir=str(d.get("out_dir", "data/mixtures")),
            synth=tuple(synth_from_dict(s, f"data.synth[{i}].") for i, s in enumerate(d.get("synth") or [])),
            mixtures={name: MixtureConfig.from_dict(name, m) for name, m in (d.get("mixtures") or {}).items()},
        )

    def mixture(self, name: str) -> MixtureConfig:
        if name not in self.mixtures:
            raise ConfigError(
                f"no mixture {name!r} in data.mixtures{close_match(name, self.mixtures)}; "
                f"have {', '.join(sorted(self.mixtures)) or 'none'}"
            )
        return self.mixtures[name]


def load_data_config(params: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> DataConfig:
    """The `data:` section of a params file, with dotted overrides relative to it
    (``root=/mnt/data``). A missing file is an error, never a fall-back to defaults."""
    tree = dict(load_params(params).get("data") or {})
    for item in overrides or []:
        set_dotted(tree, item)
    return DataConfig.from_dict(tree)


DEFAULT_PARAMS: dict[str, Any] = {
    "root": "data",
    "out_dir": "data/mixtures",
    "synth": [
        {"variant": "general", "seed": 0, "n_train": 160, "n_validation": 32, "n_test": 32},
        {"variant": "biomedical", "seed": 1, "n_train": 160, "n_validation": 32, "n_test": 32},
    ],
    "mixtures": {
        "tiny": {
            "seed": 0,
            "max_per_image": 8,
            "reject_threshold": 0.05,
            "min_image_size": 16,
            "validate_images": True,
            "sources": [
                {
                    "name": "synth_general",
                    "format": "dragonfly_jsonl",
                    "path": "synth/general/samples.jsonl",
                },
                {
                    "name": "synth_biomedical",
                    "format": "dragonfly_jsonl",
                    "path": "synth/biomedical/samples.jsonl",
                },
            ],
        }
    },
}


def default_data_config() -> DataConfig:
    """The tiny profile's data: both synthetic variants, all splits, as one mixture."""
    return DataConfig.from_dict(DEFAULT_PARAMS)
