"""The statistics behind every interval and verdict, on cases with known answers."""

import json
import math

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
    # two-sided: symmetric, twice the smaller tail, capped at 1 (b = c: 1)
    assert abs(stats.mcnemar_two_sided(6, 0) - 1 / 32) < 1e-12
    assert stats.mcnemar_two_sided(0, 6) == stats.mcnemar_two_sided(6, 0)
    assert stats.mcnemar_two_sided(3, 3) == 1.0 and stats.mcnemar_two_sided(0, 0) == 1.0
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


def test_holm_on_a_hand_worked_family():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.04 becomes 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert stats.holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04], abs=1e-15)  # None is no test
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    # forgetting-study.md's section 1: 8 tests; its two headline p values do not survive the family
    adjusted = stats.holm([0.024, 0.038, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert adjusted[:2] == pytest.approx([0.192, 0.266]) and min(adjusted) > 0.05


def test_tost_on_constructed_equal_and_unequal_samples():
    # two differences ±1: mean 0, se 1, df 1 (Cauchy): each one-sided p = 1/2 − atan(3)/π
    assert stats.tost_paired([1.0, -1.0], 3.0) == pytest.approx(0.5 - math.atan(3) / math.pi, abs=1e-12)
    assert stats.tost_paired([0.5, -0.5, 0.2, -0.2, 0.1], 3.0) < 1e-3  # equal within the margin: equivalent
    assert stats.tost_paired([5.0, 6.0, 4.0, 5.5], 3.0) > 0.5  # 5 points apart: not equivalent within 3
    assert stats.tost_paired([0.5, -0.5, 0.2, -0.2, 0.1], 0.1) > 0.05  # a tighter margin than the spread allows


def test_a_difference_with_no_spread_is_no_test_never_p_zero():
    t = stats.paired_t([2.0, 2.0, 2.0])
    assert t["p_value"] is None and t["effect_size"] is None and t["mean"] == 2.0
    assert stats.tost_paired([2.0, 2.0, 2.0], 3.0) is None and stats.seeds_needed(2.0, 0.0, 3.0) is None
    # equal but for float rounding: (4 + 0.3) - (9 + 0.3) is not quite -5, and a t-test on it gave p ~ 1e-32
    diffs = [(4.0 + e) - (9.0 + e) for e in (0.3, -0.2, 0.1)]
    assert len(set(diffs)) > 1  # the rounding is there
    assert stats.paired_t(diffs)["p_value"] is None and stats.tost_paired(diffs, 3.0) is None
    assert stats.summary(diffs)["sd"] == 0.0 and stats.summary(diffs)["ci95"][0] == stats.summary(diffs)["ci95"][1]
    assert stats.paired_t([1e-9, 2e-9, 3e-9])["p_value"] is not None  # a small spread of small values is spread


def test_the_power_estimate_gives_the_seeds_that_would_decide():
    # effect size d = 1: a paired t-test at 0.05 needs 10 pairs for 80 % power (the textbook value)
    assert stats.seeds_needed(1.0, 1.0, 0.01) == 10
    n = stats.seeds_needed(1.0, 1.0, 0.01)
    for k, decides in ((n, True), (n - 1, False)):
        se = 1.0 / math.sqrt(k)
        assert (1.0 / se >= stats.t_quantile(k - 1, 0.95) + stats.t_quantile(k - 1, 0.6)) is decides
    assert stats.seeds_needed(0.0, 1.0, 3.0) == 3  # no difference, a wide margin: equivalence comes fast
    assert stats.seeds_needed(0.0, 1.0, 0.001, most=50) is None  # nothing to find, no room for equivalence


def test_isotonic_fits_non_monotone_points():
    assert stats.isotonic([1, 3, 2, 4]) == [1, 2.5, 2.5, 4]  # the violators pooled to their mean
    assert stats.isotonic([3, 1, 2]) == [2, 2, 2]
    assert stats.isotonic([1, 3, 2], increasing=False) == [2, 2, 2]
    assert stats.isotonic([3, 1], [3, 1]) == [2.5, 2.5]  # weighted by the seeds behind each mean
    assert stats.isotonic([1, 2, 5]) == [1, 2, 5]  # monotone points are left as they are


def test_the_bootstrap_is_seeded_and_brackets_its_statistic():
    def mean(xs):
        return sum(xs) / len(xs)

    ci = stats.bootstrap([1.0, 2.0, 3.0, 4.0], mean)
    assert ci == stats.bootstrap([1.0, 2.0, 3.0, 4.0], mean) and 1.0 <= ci[0] < 2.5 < ci[1] <= 4.0
    assert stats.bootstrap([1.0], mean) is None


def test_spearman_on_hand_worked_ranks():
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their average rank: x ranks 1, 2.5, 2.5, 4; y 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert stats.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert stats.spearman([1, 1, 1], [1, 2, 3]) is None and stats.spearman([1, 2], [1, 2]) is None


def test_spearman_within_groups_sees_past_what_the_groups_share():
    """Two settings far apart: across them x and y rise together (ρ 0.54), but inside each setting y runs against
    x — ranks within groups say so (ρ = −1 exactly), and the permutation p shuffles only within groups."""
    xs = [1, 2, 3, 10, 11, 12]
    ys = [3, 2, 1, 30, 20, 10]
    groups = ["a"] * 3 + ["b"] * 3
    assert stats.spearman(xs, ys) == pytest.approx(19 / 35)  # positive over every run
    rho, p, used = stats.spearman_within(xs, ys, groups, draws=999)
    assert rho == pytest.approx(-1.0) and used == 2
    # 36 orderings in all, 2 of them as extreme (both groups reversed or both in order): p near 2/36, never below
    # 1 / (1 + draws), and the same every time (seeded)
    assert 1 / 1000 <= p and p == pytest.approx(2 / 36, abs=0.03)
    assert stats.spearman_within(xs, ys, groups, draws=999) == (rho, p, used)
    # a group of one run carries nothing within; too few pairs or no spread within groups: no test
    assert stats.spearman_within(xs + [50], ys + [0], groups + ["c"], draws=99)[2] == 2
    assert stats.spearman_within([1, 2, 3], [1, 2, 3], ["a", "b", "c"]) == (None, None, 0)
    assert stats.spearman_within([1, 1, 2, 2], [1, 2, 3, 4], ["a", "a", "b", "b"])[0] is None  # x ties in groups
    ordered, p_ordered, _ = stats.spearman_within([1, 2, 3, 4, 1, 2, 3, 4], [5, 6, 7, 8, 1, 2, 3, 4],
                                                  ["a"] * 4 + ["b"] * 4, draws=999)
    assert ordered == pytest.approx(1.0) and p_ordered < 0.05  # 2 of 576 orderings as extreme
