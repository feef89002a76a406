"""The run's event log (events.jsonl): every kind of event, its fields, documented once and checked on write.

One JSON object per line, each with `t` (unix seconds) and `kind`. The runner writes them through `Run.log`,
which refuses an unknown kind, after the runner's `make` has refused a missing field (a typo would otherwise be a chart that silently stays empty);
the charts, the live view and the terminal printer read them by the names below, never by spelled strings.

    kind         fields                                                          written
    run_start    tasks, methods (labels)                                         each time a run starts or resumes
    stage_start  method, stage [, task]                                          before a stage trains or evaluates
    step         method, stage, task, step, steps, loss, smoothed_loss, lr,      every optimiser step
                 elapsed (seconds in this task)
    probe        method, stage, step, accuracy (per earlier task, probe rows)    every evaluation.probe_every steps
    stage        method, stage, accuracy, ppl, ppl_single_window [, task,         after a stage is measured
                 self_ppl, kl_to_base, chat_kl, facts, facts_n,
                 replies_unterminated, replies_repetitive, task_kl, steps,
                 final_loss, seconds, drift, n]
    note         message                                                         a probe is off for this run (why)
    error        method, message                                                 a method stopped (diverged, OOM)
    run_end      status, message                                                 the run ended (any way)
    repair       message                                                         the store mended a damaged run
    sweep        method, lr, ... (curlora/run/sweep.py)                          one learning-rate sweep run
    study_point  study, run_id, method, lr, seed                                 a study's run finished
"""

from __future__ import annotations

from curlora.errors import CurloraError

RUN_START, STAGE_START, STEP, PROBE, STAGE = "run_start", "stage_start", "step", "probe", "stage"
ERROR, RUN_END, REPAIR, SWEEP, STUDY_POINT = "error", "run_end", "repair", "sweep", "study_point"
NOTE = "note"

REQUIRED: dict[str, tuple[str, ...]] = {
    RUN_START: ("tasks", "methods"),
    STAGE_START: ("method", "stage"),
    STEP: ("method", "stage", "task", "step", "steps", "loss", "smoothed_loss", "lr", "elapsed"),
    PROBE: ("method", "stage", "step", "accuracy"),
    STAGE: ("method", "stage", "accuracy", "ppl", "ppl_single_window"),
    ERROR: ("method", "message"),
    RUN_END: ("status", "message"),
    REPAIR: ("message",),
    SWEEP: ("method", "lr"),
    STUDY_POINT: ("study", "run_id", "method", "lr", "seed"),
    NOTE: ("message",),
}


def check_kind(kind: str) -> tuple[str, ...]:
    """The fields an event of this kind must have; an unknown kind is refused (the store checks this much)."""
    need = REQUIRED.get(kind)
    if need is None:
        raise CurloraError(f"unknown event kind {kind!r}; the kinds are listed in curlora/run/events.py")
    return need


def make(kind: str, **fields) -> dict:
    """The event as stored (without its time stamp); an unknown kind or a missing field is a programming error.
    The runner builds every event through here."""
    need = check_kind(kind)
    missing = [f for f in need if f not in fields]
    if missing:
        raise CurloraError(f"a {kind} event needs {', '.join(missing)}")
    return {"kind": kind, **fields}


def of_kind(events: list[dict], *kinds: str) -> list[dict]:
    """The events of the given kinds, in order."""
    return [e for e in events if e.get("kind") in kinds]


def first(events: list[dict], kind: str) -> dict | None:
    return next((e for e in events if e.get("kind") == kind), None)


def last(events: list[dict], kind: str) -> dict | None:
    return next((e for e in reversed(events) if e.get("kind") == kind), None)
