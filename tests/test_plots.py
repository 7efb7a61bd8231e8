"""Loss curves, the ablation plot and the report's figures (dragonfly/plots.py, report.py)."""

from __future__ import annotations

import base64
import re

import pytest

from dragonfly.plots import ablation_figure, chance_key, loss_figure, read_loss_csv
from dragonfly.report import loss_curves_png, pipeline_report


def test_stages_are_drawn_end_to_end_raw_and_smoothed():
    fig = loss_figure({"general1": [(1, 6.0), (2, 5.0), (3, 4.0)], "general2": [(1, 3.0), (2, 2.0)]})
    raw1, smooth1, raw2, smooth2 = fig.axes[0].lines[:4]
    assert list(raw1.get_xdata()) == [1, 2, 3] and list(raw2.get_xdata()) == [4, 5]  # general2 after general1
    assert smooth1.get_ydata()[0] == pytest.approx(6.0)  # bias-corrected: the first point is not pulled to 0
    assert 4.0 < smooth1.get_ydata()[-1] < 5.0 and smooth2.get_ydata()[0] == pytest.approx(3.0)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "general1 (3 logged steps)",
        "general2 (2 logged steps)",
    ]


VARIANTS = {
    "baseline1": {"visual_tokens": 90, "metrics": {"b": {"accuracy": 0.30, "majority_baseline": 0.25}}},
    "dragonfly_region": {
        "visual_tokens": 306,
        "metrics": {"b": {"accuracy": 0.55, "majority_baseline": 0.25, "vqa_open_exact_match": 0.4}},
    },
}


def test_ablation_points_sit_at_visual_tokens_with_the_chance_line():
    assert chance_key("vqa_open_exact_match") == "vqa_open_majority_baseline"
    assert chance_key("accuracy") == "majority_baseline" and chance_key("cider") is None
    fig = ablation_figure(VARIANTS, "b")
    overall, open_ = fig.axes[:2]
    assert overall.get_ylabel() == "accuracy" and open_.get_ylabel() == "vqa_open_exact_match"
    points = sorted(tuple(c.get_offsets()[0]) for c in overall.collections)
    assert points == [(90.0, 0.30), (306.0, 0.55)]
    (chance,) = overall.lines
    assert list(chance.get_ydata()) == [0.25, 0.25] and "majority answer 0.25" in chance.get_label()
    assert not open_.lines  # no majority level for that metric in the data: none drawn


def test_the_report_inlines_links_or_names_the_loss_curves(tmp_path):
    for stage, rows in {"general1": "1,6.0,0.1\n2,5.5,0.1\n", "general2": "1,4.0,0.1\n"}.items():
        (tmp_path / "runs" / stage / "final").mkdir(parents=True)
        (tmp_path / "runs" / stage / "loss.csv").write_text("step,loss,lr\n" + rows)
    finals = {s: tmp_path / "runs" / s / "final" for s in ("general1", "general2", "med1")}  # med1: no loss.csv
    assert read_loss_csv(tmp_path / "runs/general1/loss.csv") == [(1, 6.0), (2, 5.5)]
    png = loss_curves_png(finals, tmp_path / "eval" / "loss_curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    summary = {"profile": "tiny", "stages": ["general1", "general2"], "tracks": {}}
    inline = pipeline_report(summary, None, {"Training loss": png}, images="inline")
    data = re.search(r"!\[Training loss\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", inline).group(1)
    assert base64.b64decode(data) == png.read_bytes()
    assert "![Training loss](loss_curves.png)" in pipeline_report(summary, None, {"Training loss": png}, images="link")
    assert f"Training loss: `{png}`" in pipeline_report(summary, None, {"Training loss": png})
    assert loss_curves_png({"med1": finals["med1"]}, tmp_path / "none.png") is None
