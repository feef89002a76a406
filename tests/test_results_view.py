"""The Results tab shows stored numbers only, including the drift probes and the learnability verdicts."""

from curlora.measure.record import RunMetrics
from curlora.ui.results_tab import SUMMARY_HEADERS, notes, summary_rows

METRICS = RunMetrics.of({
    "tasks": ["a", "b"], "scoring": "likelihood", "forgetting_definition": "Chaudhry", "majority": [0.5, 0.6],
    "probe": {"source": "/x/probe.txt", "tokens": 100, "window": 32},
    "base": {"ppl": 50.0},
    "learnability": [{"task": "b", "verdict": "No method learned b: stay at the majority class 60.0%."}],
    "methods": {"curlora": {
        "status": "completed", "kind": "curlora", "trainable": 128, "ppl": [50.0, 51.25],
        "summary": {"acc": 0.7, "bwt": -0.05, "fwt": 0.0, "forgetting": 0.05, "plasticity": 0.75},
        "self_ppl": [60.0, 61.5], "kl_to_base": [0.0, 0.0123], "drift": [{"total": 0.0}, {"total": 0.0456}],
        "train": [{"seconds": 3.2}], "peak_memory_bytes": 2**20,
    }},
})


def test_summary_row_carries_the_stored_probe_numbers():
    (row,) = summary_rows(METRICS)
    cells = dict(zip(SUMMARY_HEADERS, row))
    assert cells["ACC %"] == "70.0" and cells["BWT"] == "-5.0" and cells["ppl base → final"] == "50.00 → 51.25"
    assert cells["self-ppl base → final"] == "60.00 → 61.50"
    assert cells["KL to base"] == "0.0123" and cells["weight drift"] == "0.0456"


def test_notes_state_the_scoring_and_say_when_no_method_learned_a_task():
    text = notes(METRICS)
    assert "**Scoring:** likelihood" in text and "No method learned b" in text
