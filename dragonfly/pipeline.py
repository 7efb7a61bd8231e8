"""The pipeline steps as plain functions. The CLI, ``dvc.yaml`` and the Prefect flows call
these; none of them re-implements a step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dragonfly.config import DEFAULT_PARAMS, Profile, from_dict, load_profile, split_overrides
from dragonfly.data.config import DataConfig, load_data_config
from dragonfly.train.config import BackbonePretrainConfig, StageConfig, load_stage, stage_names


@dataclass(frozen=True)
class Settings:
    """Everything one command reads from ``params.yaml``, checked as a whole."""

    params: Path
    profile: Profile
    data: DataConfig


def load_settings(params: str | Path = DEFAULT_PARAMS, profile: str = "tiny",
                  overrides: list[str] | None = None) -> Settings:
    """The one loader of ``params.yaml`` (default ``./params.yaml``): the profile, every
    stage, the vision pretraining and the data section are all typed here, so a typo in
    any of them fails every command up front. ``overrides`` are ``key=value`` relative to
    the profile (``model.layout.select_k=2``, ``stages.general2.lr=1e-4``), or to the data
    section when they start with ``data.`` (``data.root=/mnt/data``)."""
    profile_overrides, data_overrides = split_overrides(overrides)
    prof = load_profile(profile, params, profile_overrides)
    for name in stage_names(prof):
        load_stage(prof, name)
    from_dict(BackbonePretrainConfig, prof.vision_pretrain, f"profiles.{profile}.vision_pretrain.")
    return Settings(Path(params), prof, load_data_config(params, data_overrides))


def data_config(params: str | Path = DEFAULT_PARAMS) -> DataConfig:
    return load_data_config(params)


def prepare_data(params: str | Path = DEFAULT_PARAMS, mixtures: list[str] | None = None) -> dict[str, Path]:
    """Generate the synthetic benchmarks and build the named mixtures (all by default)."""
    from dragonfly.data.mixture import build_mixture
    from dragonfly.data.synth import write

    cfg = data_config(params)
    root = Path(cfg.root)
    for synth in cfg.synth:
        write(synth, root)
    built = {}
    for name in mixtures or list(cfg.mixtures):
        built[name] = build_mixture(cfg.mixture(name), root, Path(cfg.out_dir) / name).dataset_dir
    return built


def tracking_enabled() -> bool:
    return os.environ.get("DRAGONFLY_TRACKING", "1") not in ("0", "false", "no")


def _tracker_factory(profile: Profile):
    if not tracking_enabled():
        return None
    from dragonfly.tracking import Tracker

    def factory(stage: StageConfig, run_id: str | None):
        return Tracker(experiment=f"dragonfly-{profile.name}", run_name=stage.name, run_id=run_id,
                       tags={"dragonfly.stage": stage.name, "dragonfly.profile": profile.name})

    return factory


def pretrain_vision(profile: str = "tiny", params: str | Path | None = DEFAULT_PARAMS,
                    overrides: list[str] | None = None, force: bool = False, progress: bool = True) -> tuple[Path, dict]:
    """Pretrain the tiny profile's vision tower and save it to ``model.tiny.vision_from``.

    Skipped (returning the saved metrics) when that directory already holds a tower
    pretrained with the same configuration, unless ``force``.
    """
    import json
    from dataclasses import asdict

    from dragonfly.config import ConfigError
    from dragonfly.processing import TilingSpec
    from dragonfly.train.backbone import pretrain, save_backbone

    prof = load_settings(params, profile, overrides).profile
    spec, layout = prof.model.tiny, prof.model.layout
    if prof.model.source != "tiny" or not spec.vision_from:
        raise ConfigError(f"profile {profile!r}: pretrain-vision writes model.tiny.vision_from of a tiny profile; "
                          "set model.source=tiny and model.tiny.vision_from=<dir>")
    cfg = from_dict(BackbonePretrainConfig, prof.vision_pretrain, "vision_pretrain.")
    out = Path(spec.vision_from)
    record = out / "pretrain.json"
    # What the saved tower depends on: its own sizes, the tiling it was trained on and the
    # feature layer; not the LLM's sizes nor the output path.
    vision = {k: getattr(spec, k) for k in ("tile_size", "patch_size", "vision_hidden", "vision_layers", "vision_heads")}
    wanted = {**asdict(cfg), "tower": vision, "feature_layer": layout.vision_feature_layer,
              "medium_grids": [list(g) for g in layout.medium_grids], "high_grids": [list(g) for g in layout.high_grids]}
    if record.is_file() and not force:
        saved = json.loads(record.read_text())
        if saved.get("config") == wanted:
            return out, saved["metrics"]
    tiling = TilingSpec(tile_size=spec.tile_size, medium_grids=layout.medium_grids, high_grids=layout.high_grids)
    tower, metrics = pretrain(spec, tiling, cfg, layout.vision_feature_layer, progress=progress)
    save_backbone(tower, out, metrics, wanted)
    if tracking_enabled():
        from dragonfly.tracking import Tracker

        tracker = Tracker(experiment=f"dragonfly-{prof.name}", run_name="vision_pretrain",
                          tags={"dragonfly.stage": "vision_pretrain", "dragonfly.profile": prof.name})
        tracker.log_params(wanted)
        tracker.log_metrics({k: float(v) for k, v in metrics.items()})
        tracker.finish()
    return out, metrics


def train(stage: str, profile: str = "tiny", params: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None,
          resume: bool = False, out_dir: str | Path | None = None, sets: list[str] | None = None) -> Path:
    """Run one training stage of a profile; returns its ``final`` model directory.

    ``overrides`` are relative to the stage (``lr=1e-4``); ``sets`` to the profile or the
    data section, as in :func:`load_settings`.
    """
    from dragonfly.data.manifest import verify_dataset
    from dragonfly.train.trainer import train_stage

    settings = load_settings(params, profile, sets)
    stage_cfg = load_stage(settings.profile, stage, overrides)
    cfg = settings.data
    mixture = cfg.mixture(stage_cfg.data.mixture)
    # Before the model is built (minutes for the paper profile): a stale or failed build is
    # refused here, naming what differs from the mixture asked for.
    dataset_dir = verify_dataset(Path(cfg.out_dir) / mixture.name, mixture)
    return train_stage(settings.profile, stage_cfg, cfg.root, dataset_dir, out_dir=out_dir, resume=resume,
                       tracker_factory=_tracker_factory(settings.profile))
