"""Continual-learning metrics on hand-made matrices, worked out by hand."""

import pytest

from curlora.measure.metrics import majority_share, stage_count, summarize

# Three tasks. Row 0 = base; row i = after training task i.
R = [
    [0.50, 0.40, 0.30],
    [0.90, 0.50, 0.35],
    [0.70, 0.80, 0.45],
    [0.60, 0.75, 0.85],
]


def test_full_matrix_by_hand():
    m = summarize(R)
    assert m["stages"] == 3
    assert m["acc"] == pytest.approx((0.60 + 0.75 + 0.85) / 3)
    assert m["plasticity"] == pytest.approx((0.90 + 0.80 + 0.85) / 3)
    assert m["bwt"] == pytest.approx(((0.60 - 0.90) + (0.75 - 0.80)) / 2)
    assert m["fwt"] == pytest.approx(((0.50 - 0.40) + (0.45 - 0.30)) / 2)
    # Best-ever minus final: task 0 peaked at 0.90 (stage 1), task 1 at 0.80 (stage 2).
    assert m["forgetting"] == pytest.approx(((0.90 - 0.60) + (0.80 - 0.75)) / 2)


def test_forgetting_is_negative_and_bwt_positive_when_later_training_helps():
    m = summarize([[0.5, 0.5], [0.7, 0.6], [0.8, 0.9]])
    assert m["forgetting"] == pytest.approx(-0.1)  # Chaudhry's max runs over earlier stages only
    assert m["bwt"] == pytest.approx(0.1)


def test_partial_run_uses_the_last_finished_stage():
    partial = [R[0], R[1], [0.7, None, None]]
    assert stage_count(partial) == 1
    m = summarize(partial)
    assert m["stages"] == 1 and m["acc"] == pytest.approx(0.90) and m["plasticity"] == pytest.approx(0.90)
    assert m["bwt"] is None and m["fwt"] is None and m["forgetting"] is None


def test_head_mode_matrix_has_no_entries_for_untrained_tasks():
    m = summarize([[None, None], [0.8, None], [0.7, 0.9]])
    assert m["stages"] == 2 and m["acc"] == pytest.approx(0.8) and m["fwt"] is None
    assert m["bwt"] == pytest.approx(-0.1)
    three = summarize([[None] * 3, [0.8, None, None], [0.7, 0.9, None], [0.6, 0.5, 0.9]])
    assert three["forgetting"] == pytest.approx(((0.8 - 0.6) + (0.9 - 0.5)) / 2)


def test_base_only():
    m = summarize([[0.5, 0.4]])
    assert m["stages"] == 0 and m["acc"] is None


def test_a_method_that_learns_nothing_forgets_nothing():
    flat = [[0.6, 0.5, 0.7]] * 4
    m = summarize(flat)
    assert m["bwt"] == 0 and m["forgetting"] == 0 and m["fwt"] == 0
    assert m["plasticity"] == pytest.approx(0.6)


def test_ragged_matrix_is_refused():
    with pytest.raises(ValueError):
        summarize([[0.5, 0.5], [0.6]])


def test_majority_share():
    assert majority_share([0, 1, 1, 1]) == 0.75
    assert majority_share([2, 2]) == 1.0
