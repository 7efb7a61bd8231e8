"""Typed data configuration: the `data:` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dragonfly.data.mixture import MixtureConfig
from dragonfly.data.synth import SynthConfig


def synth_from_dict(d: dict[str, Any]) -> SynthConfig:
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
        return cls(
            root=str(d.get("root", "data")),
            out_dir=str(d.get("out_dir", "data/mixtures")),
            synth=tuple(synth_from_dict(s) for s in d.get("synth", [])),
            mixtures={
                name: MixtureConfig.from_dict(name, m)
                for name, m in (d.get("mixtures") or {}).items()
            },
        )

    def mixture(self, name: str) -> MixtureConfig:
        if name not in self.mixtures:
            raise KeyError(f"no mixture {name!r} in the data config; have {sorted(self.mixtures)}")
        return self.mixtures[name]


def load_data_config(params: Path, section: str = "data") -> DataConfig:
    """Read the `data:` section of a params.yaml file (an absent section gives defaults)."""
    raw = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{params}: expected a mapping at the top level")
    return DataConfig.from_dict(raw.get(section) or {})


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
