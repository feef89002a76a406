"""The SmolLM2 study's phases (bench/studies/smollm2-*.yaml, docs/forgetting-study.md) plan the runs the document
says, and are comparable where the analysis puts them together: every phase trains the same tasks on the same rows
with the same schedule; the frontier and its cross-checks also evaluate alike (the pilots choose learning rates
only, with a cheaper evaluation)."""

from pathlib import Path

import pytest

from curlora.experiment import ExperimentConfig
from curlora.measure.study_record import StudySettings
from curlora.run.study_plan import plan_of, plan_settings, with_replays

STUDIES = Path(__file__).resolve().parents[1] / "bench" / "studies"


@pytest.fixture(autouse=True)
def _needs_shared(shared_data):
    """The phases train on SST-2 and MRPC from ../shared/data: where a clone has none, these skip with its reason."""
RUNS = {"pilot": 18, "pilot2": 6, "frontier": 36, "frontier-edge": 12, "sampling": 18, "sampling-low": 9,
        "control": 9}


def phase(name: str):
    sections = {"study": None}
    cfg = ExperimentConfig.load(STUDIES / f"smollm2-{name}.yaml", sections)
    cfg, settings = with_replays(cfg, StudySettings.from_dict(sections["study"]))
    return cfg, plan_settings(cfg, settings)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_phase_plans_the_runs_the_document_counts(name):
    cfg, settings = phase(name)
    assert len(plan_of(settings)) == RUNS[name]
    front, _ = phase("frontier")
    assert [t.to_dict() if hasattr(t, "to_dict") else t for t in cfg.tasks] == \
        [t.to_dict() if hasattr(t, "to_dict") else t for t in front.tasks]
    assert cfg.training == front.training
    if name in ("frontier", "frontier-edge", "sampling", "sampling-low"):
        assert cfg.evaluation == front.evaluation and settings.rows_per_seed


def test_the_edge_runs_one_rate_beyond_the_top_of_each_frontier_grid_and_is_otherwise_the_frontier():
    """The frontier's chosen rates sat at the top of its grids: the edge runs 3× each top, with the frontier's
    methods, seeds, orders and rows, so its runs join the frontier's as one study."""
    cfg, settings = phase("frontier-edge")
    front, fs = phase("frontier")
    assert settings.lrs == {m: [max(lrs) * 3] for m, lrs in fs.lrs.items()}
    assert [(m.kind, m.r, m.target_modules) for m in cfg.methods] == \
        [(m.kind, m.r, m.target_modules) for m in front.methods]
    assert settings.seeds == fs.seeds and settings.orders == fs.orders and settings.rows_per_seed
    assert cfg.run.name == "smollm2-frontier-edge"


def test_the_control_is_head_only_under_head_scoring_and_otherwise_the_frontier():
    """The paper's control: head-only, scored by its heads, one task order (its per-task heads on a frozen model
    cannot depend on the order); every other setting, probes included, is the frontier's."""
    import dataclasses

    cfg, settings = phase("control")
    front, fs = phase("frontier")
    assert [m.kind for m in cfg.methods] == ["head-only"] and cfg.evaluation.scoring == "head"
    assert dataclasses.replace(cfg.evaluation, scoring=front.evaluation.scoring) == front.evaluation
    assert cfg.tasks == front.tasks and cfg.training == front.training
    assert settings.seeds == fs.seeds and settings.orders == fs.orders[:1] and settings.rows_per_seed
    assert len(settings.lrs["head-only"]) == 3


def test_the_sampling_cross_check_varies_only_the_rule_beside_the_frontier():
    cfg, settings = phase("sampling")
    front, fs = phase("frontier")
    (curlora,) = [m for m in front.methods if m.kind == "curlora"]
    rules = {m.label: m.sampling for m in cfg.methods}
    assert rules == {"curlora-offset": "inverted_offset", "curlora-uniform": "uniform",
                     "curlora-leverage": "leverage"} and curlora.sampling == "inverted"
    for m in cfg.methods:  # everything else as the frontier's CURLoRA
        assert {k: v for k, v in vars(m).items() if k not in ("name", "sampling")} == \
            {k: v for k, v in vars(curlora).items() if k not in ("name", "sampling")}
    assert all(set(grid) <= set(fs.lrs["curlora"]) for grid in settings.lrs.values())
    assert settings.seeds == fs.seeds and settings.orders == fs.orders[:1]


def test_the_lower_sampling_rate_is_the_sampling_phase_at_the_frontiers_lowest_curlora_rate():
    """Added after the sampling phase's first seed (its rules learned more than the inverted rule at every rate both
    ran): the same rules, seeds, order, rows and probes, at the frontier's lowest CURLoRA rate, below the sampling
    grid, so the inverted rule's runs there are the frontier's and none is run twice."""
    cfg, settings = phase("sampling-low")
    high, hs = phase("sampling")
    _, fs = phase("frontier")
    assert cfg.methods == high.methods and cfg.evaluation == high.evaluation and cfg.training == high.training
    assert settings.lrs == {m: [min(fs.lrs["curlora"])] for m in hs.lrs}
    assert min(fs.lrs["curlora"]) < min(min(g) for g in hs.lrs.values())
    assert (settings.seeds, settings.orders, settings.rows_per_seed) == (hs.seeds, hs.orders, hs.rows_per_seed)
    assert cfg.run.name == "smollm2-sampling-low"


@pytest.mark.parametrize("chaser,ref", [("curlora", "lora"), ("lora", "curlora")])
def test_the_matched_loss_cross_checks_go_both_ways_on_the_frontiers_settings(chaser, ref):
    import dataclasses

    cfg = ExperimentConfig.load(STUDIES / f"smollm2-matched-{chaser}-chases.yaml")
    front, fs = phase("frontier")
    assert [m.label for m in cfg.methods] == [ref, chaser]  # the reference trains first
    assert cfg.training.matched_loss_reference == ref and cfg.training.comparison == "matched_loss"
    assert dataclasses.replace(cfg.training, comparison=front.training.comparison, matched_loss_reference=None,
                               matched_loss_max_steps=None) == front.training
    assert cfg.evaluation == front.evaluation and cfg.tasks == front.tasks
    for m in cfg.methods:  # each at the middle of its frontier grid
        assert m.lr == sorted(fs.lrs[m.label])[1]


def test_the_peers_phase_is_written_from_the_pilots_choices(tmp_path):
    """Every pilot method at the rate its pilot chose, beside the frontier's settings: 8 methods x 3 seeds x 2
    orders = 48 runs; refused, naming the method, while one of a method's pilot rates has not finished."""
    import sys

    import yaml

    sys.path.insert(0, str(STUDIES.parent))
    import smollm2_study
    from curlora.measure.study_record import Best, Group, StudyRecord

    loaded, chosen = {}, {}
    for name in ("pilot", "pilot2"):
        spec = yaml.safe_load((STUDIES / f"smollm2-{name}.yaml").read_text())
        groups, best = {}, {}
        for label, grid in spec["study"]["lrs"].items():
            for lr in grid:
                groups[f"{label}@{lr:g}"] = Group(method=label, lr=lr)
            best[label] = Best(key=f"{label}@{grid[1]:g}", lr=grid[1])
            chosen[label] = grid[1]
        loaded[name] = (StudyRecord(groups=groups, best=best), {})
    path = STUDIES / f".test-peers-{tmp_path.name}.yaml"  # beside the others: its data paths are relative
    try:
        path.write_text(smollm2_study.peers_yaml(loaded))
        sections = {"study": None}
        cfg = ExperimentConfig.load(path, sections)
    finally:
        path.unlink(missing_ok=True)
    cfg, settings = with_replays(cfg, StudySettings.from_dict(sections["study"]))
    settings = plan_settings(cfg, settings)
    front, fs = phase("frontier")
    assert len(plan_of(settings)) == 48 and {k: v[0] for k, v in settings.lrs.items()} == chosen
    assert (cfg.tasks, cfg.training, cfg.evaluation) == (front.tasks, front.training, front.evaluation)
    assert (settings.seeds, settings.orders, settings.rows_per_seed) == (fs.seeds, fs.orders, True)
    del loaded["pilot"][0].groups["full@1e-05"]
    with pytest.raises(SystemExit, match=r"not chosen yet: full \(pilot\)"):
        smollm2_study.peers_yaml(loaded)


def test_the_readme_summary_counts_the_runs_each_phase_plans():
    """The README's progress line counts each phase's plan as the study command makes it (the peers' from the pilots'
    methods × the frontier's seeds and orders: 48), so its 'of N runs' is the grid, not a hand-typed number."""
    import sys

    sys.path.insert(0, str(STUDIES.parent))
    import smollm2_study

    assert {p: smollm2_study.planned(p) for p in RUNS} == RUNS and smollm2_study.planned("peers") == 48
