"""The run's results as one typed record: what metrics.json holds, documented once, read by attribute.

    m = run.record()                        # Run.record(): the one place a stored metrics dict becomes a record
    m.methods["lora"].matrix[k][j]          # accuracy on task j after task k (row 0: the base model)
    m.to_json()                             # the stored form: the same keys metrics.json has always had

Fields (one list entry per stage, entry 0 = the base model before training):

    RunMetrics   run_id, tasks, scoring, forgetting_definition, probe {source, tokens, window, stride}, majority
                 (majority-class share per task), base (Row | None), methods {label: MethodRecord}, comparison
                 (equal_lr | matched_loss), and
                 self_probe   {texts, tokens, temperature, seed, file: "self_probe.json", reference: "full" |
                              "top-64"} | None (evaluation.self_probe off): curlora/measure/probes.py
                 chat_probe   {instructions, tokens, facts (k | None), fact_tokens, file: "chat_probe.json",
                              reference, ids [instruction ids]} | None (off, or a model without a chat template: a
                              "note" event says so): curlora/measure/chat_probe.py
                 task_kl      {rows, file: "task_kl.json", reference, prompts {task: n}} | None (off):
                              curlora/measure/task_kl.py
                 learnability [{task, majority, base | None, head_only | None, after_training {label: accuracy},
                              learned_by [label], verdict (a plain sentence)}], one per task in task order
                              (probes.learnability)
    Row          accuracy [per task], ppl, ppl_single_window, self_ppl, kl_to_base, n [rows scored per task],
                 ci95 [[lo, hi] Wilson 95 % per task], correct [per-row correctness per task, hex bits:
                 curlora/measure/stats.py], pred_share [share of the most predicted class per task], the chat
                 probe's chat_kl, facts (k right), facts_n, facts_correct (hex bits), replies_unterminated,
                 replies_repetitive (curlora/measure/chat_probe.py), task_kl (KL to the base on the prompts of the
                 task just trained: curlora/measure/task_kl.py; null at stage 0)
    MethodRecord kind, setting (what was set for it: lr, r, …), status (pending | running | completed | failed |
                 cancelled), message, rows [Row per stage], drift [{total, per_matrix} per stage], train
                 [TrainRecord], trainable, head_trainable, peak_memory_bytes, summary (ACC/BWT/FWT/forgetting/
                 plasticity), ppl_relative (ppl / the base's). Stored with the rows as per-stage lists (STAGE_LISTS),
                 one entry per stage each: matrix (Row.accuracy), matrix_n, matrix_ci95, matrix_correct,
                 matrix_pred_share (Row n, ci95, correct, pred_share), ppl, ppl_single_window, self_ppl, kl_to_base
                 and the STAGE_PROBES lists (chat_kl, facts, facts_n, facts_correct, replies_unterminated,
                 replies_repetitive, task_kl); read by attribute too (rec.matrix, rec.kl_to_base)
    TrainRecord  task, steps, final_loss, seconds, smoothed_loss, lr, target_loss, reached (target_loss and
                 reached: None under equal_lr and for the matched_loss reference method itself), trained_on (the
                 tasks whose rows the stage trained on as its own: the task; joint: every task so far),
                 replayed_per_batch (earlier tasks' rows in every batch under experience replay; 0: none); one per
                 trained task (no entry 0)

Per stage: self_ppl is None when the self probe is off; kl_to_base, chat_kl and drift are 0 at entry 0 (drift
{"total": 0.0, "per_matrix": {}}, per_matrix {matrix name: ‖ΔW‖/‖W‖}: probes.weight_drift); task_kl is None at entry
0; the chat probe's fields are None where it is off. The `stage` event carries a Row's fields but the per-row bits
(Row.event, curlora/run/events.py) and the drift's total.

This docstring is the one place the metrics.json schema is written; other modules point here.

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


# The per-stage lists metrics.json stores for a method, in their stored order, each with the Row field it holds:
# MethodRecord keeps a list of Rows and writes these lists from them (and reads them back into Rows).
STAGE_LISTS = {"matrix": "accuracy", "matrix_n": "n", "matrix_ci95": "ci95", "matrix_correct": "correct",
               "matrix_pred_share": "pred_share", "ppl": "ppl", "ppl_single_window": "ppl_single_window",
               "self_ppl": "self_ppl", "kl_to_base": "kl_to_base", **{name: name for name in STAGE_PROBES}}


def _stage_list(name: str):
    field_name = STAGE_LISTS[name]

    def get(self) -> list:
        return [getattr(r, field_name) for r in self.rows]

    return property(get, doc=f"The per-stage list `{name}` as stored: each Row's `{field_name}` (read-only).")


@dataclass(init=False)
class MethodRecord:
    """One method's results: one Row per stage (entry 0: the base model) with the weight drift beside each, and what
    is not per stage. The stored per-stage lists (STAGE_LISTS: matrix, ppl, kl_to_base, …) read as properties."""
    kind: str = ""
    setting: dict = field(default_factory=dict)
    status: str = "pending"
    message: str | None = None
    rows: list[Row] = field(default_factory=list)
    drift: list = field(default_factory=list)
    train: list[TrainRecord] = field(default_factory=list)
    trainable: int = 0
    head_trainable: int | None = None
    peak_memory_bytes: int | None = None
    summary: dict = field(default_factory=dict)
    ppl_relative: list | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def __init__(self, kind: str = "", setting: dict | None = None, status: str = "pending",
                 message: str | None = None, rows: list[Row] | None = None, drift: list | None = None,
                 train: list[TrainRecord] | None = None, trainable: int = 0, head_trainable: int | None = None,
                 peak_memory_bytes: int | None = None, summary: dict | None = None, ppl_relative: list | None = None,
                 extra: dict | None = None, **lists):
        """`rows`, or the stored per-stage lists by name (matrix=…, ppl=…: what a test or an old caller gives); a
        list left out reads None at every stage."""
        unknown = set(lists) - set(STAGE_LISTS)
        if unknown:
            raise TypeError(f"MethodRecord got unexpected keyword arguments {sorted(unknown)}")
        self.kind, self.status, self.message = kind, status, message
        self.setting = setting if setting is not None else {}
        self.rows = list(rows) if rows is not None else _rows(lists)
        self.drift = drift if drift is not None else [None] * len(self.rows)
        self.train = train if train is not None else []
        self.trainable, self.head_trainable, self.peak_memory_bytes = trainable, head_trainable, peak_memory_bytes
        self.summary = summary if summary is not None else {}
        self.ppl_relative = ppl_relative
        self.extra = extra if extra is not None else {}

    @property
    def stages_done(self) -> int:
        return max(0, len(self.rows) - 1)

    @property
    def seconds(self) -> float:
        return sum(t.seconds or 0 for t in self.train)

    def append(self, row: Row, drift: dict) -> None:
        """The next stage: one Row more (a copy, its accuracy list its own), and its drift."""
        self.rows.append(dataclasses.replace(row, accuracy=list(row.accuracy)))
        self.drift.append(drift)

    def targets(self) -> tuple[list[TrainRecord], list[TrainRecord]]:
        """(the tasks trained towards a target loss, those of them that missed it): matched-loss runs."""
        aimed = [t for t in self.train if t.target_loss is not None]
        return aimed, [t for t in aimed if t.reached is False]

    def row(self, stage: int) -> Row:
        """Stage `stage` as a Row (what `append` added for it; an empty Row past the last stage)."""
        return dataclasses.replace(self.rows[stage]) if -len(self.rows) <= stage < len(self.rows) else Row()

    def cell(self, stage: int, task: int) -> dict:
        """One accuracy cell with what backs it (Row.cell)."""
        return self.row(stage).cell(task)

    def last(self, name: str):
        """The last non-None entry of a per-stage list (self_ppl, kl_to_base, chat_kl…), or None."""
        return next((x for x in reversed(getattr(self, name)) if x is not None), None)

    @classmethod
    def from_json(cls, data: dict) -> MethodRecord:
        """The stored form; a per-stage list a run stored before it existed reads None at every stage."""
        known, extra = _known(cls, data or {})
        lists = {name: v for name, v in (data or {}).items() if name in STAGE_LISTS}
        extra = {k: v for k, v in extra.items() if k not in STAGE_LISTS}
        if "rows" in known:  # not a stored key: kept as an unknown one
            extra["rows"] = known.pop("rows")
        rows = _rows(lists)
        rec = cls(**{k: v for k, v in known.items() if k not in ("train", "extra", "rows", "drift")}, rows=rows,
                  drift=known.get("drift") or [None] * len(rows), extra=extra)
        rec.train = [TrainRecord(**_known(TrainRecord, t)[0]) for t in known.get("train") or []]
        return rec

    def to_json(self) -> dict:
        """The stored form: the keys metrics.json has always had, in their order (the per-stage lists in place of
        `rows`, `train` last); None values left out, unknown keys kept (first)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "rows":
                out.update({name: getattr(self, name) for name in STAGE_LISTS})
            elif f.name not in ("extra", "train"):
                out[f.name] = getattr(self, f.name)
        out["train"] = [dataclasses.asdict(t) for t in self.train]
        return {**self.extra, **{k: v for k, v in out.items() if v is not None}}


def _rows(lists: dict) -> list[Row]:
    """Rows from the stored per-stage lists: one per entry of the accuracy matrix, the list that says which stages
    finished (a stored run's lists are all as long; a partial record's may not be: a shorter or missing list reads
    None there, and entries of a longer one past the matrix belong to no finished stage). Without a matrix, as many
    as the longest list has (an accuracy: [])."""
    matrix = lists.get("matrix")
    n = len(matrix) if isinstance(matrix, list) else \
        max((len(v) for v in lists.values() if isinstance(v, list)), default=0)

    def at(name, stage):
        values = lists.get(name)
        return values[stage] if isinstance(values, list) and stage < len(values) else None

    return [Row(**{**{STAGE_LISTS[name]: at(name, i) for name in STAGE_LISTS}, "accuracy": at("matrix", i) or []})
            for i in range(n)]


for _name in STAGE_LISTS:
    setattr(MethodRecord, _name, _stage_list(_name))
del _name


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
        """A record from a dict that does not come from a run folder (a test's fixture, a payload), or the record
        itself. The engine and the UI never call it: a stored metrics.json is read through Run.record(), and every
        reader takes a Run or a RunMetrics."""
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
