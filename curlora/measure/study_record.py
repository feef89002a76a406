"""A study's results as one typed record: what study.json holds, documented once, read by attribute.

    rec = StudyRecord.of(study.study_json())    # or Study.study_record(); a dict (as stored) or a record
    rec.groups["lora@1e-3"].learning.mean       # a measure of one (method, lr) over its seeds
    rec.point_run_ids()                         # the runs of the study's points made so far, in plan order
    rec.to_json()                               # the stored form: the keys study.json has always had

Fields:

    StudyRecord  settings (StudySettings: lrs {method: [lr, ...]}, seeds, kl_budget, margin) with notes
                 (best_rule, interpolation, family: how the analysis chose, fitted and adjusted), base (Row | None:
                 the shared row 0), plan [PlanEntry], points [Point], groups {key "method@lr": Group}, frontier
                 {method: [keys]}, chat_frontier {method: [keys]} (learning against chat_kl, where the chat probe
                 ran), best {method: Best | None}, comparison [Comparison] (and comparison_top, comparison_known,
                 comparison_chat: the other families), against_base [AgainstBase], at_chosen [AtChosen], tasks (in
                 training order),
                 warnings (e.g. the only learnable task comes last), order_effect [OrderEffect: each method under
                 each task order], probes [ProbeTrack: Spearman's ρ of each drift probe with forgetting over runs],
                 probes_known [ProbeTrack: the same against forgetting of what each run knew],
                 reanalysis (Reanalysis | None: set when the analysis was recomputed from a stored study.json by
                 `curlora study --analyse`, nothing retrained; absent from a study's own study.json)
    PlanEntry    method, lr, seed, run_id | None, status (pending | running | completed | cancelled | failed),
                 in the order the points run (seed-major)
    Point        one finished run: method, lr, seed, run_id, setting, and the measures
                   learning          mean over tasks of (accuracy right after training the task − the better of
                                     the majority-class share and the base model), in points (×100)
                   forgetting        Chaudhry et al. (2018), mean over earlier tasks, points
                   bwt, acc          backward transfer and final average accuracy, points
                   kl_to_base        mean per-token KL(base ‖ model) on the self-sampled texts after the last task
                   self_ppl_ratio    self-probe perplexity after the last task / the base's (the model's domain)
                   probe_ppl_ratio   perplexity on the probe text / the base's (maybe out of domain)
                   chat_kl           the chat probe's KL(base ‖ model) on the base's chat replies after the last task
                                     (curlora/measure/chat_probe.py; None when the probe is off)
                   facts             factual questions answered right after the last task, points (×100)
                   facts_base        the base model's, in the same run (what `against_base` pairs it with)
                   replies_unterminated, replies_repetitive   of the model's own chat replies after the last
                                     task: how many never end their turn, how many repeat themselves
                   task_kl           mean over the tasks of the KL to the base on the prompts of the task just
                                     trained, measured right after training it (curlora/measure/task_kl.py)
                   final_loss        [per task] the last training loss
                   constant_predictions  [tasks] where ≥ 95 % of eval rows got one class right after training it
                   learned           [tasks] learned by the one-sided test of curlora/measure/probes.py
                   learned_earlier   how many earlier tasks (all but the last) it learned by that test
                   forgetting_learned, bwt_learned   forgetting and BWT over those earlier tasks only, points
                   known_earlier     how many earlier tasks the run knew right after training each: above the
                                     majority-class share by the exact binomial at p < 0.05 (learned, or already
                                     solved by the base: a pretrained model's own ability counts)
                   forgetting_known  forgetting over those earlier tasks only, points
                   learning_val, learning_test   learning on the validation half of each task's eval rows (seeded
                                     by the task's name; it picks the best lr) and on the test half (reported)
    Group        one (method, lr): method, lr, setting, seeds, run_ids, each measure as a Summary over seeds,
                 constant_predictions (the union over seeds)
    Summary      mean, ci95 [lo, hi] | None (Student t over seeds; none from one seed), n, sd
    Best         key, lr, rule, chosen (why this one)
    Comparison   does a forget less than b at matched learning? methods [a, b], learning (the matched level:
                 the middle of what both methods' monotone fits reach | None), forgetting, kl_to_base,
                 forgetting_learned, forgetting_known, chat_kl, facts and probe_ppl_ratio {method: Interpolated |
                 None} (each read off its own monotone fit in lr, with a bootstrap interval over seeds), measure (the
                 one compared: forgetting, forgetting_known in the family of what each run knew, chat_kl, facts or
                 probe_ppl_ratio in the general-ability family: there `less` means A loses less of the base model),
                 difference (that measure a − b, likewise), nearest {method: group key}, paired (Paired | None: the
                 runs paired by seed at the nearest settings), rows (RowsTest | None), intervals_overlap, verdict
                 (less | more | equivalent | inconclusive | nothing learned), p, p_adjusted (Holm within `family`),
                 tost_p, margin, seeds_needed, family, sentence
    AgainstBase  one setting against the base model on facts or WikiText-2 perplexity (does it keep the base's
                 abilities?): key, method, lr, measure, base, value, change (run − its seed's base, mean over runs)
                 with ci95, n, sd, p, p_adjusted (Holm over every setting and measure), tost_p, margin, verdict
                 (keeps | loses | gains | inconclusive), family, sentence
    AtChosen     two methods each at its own chosen learning rate on one measure, paired over seed × order:
                 methods, keys, settings, measure, means, difference (a − b) with ci95, n, sd, p, p_adjusted (Holm
                 within the measure's family), tost_p, margin, verdict (more | less | equivalent | inconclusive),
                 family, sentence

Unknown keys are kept and written back (as in curlora/measure/record.py), so nothing a newer version stored is lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from curlora.errors import CurloraError
from curlora.measure.describe import lr_text
from curlora.measure.record import Row

MEASURES = ("learning", "forgetting", "bwt", "acc", "kl_to_base", "self_ppl_ratio", "probe_ppl_ratio",
            "forgetting_learned", "bwt_learned", "learning_val", "learning_test", "chat_kl", "facts",
            "replies_unterminated", "replies_repetitive", "task_kl", "forgetting_known")
# the range a measure can take: a Student-t interval over a few runs can reach past it (facts below 0 %, a KL below
# 0), so what is shown clips the interval's ends to it (Summary.within) and says so; the stored interval is the raw one
RANGES = {"facts": (0.0, 100.0), "chat_kl": (0.0, None), "kl_to_base": (0.0, None), "task_kl": (0.0, None),
          "probe_ppl_ratio": (0.0, None), "self_ppl_ratio": (0.0, None), "replies_unterminated": (0.0, None),
          "replies_repetitive": (0.0, None), "acc": (0.0, 100.0)}
CLIPPED = ("Intervals are 95 % Student t over runs, their ends clipped to the measure's range (accuracy and facts "
           "0–100 %, KL, perplexity ratios and reply counts at least 0).")


def within(ci95: list | None, measure: str | None) -> list | None:
    """A 95 % interval with its ends clipped to the range `measure` can take (RANGES; unchanged for a measure
    without one, e.g. learning, which can fall below 0)."""
    if not ci95:
        return ci95
    low, high = RANGES.get(measure, (None, None))
    lo, hi = ci95
    return [lo if low is None else max(lo, low), hi if high is None else min(hi, high)]


VERDICTS = ("less", "more", "equivalent", "inconclusive", "nothing learned")
DEFAULT_MARGIN = 3.0  # points of forgetting within which two methods count as forgetting the same (TOST)


def _known(cls, data: dict) -> tuple[dict, dict]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _plain(obj) -> dict:
    """A flat record as stored: its fields, then the unknown keys it was read with."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "extra"}
    return {**obj.extra, **out}


class Flat:
    """A flat record: its dataclass fields, plus the unknown keys it was read with (`extra`), kept on write."""

    optional: ClassVar[bool] = False  # True: an empty or absent record reads as None

    @classmethod
    def from_json(cls, data: dict | None):
        if cls.optional and not data:
            return None
        known, extra = _known(cls, data)
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        return _plain(self)


def key(label: str, lr: float) -> str:
    """The key of one (method, lr) group: 'lora@1e-3'."""
    return f"{label}@{lr_text(lr)}"


@dataclass
class StudySettings:
    """The grid a user asks for (a `study:` section, the CLI's flags, the Compare tab)."""
    lrs: dict[str, list[float]] = field(default_factory=dict)  # method label -> grid
    seeds: list[int] = field(default_factory=lambda: [0])
    kl_budget: float | None = None
    margin: float = DEFAULT_MARGIN  # the equivalence margin of the verdict, in points of forgetting
    orders: list[list[str]] | None = None  # task orders, each a list of the experiment's task names (None: its own)
    permutations: int | None = None  # or this many orders: the experiment's own, then seeded shuffles of it
    replays: list[float] = field(default_factory=list)  # replay shares: an axis (study_plan.with_replays)
    # each seed draws its own training and eval rows (every task's seed is the run's seed) and has its own base row,
    # so the seed spread includes eval-row sampling; off: every seed is scored on the same rows
    rows_per_seed: bool = False

    KEYS = ("lrs", "seeds", "kl_budget", "margin", "orders", "permutations", "replays", "rows_per_seed")

    @classmethod
    def from_dict(cls, data: dict | None) -> StudySettings:
        data = dict(data or {})
        unknown = set(data) - set(cls.KEYS)
        if unknown:
            raise CurloraError(f"study: unknown setting(s) {', '.join(sorted(unknown))}; the settings are lrs, "
                               "seeds, kl_budget, margin, orders, permutations, replays and rows_per_seed.")
        if not isinstance(data.get("rows_per_seed", False), bool):
            raise CurloraError(f"study.rows_per_seed: give true or false (got {str(data['rows_per_seed'])[:40]}).")
        orders = data.get("orders")
        if orders is not None and not (isinstance(orders, list) and all(isinstance(o, list) for o in orders)):
            raise CurloraError("study.orders: give a list of task orders, each a list of task names, e.g. "
                               "[[mrpc, sst2], [sst2, mrpc]].")
        lrs = {str(k): [float(x) for x in (v if isinstance(v, list) else [v])]
               for k, v in (data.get("lrs") or {}).items()}
        margin = data.get("margin")
        replays = data.get("replays") or []
        return cls(lrs=lrs, seeds=[int(s) for s in data.get("seeds", [0])], kl_budget=data.get("kl_budget"),
                   margin=DEFAULT_MARGIN if margin is None else margin,
                   orders=None if orders is None else [[str(t) for t in o] for o in orders],
                   permutations=data.get("permutations"),
                   replays=[float(x) for x in (replays if isinstance(replays, list) else [replays])],
                   rows_per_seed=bool(data.get("rows_per_seed", False)))

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "seeds": self.seeds, "kl_budget": self.kl_budget, "margin": self.margin,
                "orders": self.orders, "permutations": self.permutations, "replays": self.replays,
                "rows_per_seed": self.rows_per_seed}


@dataclass
class Summary:
    mean: float | None = None
    ci95: list | None = None
    n: int = 0
    sd: float | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: Summary | dict | None) -> Summary:
        if isinstance(data, Summary):
            return data
        known, extra = _known(cls, data or {})
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        return _plain(self)

    def within(self, measure: str | None) -> list | None:
        return within(self.ci95, measure)


@dataclass
class PlanEntry(Flat):
    method: str = ""
    lr: float = 0.0
    seed: int = 0
    run_id: str | None = None
    status: str = "pending"
    order: int = 0  # index into settings.orders (0: the experiment's own order when there are none)
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return key(self.method, self.lr)


@dataclass
class Point(Flat):
    method: str = ""
    lr: float = 0.0
    seed: int = 0
    run_id: str = ""
    setting: dict = field(default_factory=dict)
    order: int = 0  # index into settings.orders
    learning: float | None = None
    forgetting: float | None = None
    bwt: float | None = None
    acc: float | None = None
    kl_to_base: float | None = None
    self_ppl_ratio: float | None = None
    probe_ppl_ratio: float | None = None
    final_loss: list = field(default_factory=list)
    constant_predictions: list = field(default_factory=list)
    learned: list = field(default_factory=list)
    learned_earlier: int | None = None  # earlier tasks (all but the last) learned by the per-run test
    forgetting_learned: float | None = None  # forgetting over those only, points
    known_earlier: int | None = None  # earlier tasks above the majority class right after their own training
    forgetting_known: float | None = None  # forgetting over those only, points
    bwt_learned: float | None = None
    learning_val: float | None = None  # learning on the validation half of each task's eval rows (picks the lr)
    learning_test: float | None = None  # ... and on the other half, the test rows (reported for the chosen lr)
    chat_kl: float | None = None  # the chat probe after the last task (None: probe off)
    facts: float | None = None  # factual questions right after the last task, points
    facts_base: float | None = None  # the base model's facts right in the same run, points
    replies_unterminated: int | None = None
    replies_repetitive: int | None = None
    task_kl: float | None = None  # mean over tasks of the KL on the prompts of the task just trained
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return key(self.method, self.lr)

    @property
    def unit(self) -> tuple[int, int]:
        """The replicate this run is one of: (seed, task order). Runs pair, and the bootstrap draws, by it."""
        return self.seed, self.order


@dataclass
class Group:
    method: str = ""
    lr: float = 0.0
    setting: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)
    run_ids: list = field(default_factory=list)
    orders: list = field(default_factory=list)  # beside seeds: each run's task order
    learning: Summary = field(default_factory=Summary)
    forgetting: Summary = field(default_factory=Summary)
    bwt: Summary = field(default_factory=Summary)
    acc: Summary = field(default_factory=Summary)
    kl_to_base: Summary = field(default_factory=Summary)
    self_ppl_ratio: Summary = field(default_factory=Summary)
    probe_ppl_ratio: Summary = field(default_factory=Summary)
    forgetting_learned: Summary = field(default_factory=Summary)
    forgetting_known: Summary = field(default_factory=Summary)
    bwt_learned: Summary = field(default_factory=Summary)
    learning_val: Summary = field(default_factory=Summary)
    learning_test: Summary = field(default_factory=Summary)
    chat_kl: Summary = field(default_factory=Summary)
    facts: Summary = field(default_factory=Summary)
    replies_unterminated: Summary = field(default_factory=Summary)
    replies_repetitive: Summary = field(default_factory=Summary)
    task_kl: Summary = field(default_factory=Summary)
    constant_predictions: list = field(default_factory=list)
    extra: dict = field(default_factory=dict, repr=False)

    def measure(self, name: str) -> Summary:
        """One of MEASURES as its Summary over seeds."""
        if name not in MEASURES:
            raise KeyError(name)
        return getattr(self, name)

    def mean(self, name: str) -> float | None:
        return self.measure(name).mean

    @classmethod
    def of(cls, data: Group | dict) -> Group:
        if isinstance(data, Group):
            return data
        known, extra = _known(cls, data)
        for name in MEASURES:
            known[name] = Summary.of(known.get(name))
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        out = _plain(self)
        for name in MEASURES:
            out[name] = self.measure(name).to_json()
        return out


@dataclass
class Best(Flat):
    optional = True  # an empty or absent record reads as None
    key: str = ""
    lr: float = 0.0
    rule: str = ""
    chosen: str = ""
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Interpolated(Flat):
    """A measure along one method's frontier at the matched learning: mean and interval, between which groups."""
    optional = True  # an empty or absent record reads as None
    mean: float | None = None
    ci95: list | None = None
    between: list = field(default_factory=list)
    weight: float = 0.0
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Paired(Flat):
    """A paired t-test over the seeds both nearest groups ran (curlora/measure/stats.py paired_t)."""
    optional = True  # an empty or absent record reads as None
    seeds: list = field(default_factory=list)
    orders: list = field(default_factory=list)  # beside seeds: each pair's task order
    mean: float | None = None
    ci95: list | None = None
    n: int = 0
    sd: float | None = None
    p_value: float | None = None
    effect_size: float | None = None
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class RowsTest(Flat):
    """Exact McNemar over the earlier tasks' final rows of the nearest groups, pooled over seeds."""
    optional = True  # an empty or absent record reads as None
    rows: int = 0
    only_first_right: int = 0
    only_second_right: int = 0
    p_value: float | None = None
    p_adjusted: float | None = None
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Comparison:
    methods: list = field(default_factory=list)
    learning: float | None = None
    forgetting: dict[str, Interpolated | None] = field(default_factory=dict)
    kl_to_base: dict[str, Interpolated | None] = field(default_factory=dict)
    nearest: dict[str, str] = field(default_factory=dict)
    paired: Paired | None = None
    rows: RowsTest | None = None
    intervals_overlap: bool | None = None
    verdict: str | None = None  # one of VERDICTS: does methods[0] forget less than methods[1]?
    p: float | None = None  # the paired test's p (None: no test, or no spread to test)
    p_adjusted: float | None = None  # Holm-adjusted within `family`; the verdict and the sentence read this one
    tost_p: float | None = None  # equivalence within ±margin (two one-sided tests)
    margin: float | None = None
    seeds_needed: int | None = None  # inconclusive: the seeds a power estimate from the spread says would decide
    family: str | None = None  # the named family of tests the adjustment runs over
    difference: Interpolated | None = None  # forgetting methods[0] − methods[1] at the matched level
    forgetting_learned: dict[str, Interpolated | None] = field(default_factory=dict)
    forgetting_known: dict[str, Interpolated | None] = field(default_factory=dict)
    measure: str = "forgetting"  # what `difference`, the paired test and the verdict compare
    chat_kl: dict[str, Interpolated | None] = field(default_factory=dict)  # the chat probe at matched learning
    facts: dict[str, Interpolated | None] = field(default_factory=dict)
    probe_ppl_ratio: dict[str, Interpolated | None] = field(default_factory=dict)  # WikiText-2 ppl / the base's
    # "log" for a ratio (RATIOS): the pairs tested on log(a / b); paired.mean and ci95 are a's over b's less 1
    scale: str = "linear"
    sentence: str = ""
    extra: dict = field(default_factory=dict, repr=False)

    FITTED = ("forgetting", "kl_to_base", "forgetting_learned", "chat_kl", "facts", "forgetting_known",
              "probe_ppl_ratio")

    @classmethod
    def from_json(cls, data: dict) -> Comparison:
        known, extra = _known(cls, data)
        out = cls(**known, extra=extra)
        for name in cls.FITTED:
            setattr(out, name, {m: Interpolated.from_json(v) for m, v in (known.get(name) or {}).items()})
        out.paired, out.rows = Paired.from_json(known.get("paired")), RowsTest.from_json(known.get("rows"))
        out.difference = Interpolated.from_json(known.get("difference"))
        return out

    def to_json(self) -> dict:
        out = _plain(self)
        for name in self.FITTED:
            out[name] = {m: v.to_json() if v else None for m, v in getattr(self, name).items()}
        out["paired"] = self.paired.to_json() if self.paired else None
        out["rows"] = self.rows.to_json() if self.rows else None
        out["difference"] = self.difference.to_json() if self.difference else None
        return out


@dataclass
class AgainstBase(Flat):
    """One setting against the base model on one of its abilities (study_analysis.against_base): the runs of
    (method, lr) paired with the base row of their own seed, a t-test over runs on the change and TOST within
    the margin, Holm-adjusted over every setting and measure of the study (family). verdict: keeps (equivalent
    within ±margin), loses / gains (adjusted p < 0.05, by the direction that keeps less or more), inconclusive."""
    key: str = ""  # the group "method@lr"
    method: str = ""
    lr: float | None = None
    setting: dict = field(default_factory=dict)
    measure: str = ""  # facts (points right) or probe_ppl_ratio (WikiText-2 perplexity / the base's)
    base: float | None = None  # the base's value, mean over the runs' seeds (a ratio's base is 1)
    value: float | None = None  # the setting's mean over its runs
    change: float | None = None  # mean of (run − its seed's base) over runs
    ci95: list | None = None  # Student t over runs, of the change
    n: int = 0  # runs
    sd: float | None = None
    p: float | None = None  # two-sided one-sample t on the changes (None: fewer than 2 runs or no spread)
    p_adjusted: float | None = None  # Holm within `family`
    tost_p: float | None = None  # equivalence to the base within ±margin
    margin: float | None = None
    verdict: str = "inconclusive"  # keeps | loses | gains | inconclusive
    family: str = ""
    sentence: str = ""
    # "log" for a ratio (perplexity / the base's): tested on the log of each run's ratio, value its geometric mean,
    # change and ci95 e^(mean log) − 1 and its interval, margin ±log(1 + margin); "linear": as measured
    scale: str = "linear"
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class AtChosen(Flat):
    """Two methods, each at its own chosen learning rate (StudyRecord.best), on one measure, paired over the runs
    they share (seed × task order: the same rows and order on both sides) (study_analysis.at_chosen): what a user
    who takes each method's recommended setting gets. Matched learning cannot compare a method whose learning
    lies beyond the other's whole range (a peer run at one rate); this can, and says so when it learns more.
    A t-test over the pairs, TOST within ±margin where the measure has one, Holm-adjusted within the measure's family.
    verdict, of methods[0] against methods[1]: more / less (adjusted p < 0.05; of learning, "more" = learns more; of
    a loss, "less" = loses less of it: forgets less, drifts less, keeps more facts), equivalent, inconclusive."""
    methods: list = field(default_factory=list)  # [a, b]
    keys: list = field(default_factory=list)  # each side's chosen group "method@lr"
    settings: list = field(default_factory=list)  # each side's setting (lr, rank, ...)
    measure: str = ""  # learning_test (learning on test rows; learning where a side lacks it), forgetting, ...
    means: list = field(default_factory=list)  # each side's mean over the paired runs
    difference: float | None = None  # mean of a − b over the pairs
    ci95: list | None = None  # Student t over the pairs, of the difference
    n: int = 0  # pairs
    sd: float | None = None
    p: float | None = None  # two-sided paired t (None: fewer than 2 pairs or no spread)
    p_adjusted: float | None = None  # Holm within `family`
    tost_p: float | None = None  # equivalence within ±margin (measures in points only)
    margin: float | None = None
    verdict: str = "inconclusive"
    family: str = ""
    # "log" for a ratio: paired on log(a / b), means geometric, difference and ci95 e^(mean) − 1 (a's over b's)
    scale: str = "linear"
    sentence: str = ""
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class OrderEffect:
    """One method under one task order, over its runs at every learning rate and seed: does the order matter?"""
    method: str = ""
    order: int = 0
    tasks: list = field(default_factory=list)
    learning: Summary = field(default_factory=Summary)
    forgetting: Summary = field(default_factory=Summary)
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: OrderEffect | dict) -> OrderEffect:
        if isinstance(data, OrderEffect):
            return data
        known, extra = _known(cls, data)
        known["learning"], known["forgetting"] = Summary.of(known.get("learning")), Summary.of(known.get("forgetting"))
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        return {**_plain(self), "learning": self.learning.to_json(), "forgetting": self.forgetting.to_json()}


@dataclass
class ProbeTrack(Flat):
    """Did a drift probe track forgetting across the study's runs? Spearman's ρ over every run, with a bootstrap
    interval over runs and the test of ρ = 0 (t approximation), Holm-adjusted over every probe and target of the
    study (`family`); `tracks` when the adjusted p < 0.05 and ρ runs the way drift does (above 0; below 0 for a
    probe that falls as the model drifts: facts right). Runs at one learning rate share it, so ρ over every run mixes
    the rate's effect with the seeds'; the `_within` fields take ranks within each setting (method × rate) and test
    by shuffling within settings: `tracks_within` when that Holm-adjusted p < 0.05 and ρ runs the way drift does."""
    probe: str = ""
    target: str = "forgetting"  # what it is checked against: forgetting, or forgetting_known (what each run knew)
    rho: float | None = None
    ci95: list | None = None
    n: int = 0
    tracks: bool = False
    p: float | None = None  # two-sided, of ρ = 0
    p_adjusted: float | None = None  # Holm within `family`
    family: str = ""
    # within one setting (the same method and learning rate): does the probe tell apart the runs a setting's seeds
    # and orders make, beyond what the rate does to both? (stats.spearman_within; a Holm family of its own)
    rho_within: float | None = None
    p_within: float | None = None  # two-sided permutation p, shuffling within settings
    p_within_adjusted: float | None = None
    settings: int = 0  # settings with two runs or more: the groups ρ within settings is taken over
    tracks_within: bool = False
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Reanalysis(Flat):
    """A stored study analysed again with today's code (curlora/measure/study_analysis.py `reanalyse`): from what,
    how many points were measured again from their runs and how many read from what study.json stored, and each
    measure or test that could not be recomputed, with why (one sentence each)."""
    optional = True  # an empty or absent record reads as None
    source: str = ""  # the study.json analysed
    remeasured: int = 0  # points measured again from their runs' metrics
    stored: int = 0  # points kept as stored (their runs are not here), upgraded where their data allows
    recomputed: list = field(default_factory=list)  # what today's analysis recomputed
    not_recomputed: list = field(default_factory=list)  # what it could not, and why
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class StudyRecord:
    settings: StudySettings = field(default_factory=StudySettings)
    notes: dict = field(default_factory=dict)  # stored inside "settings": best_rule, interpolation
    base: Row | None = None  # the base model on the first seed's rows (every seed's rows unless rows_per_seed)
    bases: dict[int, Row] = field(default_factory=dict)  # rows_per_seed: the base row of each seed, on its rows
    plan: list[PlanEntry] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    frontier: dict[str, list[str]] = field(default_factory=dict)
    chat_frontier: dict[str, list[str]] = field(default_factory=dict)  # learning against chat_kl (chat probe runs)
    best: dict[str, Best | None] = field(default_factory=dict)
    comparison: list[Comparison] = field(default_factory=list)
    # the secondary family: every pair at the most learning both fits reach (study_analysis.top_comparisons)
    comparison_top: list[Comparison] = field(default_factory=list)
    # the family of what each run knew: forgetting over the earlier tasks it knew (study_analysis.analyse, FAMILY_KNOWN)
    comparison_known: list[Comparison] = field(default_factory=list)
    # chat retention tested at matched learning: chat KL and facts per pair (study_analysis.chat_comparisons)
    comparison_chat: list[Comparison] = field(default_factory=list)
    # each setting against the base model on facts and WikiText-2 perplexity (study_analysis.against_base)
    against_base: list[AgainstBase] = field(default_factory=list)
    # each pair of methods at its own chosen learning rate, per measure (study_analysis.at_chosen)
    at_chosen: list[AtChosen] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # in the order they are trained (the experiment's)
    warnings: list[str] = field(default_factory=list)  # what the reader must know before trusting the comparison
    order_effect: list[OrderEffect] = field(default_factory=list)  # with several task orders: each one's means
    probes: list[ProbeTrack] = field(default_factory=list)  # which drift probe tracked forgetting across the runs
    probes_known: list[ProbeTrack] = field(default_factory=list)  # ... and forgetting of what each run knew
    reanalysis: Reanalysis | None = None  # set by `curlora study --analyse` (a stored study analysed again)
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: StudyRecord | dict | None) -> StudyRecord:
        return data if isinstance(data, StudyRecord) else cls.from_json(data or {})

    @classmethod
    def from_json(cls, data: dict) -> StudyRecord:
        known, extra = _known(cls, data)
        raw = dict(known.get("settings") or {})
        grid = {k: raw.pop(k) for k in StudySettings.KEYS if k in raw}
        return cls(settings=StudySettings.from_dict(grid), notes=raw,
                   base=Row.from_json(known["base"]) if known.get("base") else None,
                   bases={int(k): Row.from_json(r) for k, r in (known.get("bases") or {}).items()},
                   plan=[PlanEntry.from_json(e) for e in known.get("plan") or []],
                   points=[Point.from_json(p) for p in known.get("points") or []],
                   groups={k: Group.of(g) for k, g in (known.get("groups") or {}).items()},
                   frontier={m: list(ks) for m, ks in (known.get("frontier") or {}).items()},
                   chat_frontier={m: list(ks) for m, ks in (known.get("chat_frontier") or {}).items()},
                   best={m: Best.from_json(b) for m, b in (known.get("best") or {}).items()},
                   comparison=[Comparison.from_json(c) for c in known.get("comparison") or []],
                   comparison_top=[Comparison.from_json(c) for c in known.get("comparison_top") or []],
                   comparison_known=[Comparison.from_json(c) for c in known.get("comparison_known") or []],
                   comparison_chat=[Comparison.from_json(c) for c in known.get("comparison_chat") or []],
                   against_base=[AgainstBase.from_json(t) for t in known.get("against_base") or []],
                   at_chosen=[AtChosen.from_json(t) for t in known.get("at_chosen") or []],
                   tasks=list(known.get("tasks") or []), warnings=list(known.get("warnings") or []),
                   order_effect=[OrderEffect.of(o) for o in known.get("order_effect") or []],
                   probes=[ProbeTrack.from_json(t) for t in known.get("probes") or []],
                   probes_known=[ProbeTrack.from_json(t) for t in known.get("probes_known") or []],
                   reanalysis=Reanalysis.from_json(known.get("reanalysis")), extra=extra)

    def to_json(self) -> dict:
        return {**self.extra,
                "settings": {**self.settings.to_dict(), **self.notes},
                "base": dataclasses.asdict(self.base) if self.base is not None else None,
                **({"bases": {str(k): dataclasses.asdict(r) for k, r in self.bases.items()}} if self.bases else {}),
                "plan": [e.to_json() for e in self.plan],
                "points": [p.to_json() for p in self.points],
                "groups": {k: g.to_json() for k, g in self.groups.items()},
                "frontier": self.frontier, "chat_frontier": self.chat_frontier,
                "best": {m: b.to_json() if b else None for m, b in self.best.items()},
                "comparison": [c.to_json() for c in self.comparison],
                **({"comparison_top": [c.to_json() for c in self.comparison_top]} if self.comparison_top else {}),
                **({"comparison_known": [c.to_json() for c in self.comparison_known]} if self.comparison_known
                   else {}),
                **({"comparison_chat": [c.to_json() for c in self.comparison_chat]} if self.comparison_chat
                   else {}),
                **({"against_base": [t.to_json() for t in self.against_base]} if self.against_base else {}),
                **({"at_chosen": [t.to_json() for t in self.at_chosen]} if self.at_chosen else {}),
                "tasks": self.tasks, "warnings": self.warnings,
                "order_effect": [o.to_json() for o in self.order_effect],
                "probes": [t.to_json() for t in self.probes],
                **({"probes_known": [t.to_json() for t in self.probes_known]} if self.probes_known else {}),
                **({"reanalysis": self.reanalysis.to_json()} if self.reanalysis else {})}

    # each family of comparisons, in the order a reader meets them: (field, heading, whether its comparisons differ
    # by the measure tested, so a line must name it); Holm corrects within a family (study_analysis)
    FAMILIES: ClassVar[tuple] = (
        ("comparison", "Forgetting at the middle of the learning both reach", False),
        ("comparison_top", "Forgetting at the most learning both reach", False),
        ("comparison_known", "Forgetting of what each run knew", False),  # a base's own abilities included
        ("comparison_chat", "The base's abilities", True))  # "less" = the first loses less of the base

    def families(self) -> list[tuple[str, list[Comparison], bool]]:
        """(heading, comparisons, names the measure) for each family with a comparison, in FAMILIES' order."""
        return [(heading, getattr(self, name), by) for name, heading, by in self.FAMILIES if getattr(self, name)]

    def order_of(self, index: int) -> list[str]:
        """The task names of order `index`, in training order."""
        orders = self.settings.orders
        return list(orders[index]) if orders else list(self.tasks)

    def point_run_ids(self) -> list[str]:
        """The ids of the runs made for the study's points so far, in plan order."""
        return [e.run_id for e in self.plan if e.run_id]

    @property
    def labels(self) -> list[str]:
        """The study's methods, in the order of its grid."""
        return list(self.settings.lrs)

    @property
    def done(self) -> int:
        return sum(1 for e in self.plan if e.status == "completed")

    def __bool__(self) -> bool:
        """Whether anything was recorded yet (a missing or damaged study.json reads empty)."""
        return bool(self.plan or self.settings.lrs)
