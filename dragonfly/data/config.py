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

DATA_KEYS = ("root", "out_dir", "synth", "mixtures", "drop")


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
    `out_dir`: where built mixtures go (one folder per mixture name); `dropped`: the
    `MIXTURE.SOURCE` entries of `drop`, sources removed from their mixtures on loading."""

    root: str = "data"
    out_dir: str = "data/mixtures"
    synth: tuple[SynthConfig, ...] = ()
    mixtures: dict[str, MixtureConfig] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        if not isinstance(d, dict):
            raise ConfigError("data: expected a mapping")
        check_keys(d, DATA_KEYS, "data.")
        raw = d.get("mixtures") or {}
        dropped = _drop_list(d.get("drop"))
        raw = _without(raw, dropped)
        return cls(
            root=str(d.get("root", "data")),
            out_dir=str(d.get("out_dir", "data/mixtures")),
            synth=tuple(synth_from_dict(s, f"data.synth[{i}].") for i, s in enumerate(d.get("synth") or [])),
            mixtures={name: MixtureConfig.from_dict(name, m) for name, m in raw.items()},
            dropped=dropped,
        )

    def mixture(self, name: str) -> MixtureConfig:
        if name not in self.mixtures:
            raise ConfigError(
                f"no mixture {name!r} in data.mixtures{close_match(name, self.mixtures)}; "
                f"have {', '.join(sorted(self.mixtures)) or 'none'}"
            )
        return self.mixtures[name]


def _drop_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"data.drop must be a list of MIXTURE.SOURCE names, got {value!r}")
    return tuple(dict.fromkeys(value))


def _without(mixtures: dict[str, Any], dropped: tuple[str, ...]) -> dict[str, Any]:
    """`mixtures` (raw params mappings) without the `MIXTURE.SOURCE` entries of `dropped`.

    A drop removes a source the user cannot or will not fetch, for every command at once:
    build, plan and train all load the mixture through here, so the trainer's manifest check
    compares against the same, smaller mixture that was built."""
    out = dict(mixtures)
    for entry in dropped:
        mixture, sep, source = entry.partition(".")
        if not sep or not mixture or not source:
            raise ConfigError(f"data.drop: {entry!r} is not MIXTURE.SOURCE, e.g. med_sft.mimic_cxr")
        if mixture not in out:
            raise ConfigError(f"data.drop: {entry!r}: no mixture {mixture!r}{close_match(mixture, out)}")
        spec = out[mixture]
        sources = spec.get("sources") if isinstance(spec, dict) else None
        names = [s.get("name") for s in sources or [] if isinstance(s, dict)]
        if source not in names:
            raise ConfigError(
                f"data.drop: {entry!r}: mixture {mixture!r} has no source {source!r}{close_match(source, names)}; "
                f"its sources: {', '.join(map(str, names)) or 'none'}"
            )
        kept = [s for s in sources if not (isinstance(s, dict) and s.get("name") == source)]
        if not kept:
            raise ConfigError(f"data.drop: {entry!r} would leave mixture {mixture!r} with no source")
        out[mixture] = {**spec, "sources": kept}
    return out


def load_data_config(
    params: str | Path = PARAMS_FILE, overrides: list[str] | None = None, drop: list[str] | None = None
) -> DataConfig:
    """The `data:` section of a params file, with dotted overrides relative to it
    (``root=/mnt/data``) and `drop` added to its `drop` list. A missing file is an error,
    never a fall-back to defaults."""
    tree = dict(load_params(params).get("data") or {})
    for item in overrides or []:
        set_dotted(tree, item)
    if drop:
        tree["drop"] = [*_drop_list(tree.get("drop")), *drop]
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
