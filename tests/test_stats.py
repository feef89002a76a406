"""The statistics behind every interval and verdict, on cases with known answers."""

import json

import pytest

from curlora.experiment import ExperimentConfig
from curlora.measure import stats
from curlora.run.runner import run_experiment
from tiny_experiment import make_experiment


def test_wilson_interval_known_values():
    lo, hi = stats.wilson(37, 64)
    assert abs(lo - 0.4561) < 1e-4 and abs(hi - 0.6913) < 1e-4  # k/n ± 1.96 SE would give 0.457–0.699
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == 1.0 and stats.wilson(0, 0) is None


def test_exact_tests_known_values():
    assert abs(stats.binom_greater(33, 64, 0.5) - 0.450327) < 1e-6
    assert abs(stats.binom_greater(46, 64, 0.5) - 0.000309) < 1e-6
    assert stats.binom_greater(0, 10, 0.3) == 1.0 and stats.binom_greater(11, 10, 0.3) == 0.0
    assert stats.mcnemar_greater(0, 0) == 1.0 and abs(stats.mcnemar_greater(6, 0) - 1 / 64) < 1e-12
    assert stats.discordant([True, True, False, False], [True, False, True, False]) == (1, 1)
    with pytest.raises(ValueError):
        stats.discordant([True], [True, False])


def test_student_t_known_values():
    assert abs(stats.t_quantile(1) - 12.7062) < 1e-3 and abs(stats.t_quantile(2) - 4.3027) < 1e-3
    assert abs(stats.t_quantile(30) - 2.0423) < 1e-3 and abs(stats.t_sf2(2.0, 5) - 0.10191) < 1e-4
    s = stats.summary([0.1, 0.2, 0.15])
    assert abs(s["ci95"][0] - 0.02579) < 1e-4 and s["n"] == 3
    assert stats.summary([0.3])["ci95"] is None and stats.summary([None])["n"] == 0
    t = stats.paired_t([0.1, 0.2, 0.15])
    assert abs(t["p_value"] - 0.0351) < 1e-3 and abs(t["effect_size"] - 3.0) < 1e-9


def test_bits_round_trip():
    for n in (0, 1, 5, 64, 67):
        rows = [(i * 7) % 3 == 0 for i in range(n)]
        assert stats.from_bits(stats.to_bits(rows), n) == rows


def test_a_run_stores_n_interval_and_bits_beside_every_accuracy(tmp_path):
    cfg = ExperimentConfig.from_dict(make_experiment(tmp_path / "exp", steps=2))
    run = run_experiment(cfg, tmp_path / "runs")
    m = json.loads((run.path / "metrics.json").read_text())
    for label, rec in m["methods"].items():
        assert rec["setting"]["lr"] == (cfg.methods[[x.label for x in cfg.methods].index(label)].lr or cfg.training.lr)
        for stage, row in enumerate(rec["matrix"]):
            for j, acc in enumerate(row):
                n, (lo, hi) = rec["matrix_n"][stage][j], rec["matrix_ci95"][stage][j]
                bits = stats.from_bits(rec["matrix_correct"][stage][j], n)
                assert sum(bits) / n == acc and (lo, hi) == pytest.approx(stats.wilson(sum(bits), n))
                assert lo <= acc <= hi and 0 < rec["matrix_pred_share"][stage][j] <= 1
    assert m["learnability"][0]["tests"] and all("p_value" in t for t in m["learnability"][0]["tests"].values())
