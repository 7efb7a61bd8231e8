"""The pipeline steps as plain functions. The CLI, ``dvc.yaml`` and the Prefect flows call
these; none of them re-implements a step.
"""

from __future__ import annotations

import os
from pathlib import Path

from dragonfly.config import DEFAULT_PARAMS, Profile, load_profile
from dragonfly.data.config import DataConfig, load_data_config
from dragonfly.train.config import StageConfig, load_stage


def data_config(params: str | Path = DEFAULT_PARAMS) -> DataConfig:
    return load_data_config(Path(params))


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

    from dragonfly.config import ConfigError, from_dict
    from dragonfly.processing import TilingSpec
    from dragonfly.train.backbone import BackbonePretrainConfig, pretrain, save_backbone

    prof = load_profile(profile, params, overrides)
    spec, layout = prof.model.tiny, prof.model.layout
    if prof.model.source != "tiny" or not spec.vision_from:
        raise ConfigError(f"profile {profile!r}: pretrain-vision writes model.tiny.vision_from of a tiny profile; "
                          "set model.source=tiny and model.tiny.vision_from=<dir>")
    cfg = from_dict(BackbonePretrainConfig, prof.extra.get("vision_pretrain"), "vision_pretrain.")
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
          resume: bool = False, out_dir: str | Path | None = None) -> Path:
    """Run one training stage of a profile; returns its ``final`` model directory."""
    from dragonfly.train.trainer import train_stage

    prof = load_profile(profile, params)
    stage_cfg = load_stage(prof, stage, overrides)
    cfg = data_config(params)
    dataset_dir = Path(cfg.out_dir) / stage_cfg.data.mixture / "dataset"
    return train_stage(prof, stage_cfg, cfg.root, dataset_dir, out_dir=out_dir, resume=resume,
                       tracker_factory=_tracker_factory(prof))
