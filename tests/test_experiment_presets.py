"""Every experiment preset parses, and the quick demo uses only what the product ships."""

from pathlib import Path

import pytest

from conftest import REPO
from curlora.experiment import ExperimentConfig

PRESETS = sorted((REPO / "presets" / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_parses_and_round_trips(path):
    sections = {"study": None}
    cfg = ExperimentConfig.load(path, sections)
    if sections["study"] is not None:  # a study preset: its grids are valid for its methods
        from curlora.run.study import StudySettings, plan_settings

        plan_settings(cfg, StudySettings.from_dict(sections["study"]))
    again = ExperimentConfig.from_yaml(cfg.to_yaml())
    assert again.to_dict() == cfg.to_dict()
    assert {m.kind for m in cfg.methods} >= {"curlora", "lora"}


def test_quick_demo_needs_nothing_outside_the_repo():
    cfg = ExperimentConfig.load(REPO / "presets" / "experiments" / "quick-demo.yaml")
    assert len(cfg.tasks) == 3
    for t in cfg.tasks:
        for f in (t.train_file, t.eval_file):
            assert Path(f).is_file() and Path(f).resolve().is_relative_to(REPO / "assets")
    from curlora.models.loading import bundled_models

    assert cfg.model.name in bundled_models()
