"""The run's results as one typed record: what metrics.json holds, documented once, read by attribute.

    m = RunMetrics.of(run.metrics())        # or Run.record(); a dict (as stored, or partial in a test) or a record
    m.methods["lora"].matrix[k][j]          # accuracy on task j after task k (row 0: the base model)
    m.to_json()                             # the stored form: the same keys metrics.json has always had

Fields (one list entry per stage, entry 0 = the base model before training):

    RunMetrics   run_id, tasks, scoring, forgetting_definition, probe {source, tokens, window, stride}, majority
                 (majority-class share per task), base (Row | None), methods {label: MethodRecord}, self_probe
                 (settings of the self-sampled probe | None), chat_probe (settings of the chat probe | None),
                 task_kl (settings of the new-task KL | None), comparison (equal_lr | matched_loss), learnability
    Row          accuracy [per task], ppl, ppl_single_window, self_ppl, kl_to_base, n [rows scored per task],
                 ci95 [[lo, hi] Wilson 95 % per task], correct [per-row correctness per task, hex bits:
                 curlora/measure/stats.py], pred_share [share of the most predicted class per task], the chat
                 probe's chat_kl, facts (k right), facts_n, facts_correct (hex bits), replies_unterminated,
                 replies_repetitive (curlora/measure/chat_probe.py), task_kl (KL to the base on the prompts of the
                 task just trained: curlora/measure/task_kl.py; null at stage 0)
    MethodRecord kind, setting (what was set for it: lr, r, …), status (pending | running | completed | failed |
                 cancelled), message, matrix, matrix_n, matrix_ci95, matrix_correct, matrix_pred_share (the Row
                 lists per stage, beside matrix), ppl,
                 ppl_single_window, self_ppl, kl_to_base, the STAGE_PROBES lists (chat_kl, facts, facts_n,
                 facts_correct, replies_unterminated, replies_repetitive, task_kl: one entry per stage, like
                 kl_to_base), drift [{total, per_matrix}], train [TrainRecord],
                 trainable, head_trainable, peak_memory_bytes, summary (ACC/BWT/FWT/forgetting/plasticity),
                 ppl_relative (ppl / the base's)
    TrainRecord  task, steps, final_loss, seconds, smoothed_loss, lr, target_loss, reached, trained_on (the tasks
                 whose rows the stage trained on as its own: the task; joint: every task so far), replayed_per_batch
                 (earlier tasks' rows in every batch under experience replay; 0: none)

Old run folders load as they are: a field a run stored before it existed reads as its default (the drift probes'
lists as None per stage). Unknown keys are kept and written back, so nothing a newer version stored is lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from curlora.measure.stats import from_bits


def _known(cls, data: dict) -> tuple[dict, dict]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


@dataclass
class TrainRecord:
    task: str = ""
    steps: int = 0
    final_loss: float | None = None
    seconds: float = 0.0
    smoothed_loss: float | None = None
    lr: float | None = None
    target_loss: float | None = None
    reached: bool | None = None
    trained_on: list[str] | None = None
    replayed_per_batch: int = 0


NO_DRIFT = {"total": 0.0, "per_matrix": {}}  # the weight drift of an unchanged model
# Per-stage measures of the chat probe and the new-task KL: a Row field and a MethodRecord list of the same name each
# (None where a probe is off, and in runs stored before they existed).
STAGE_PROBES = ("chat_kl", "facts", "facts_n", "facts_correct", "replies_unterminated", "replies_repetitive",
                "task_kl")


@dataclass
class Row:
    """One stage's measures of one model: what `MethodRecord.append` adds as the next entry of every list."""
    accuracy: list = field(default_factory=list)
    ppl: float | None = None
    ppl_single_window: float | None = None
    self_ppl: float | None = None
    kl_to_base: float | None = None
    n: list | None = None
    ci95: list | None = None
    correct: list | None = None
    pred_share: list | None = None
    chat_kl: float | None = None
    facts: int | None = None
    facts_n: int | None = None
    facts_correct: str | None = None
    replies_unterminated: int | None = None
    replies_repetitive: int | None = None
    task_kl: float | None = None

    @classmethod
    def from_json(cls, data: dict) -> Row:
        return cls(**_known(cls, data or {})[0])

    def cell(self, task: int) -> dict:
        """One task's accuracy with what backs it: {accuracy, n, ci95, correct (list of bool) | None, pred_share}."""
        def at(values):
            return values[task] if values is not None and task < len(values) else None

        acc, n, bits = at(self.accuracy), at(self.n), at(self.correct)
        return {"accuracy": acc, "n": n, "ci95": at(self.ci95), "pred_share": at(self.pred_share),
                "correct": from_bits(bits, n) if bits is not None and n else None}

    def event(self) -> dict:
        """The fields a `stage` event carries (curlora/run/events.py): all but the per-row bits."""
        out = dataclasses.asdict(self)
        out.pop("correct")
        out.pop("facts_correct")
        return out

    @property
    def facts_accuracy(self) -> float | None:
        """The chat probe's share of factual questions answered right (None when it did not run)."""
        return self.facts / self.facts_n if self.facts is not None and self.facts_n else None


@dataclass
class MethodRecord:
    kind: str = ""
    setting: dict = field(default_factory=dict)
    status: str = "pending"
    message: str | None = None
    matrix: list = field(default_factory=list)
    matrix_n: list = field(default_factory=list)
    matrix_ci95: list = field(default_factory=list)
    matrix_correct: list = field(default_factory=list)
    matrix_pred_share: list = field(default_factory=list)
    ppl: list = field(default_factory=list)
    ppl_single_window: list = field(default_factory=list)
    self_ppl: list = field(default_factory=list)
    kl_to_base: list = field(default_factory=list)
    chat_kl: list = field(default_factory=list)
    facts: list = field(default_factory=list)
    facts_n: list = field(default_factory=list)
    facts_correct: list = field(default_factory=list)
    replies_unterminated: list = field(default_factory=list)
    replies_repetitive: list = field(default_factory=list)
    task_kl: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    train: list[TrainRecord] = field(default_factory=list)
    trainable: int = 0
    head_trainable: int | None = None
    peak_memory_bytes: int | None = None
    summary: dict = field(default_factory=dict)
    ppl_relative: list | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def stages_done(self) -> int:
        return max(0, len(self.matrix) - 1)

    @property
    def seconds(self) -> float:
        return sum(t.seconds or 0 for t in self.train)

    def append(self, row: Row, drift: dict) -> None:
        """The next stage: one entry more in each per-stage list."""
        self.matrix.append(list(row.accuracy))
        self.matrix_n.append(row.n)
        self.matrix_ci95.append(row.ci95)
        self.matrix_correct.append(row.correct)
        self.matrix_pred_share.append(row.pred_share)
        self.ppl.append(row.ppl)
        self.ppl_single_window.append(row.ppl_single_window)
        self.self_ppl.append(row.self_ppl)
        self.kl_to_base.append(row.kl_to_base)
        for name in STAGE_PROBES:
            getattr(self, name).append(getattr(row, name))
        self.drift.append(drift)

    def targets(self) -> tuple[list[TrainRecord], list[TrainRecord]]:
        """(the tasks trained towards a target loss, those of them that missed it): matched-loss runs."""
        aimed = [t for t in self.train if t.target_loss is not None]
        return aimed, [t for t in aimed if t.reached is False]

    def row(self, stage: int) -> Row:
        """Stage `stage` as a Row (what `append` added for it)."""
        def at(lists):
            return lists[stage] if stage < len(lists) else None

        return Row(accuracy=at(self.matrix) or [], ppl=at(self.ppl), ppl_single_window=at(self.ppl_single_window),
                   self_ppl=at(self.self_ppl), kl_to_base=at(self.kl_to_base), n=at(self.matrix_n),
                   ci95=at(self.matrix_ci95), correct=at(self.matrix_correct), pred_share=at(self.matrix_pred_share),
                   **{name: at(getattr(self, name)) for name in STAGE_PROBES})

    def cell(self, stage: int, task: int) -> dict:
        """One accuracy cell with what backs it (Row.cell)."""
        return self.row(stage).cell(task)

    def last(self, name: str):
        """The last non-None entry of a per-stage list (self_ppl, kl_to_base, chat_kl…), or None."""
        return next((x for x in reversed(getattr(self, name)) if x is not None), None)

    @classmethod
    def from_json(cls, data: dict) -> MethodRecord:
        known, extra = _known(cls, data or {})
        rec = cls(**{k: v for k, v in known.items() if k not in ("train", "extra")}, extra=extra)
        rec.train = [TrainRecord(**_known(TrainRecord, t)[0]) for t in known.get("train") or []]
        n = len(rec.matrix)
        for name in ("self_ppl", "kl_to_base", "drift", "matrix_n", "matrix_ci95", "matrix_correct",
                     "matrix_pred_share", *STAGE_PROBES):  # a run stored before these probes: no numbers
            if not getattr(rec, name):
                setattr(rec, name, [None] * n)
        return rec

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "train")}
        out["train"] = [dataclasses.asdict(t) for t in self.train]
        return {**self.extra, **{k: v for k, v in out.items() if v is not None}}


@dataclass
class RunMetrics:
    run_id: str = ""
    tasks: list[str] = field(default_factory=list)
    scoring: str = ""
    forgetting_definition: str = ""
    probe: dict = field(default_factory=dict)
    majority: list = field(default_factory=list)
    base: Row | None = None
    methods: dict[str, MethodRecord] = field(default_factory=dict)
    self_probe: dict | None = None
    chat_probe: dict | None = None
    task_kl: dict | None = None
    comparison: str = "equal_lr"
    learnability: list = field(default_factory=list)
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: RunMetrics | dict | None) -> RunMetrics:
        return data if isinstance(data, RunMetrics) else cls.from_json(data or {})

    @classmethod
    def from_json(cls, data: dict) -> RunMetrics:
        known, extra = _known(cls, data)
        out = cls(**{k: v for k, v in known.items() if k not in ("base", "methods", "extra")}, extra=extra)
        if known.get("base"):
            out.base = Row.from_json(known["base"])
        out.methods = {label: MethodRecord.from_json(rec) for label, rec in (known.get("methods") or {}).items()}
        out.learnability = out.learnability or []
        return out

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra",)}
        out["base"] = dataclasses.asdict(self.base) if self.base is not None else None
        out["methods"] = {label: rec.to_json() for label, rec in self.methods.items()}
        return {**self.extra, **out}

    def __bool__(self) -> bool:
        """Whether anything was recorded yet (an unstarted or damaged run reads empty)."""
        return bool(self.tasks or self.methods)
