"""A study's analysis: from its finished runs to points, groups over seeds, each method's frontier, its best
learning rate and the comparison at matched learning, with the sentence that says it. Pure: no file is read or
written here (the running study, curlora/run/study.py, hands in the records and one function to read a run's
metrics for the row test), so every number can be checked on constructed inputs.

    point_measures(metrics, label)        one finished run's measures (Point fields), or None
    groups_of(points)                     {key: Group}: each measure over seeds (Student t, curlora/measure/stats.py)
    frontier_of(groups, label, against)   the groups no other group of that method beats on learning and forgetting
                                          (or chat_kl, facts…: a learning-against-chat-retention frontier)
    best_of(groups, label, kl_budget)     the best lr by BEST_RULE
    compare(groups, points, a, b, metrics_of, margin, top)   a against b at matched learning: a Comparison
    top_comparisons(rec, metrics_of)      every pair at the most learning both reach: the secondary family
    chat_comparisons(groups, points, labels, margin)   every pair's chat KL, facts and WikiText-2 perplexity at
                                          matched learning, tested
    against_base(points, groups, margin)  every setting against the base model on facts and WikiText-2 perplexity
    at_chosen(points, groups, best, labels, margin)   every pair, each at its own chosen rate, on learning,
                                          forgetting and the base's abilities, paired over seed × order
    (analyse also makes the family of what each run knew: every pair's forgetting_known, StudyRecord.comparison_known)
    adjust(comparisons), decide(c, groups, points)      Holm over the family, then the verdict and its sentence
    probe_tracks(points, target), order_effect(...)     which drift probe tracked forgetting (or forgetting of what each
                                                        run knew); each task order's means
    reanalyse(rec, tasks, metrics_of, matrices)          a stored study analysed again, nothing retrained
    together(records, metrics_of, pairs)                 several studies of one experiment analysed as one
    analyse(settings, base, plan, points, metrics_of, tasks)   all of it: a StudyRecord

The statistics and what each assumes: docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from curlora.errors import CurloraError
from curlora.measure import stats
from curlora.measure.describe import described
from curlora.measure.metrics import earlier_tasks
from curlora.measure.record import Row, RunMetrics
from curlora.measure.study_record import (DEFAULT_MARGIN, MEASURES, AgainstBase, AtChosen, Best, Comparison, Group,
                                          Interpolated, OrderEffect, Paired, PlanEntry, Point, ProbeTrack, Reanalysis,
                                          RowsTest, StudyRecord, StudySettings, Summary, key, within)

CONSTANT_SHARE = 0.95
BEST_RULE = ("the highest mean learning on validation rows (a seeded half of each task's eval rows; the table "
             "reports the other half, the test rows) among the learning rates whose mean KL to base is within "
             "kl_budget; without a budget (or when none is within it), the highest such learning")
INTERPOLATION = ("each measure fitted per method as a monotone (isotonic, seed-weighted) function of log10 lr, "
                 "linear between the learning rates, over the rates up to the one where the method's mean learning "
                 "peaks (a higher rate that learns less is past the method's useful range: it stays in the tables "
                 "and the tests against the base, not in the fits); the matched level is the middle of the learning "
                 "both fits reach; intervals there: 95 % percentile bootstrap over seeds (refitting each draw); "
                 "eval rows are fixed, so their sampling noise is not in these intervals")
FAMILY = "forgetting at matched learning"  # the named family every comparison's tests belong to (Holm)
# the secondary comparison, at the most learning both methods' fits reach (top_comparisons): its own family
FAMILY_TOP = "forgetting at the most learning both reach"
# the family of what each run knew: forgetting over the earlier tasks a run scored above the majority class right
# after training them, learned or already solved by the base (a pretrained model's own ability), at matched learning
FAMILY_KNOWN = "forgetting of what each run knew, at matched learning"
# the base's abilities tested, not only shown: every pair's chat KL, facts and probe-text perplexity at the primary
# level, one family (FAMILY_CHAT, named when it held the two chat measures only)
FAMILY_CHAT = "the base's abilities at matched learning"
# label, digits, unit, and whether the study's margin (points) applies: chat KL and the perplexity ratio have no
# natural margin in points
CHAT_TESTED = {"chat_kl": ("KL to the base on its chat replies (lower keeps more)", 4, "", False),
               "facts": ("factual questions right (higher keeps more)", 1, " pts", True),
               "probe_ppl_ratio": ("perplexity on the probe text / the base's (lower keeps more)", 3, "", False)}
# each setting against the base model itself: does it keep the base's abilities? (against_base)
FAMILY_BASE = "each setting against the base model"
PPL_MARGIN = 0.05  # perplexity on the probe text (WikiText-2 in the SmolLM2 study) within ±5 % of the base's: kept
# measure: (label, digits, unit, the base's own value on a run's Point (None: the measure is already a ratio to
# the base, whose value is 1)); whether higher keeps more is HIGHER_IS_BETTER's
AGAINST_BASE = {"facts": ("factual questions right", 1, " pts", "facts_base"),
                "probe_ppl_ratio": ("perplexity on the probe text / the base's", 3, "", None)}
# measures that are ratios (to the base's, measured in each run): tested on their logs, so a run at ×2 and one at
# ×10⁵ weigh as the multiplicative changes they are, not as a spread that hides both
RATIOS = frozenset({"probe_ppl_ratio"})
BOOTSTRAP_DRAWS = 1000  # per comparison, seeded: the same study always gives the same intervals
LEARNED_SHARE = 0.5  # a setting learned its earlier tasks when at least this share of its runs learned one


# -- one run ----------------------------------------------------------------------------------------------------
def point_measures(metrics: RunMetrics, label: str) -> dict | None:
    """The measures of one finished run, as Point fields (None while it has not finished every task)."""
    rec = metrics.methods.get(label)
    base = metrics.base
    n = len(metrics.tasks)
    if rec is None or base is None or rec.stages_done < n:
        return None
    a = rec.matrix
    lines = [max(x for x in (metrics.majority[j], base.accuracy[j]) if x is not None) for j in range(n)]
    learning = sum(a[j + 1][j] - lines[j] for j in range(n)) / n
    s = rec.summary or {}

    def pts(x):
        return None if x is None else 100 * x

    def ratio(x, y):
        return x / y if x is not None and y else None

    shares = [(rec.matrix_pred_share[j + 1] or [None] * n)[j] if j + 1 < len(rec.matrix_pred_share) else None
              for j in range(n)]
    learned = [v["task"] for v in metrics.learnability if label in v.get("learned_by", [])]
    earlier = earlier_tasks(a, [j for j, t in enumerate(metrics.tasks[:-1]) if t in learned])
    held = earlier_tasks(a, known_tasks(metrics, rec)) if metrics.majority else {"tasks": None, "forgetting": None}
    return {
        "learning": 100 * learning, "forgetting": pts(s.get("forgetting")), "bwt": pts(s.get("bwt")),
        "acc": pts(s.get("acc")), "kl_to_base": rec.kl_to_base[-1] if rec.kl_to_base else None,
        "self_ppl_ratio": ratio(rec.self_ppl[-1] if rec.self_ppl else None, base.self_ppl),
        "probe_ppl_ratio": ratio(rec.ppl[-1] if rec.ppl else None, base.ppl),
        "final_loss": [t.final_loss for t in rec.train],
        "constant_predictions": [metrics.tasks[j] for j, sh in enumerate(shares) if sh is not None
                                 and sh >= CONSTANT_SHARE],
        "learned": learned, "learned_earlier": earlier["tasks"], "forgetting_learned": pts(earlier["forgetting"]),
        "bwt_learned": pts(earlier["bwt"]), "known_earlier": held["tasks"],
        "forgetting_known": pts(held["forgetting"]), **split_learning(metrics, rec, lines), **chat_measures(rec, base),
    }


def known_tasks(metrics: RunMetrics, rec) -> list[int]:
    """The earlier tasks (column indices, all but the last) a method knew right after training each: k of n eval
    rows right, above the task's majority-class share by the one-sided exact binomial at p < 0.05 — learned, or
    already solved by the base (a pretrained model's own ability is something to forget too). A task scored above
    the majority class only by chance is let in at most 5 % of the time."""
    out = []
    for j in range(len(metrics.tasks) - 1):
        cell = rec.cell(j + 1, j)
        n, acc, major = cell.get("n"), cell.get("accuracy"), metrics.majority[j] if j < len(metrics.majority) else None
        if not n or acc is None or major is None:
            continue
        k = sum(cell["correct"]) if cell.get("correct") is not None else round(acc * n)
        if stats.binom_greater(k, n, major) < stats.ALPHA:
            out.append(j)
    return out


def chat_measures(rec, base: Row | None = None) -> dict:
    """The chat probe after the last task (chat_kl, facts in points, the two reply counts), the base's facts in
    the same run (`base`: the run's base row) and the new-task KL's mean over the tasks, as Point fields (None
    where the probe was off or the run is older than it)."""
    last = rec.row(len(rec.matrix) - 1)
    task = [x for x in rec.task_kl[1:] if x is not None]
    acc = last.facts_accuracy
    return {"chat_kl": last.chat_kl, "facts": None if acc is None else 100 * acc,
            "facts_base": None if base is None or base.facts_accuracy is None else 100 * base.facts_accuracy,
            "replies_unterminated": last.replies_unterminated, "replies_repetitive": last.replies_repetitive,
            "task_kl": sum(task) / len(task) if task else None}


def validation_rows(task: str, n: int) -> set[int]:
    """The eval rows of `task` that choose learning rates: half of them, drawn with the task's name as the seed,
    so every run and every task order splits a task the same way. The rest are its test rows."""
    return set(random.Random(f"validation:{task}").sample(range(n), n // 2))


def split_learning(metrics: RunMetrics, rec, lines: list[float]) -> dict:
    """learning_val and learning_test (points): learning on each task's validation and test rows, from the per-row
    results the run stored (each line: the majority share of all eval rows — the labels of a half are not stored —
    or the base model on the same half). Both None for a run stored without per-row results."""
    out = {"learning_val": 0.0, "learning_test": 0.0}
    n = len(metrics.tasks)
    for j, task in enumerate(metrics.tasks):
        own, ref = rec.cell(j + 1, j)["correct"], metrics.base.cell(j)["correct"]
        if not own or len(own) < 2:
            return {"learning_val": None, "learning_test": None}
        val = validation_rows(task, len(own))
        for name, rows in (("learning_val", sorted(val)), ("learning_test", [i for i in range(len(own)) if i not in val])):
            acc = sum(own[i] for i in rows) / len(rows)
            base = sum(ref[i] for i in rows) / len(rows) if ref and len(ref) == len(own) else metrics.base.accuracy[j]
            line = max(x for x in (metrics.majority[j], base) if x is not None) if base is not None else lines[j]
            out[name] += 100 * (acc - line) / n
    return out


# -- over seeds -------------------------------------------------------------------------------------------------
def groups_of(points: list[Point]) -> dict[str, Group]:
    members: dict[str, list[Point]] = {}
    for p in points:
        members.setdefault(p.key, []).append(p)
    out = {}
    for k, ps in members.items():
        out[k] = Group(method=ps[0].method, lr=ps[0].lr, setting=ps[0].setting, seeds=[p.seed for p in ps],
                       run_ids=[p.run_id for p in ps], orders=[p.order for p in ps],
                       constant_predictions=sorted({t for p in ps for t in p.constant_predictions}),
                       **{name: Summary.of(stats.summary([getattr(p, name) for p in ps])) for name in MEASURES})
    return out


HIGHER_IS_BETTER = {"facts", "learning", "acc", "bwt"}  # for every other measure a frontier wants it low


def frontier_of(groups: dict[str, Group], label: str, against: str = "forgetting") -> list[str]:
    """The (method, lr) groups of `label` no other group of it beats on both learning and `against` (means):
    forgetting, or a retention measure such as chat_kl (lower is better) or facts (higher is better)."""
    sign = -1.0 if against in HIGHER_IS_BETTER else 1.0
    mine = {k: g for k, g in groups.items() if g.method == label and g.mean("learning") is not None
            and g.mean(against) is not None}

    def cost(g):
        return sign * g.mean(against)

    def beaten(g):
        return any(h.mean("learning") >= g.mean("learning") and cost(h) <= cost(g)
                   and (h.mean("learning") > g.mean("learning") or cost(h) < cost(g))
                   for h in mine.values() if h is not g)

    front = [k for k, g in mine.items() if not beaten(g)]
    return sorted(front, key=lambda k: mine[k].mean("learning"))


def best_of(groups: dict[str, Group], label: str, kl_budget: float | None) -> Best | None:
    mine = {k: g for k, g in groups.items() if g.method == label and g.mean("learning") is not None}
    if not mine:
        return None
    # choose on the validation rows, so the test rows the table reports were not used to choose
    by = "learning_val" if all(g.mean("learning_val") is not None for g in mine.values()) else "learning"
    rows = "on validation rows" if by == "learning_val" else "on all eval rows (no per-row results stored)"
    within = {k: g for k, g in mine.items() if kl_budget is not None and g.mean("kl_to_base") is not None
              and g.mean("kl_to_base") <= kl_budget}
    pool, note = (within, f"within the KL budget {kl_budget:g}: the highest learning {rows}") if within else (mine, (
        f"no learning rate is within the KL budget {kl_budget:g}: the highest learning {rows}"
        if kl_budget is not None else f"no KL budget set: the highest learning {rows}"))
    k = max(pool, key=lambda k: pool[k].mean(by))
    return Best(key=k, lr=pool[k].lr, rule=BEST_RULE, chosen=note)


# -- at matched learning -----------------------------------------------------------------------------------------
class Fit:
    """One method's measures as monotone functions of log10 lr (isotonic over its groups' means, weighted by
    their seeds; rising or falling as the least-squares slope says), linear between its learning rates."""

    def __init__(self, groups: list[Group], name: str):
        pts = sorted((math.log10(g.lr), g.mean(name), max(g.measure(name).n, 1)) for g in groups
                     if g.mean(name) is not None)
        self.x = [x for x, _, _ in pts]
        ys, ws = [y for _, y, _ in pts], [w for _, _, w in pts]
        rising = _slope(self.x, ys, ws) >= 0
        self.y = stats.isotonic(ys, ws, increasing=rising) if pts else []

    def __bool__(self) -> bool:
        return bool(self.x)

    def at(self, x: float) -> float | None:
        if not self.x or x < self.x[0] - 1e-12 or x > self.x[-1] + 1e-12:
            return None
        for (x0, y0), (x1, y1) in itertools.pairwise(zip(self.x, self.y)):
            if x0 - 1e-12 <= x <= x1 + 1e-12:
                return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return self.y[0]

    def where(self, level: float) -> float | None:
        """The lowest log10 lr at which the fitted curve reaches `level` (None outside its range)."""
        if not self.x or not min(self.y) - 1e-9 <= level <= max(self.y) + 1e-9:
            return None
        if len(self.x) == 1:
            return self.x[0]
        for (x0, y0), (x1, y1) in itertools.pairwise(zip(self.x, self.y)):
            if min(y0, y1) - 1e-9 <= level <= max(y0, y1) + 1e-9:
                return x0 if y1 == y0 else x0 + (x1 - x0) * (level - y0) / (y1 - y0)
        return None


def _slope(xs: list[float], ys: list[float], ws: list[float]) -> float:
    total = sum(ws) or 1.0
    mx, my = sum(w * x for x, w in zip(xs, ws)) / total, sum(w * y for y, w in zip(ys, ws)) / total
    return sum(w * (x - mx) * (y - my) for x, y, w in zip(xs, ys, ws))


def _resampled(points: list[Point], units: list[tuple]) -> dict[str, Group]:
    """The groups' means again from the runs of the replicates (seed, task order) drawn (one drawn twice counts
    twice); means only: the bootstrap needs no interval of its own draws."""
    by_unit: dict[tuple, list[Point]] = {}
    for p in points:
        by_unit.setdefault(p.unit, []).append(p)
    members: dict[str, list[Point]] = {}
    for u in units:
        for p in by_unit.get(u, []):
            members.setdefault(p.key, []).append(p)
    out = {}
    for k, ps in members.items():
        means = {}
        for name in ("learning", *Comparison.FITTED):
            vals = [getattr(p, name) for p in ps if getattr(p, name) is not None]
            means[name] = Summary(mean=sum(vals) / len(vals) if vals else None, n=len(vals))
        out[k] = Group(method=ps[0].method, lr=ps[0].lr, **means)
    return out


def _mine(groups: dict[str, Group], label: str) -> list[Group]:
    return [g for g in groups.values() if g.method == label]


def rising(groups: list[Group]) -> list[Group]:
    """A method's groups up to the learning rate where its mean learning peaks (that one included). Past the peak a
    higher rate learns less — training breaks the model (SmolLM2's frontier edge: CURLoRA at 3e-2 learned below
    1e-2 and ended every chat reply in a loop) — so a monotone fit of learning in lr over every rate would pool the
    rising and the falling branch and misplace the matched level; the fits use the rising branch only."""
    known = [g for g in groups if g.mean("learning") is not None]
    if not known:
        return groups
    peak = max(known, key=lambda g: (g.mean("learning"), -g.lr)).lr
    return [g for g in groups if g.lr <= peak]


def _nearest(groups: list[Group], level: float) -> str | None:
    """The key of the group whose learning rate is nearest (in log lr) to where the fit reaches `level`."""
    x = Fit(groups, "learning").where(level)
    if x is None:
        return None
    g = min(groups, key=lambda g: abs(math.log10(g.lr) - x))
    return key(g.method, g.lr)


def final_discordant(ma, la: str, mb, lb: str) -> tuple[int, int, int] | None:
    """(rows, only a right, only b right) over the earlier tasks' final-stage rows of method `la` in run metrics `ma`
    and `lb` in `mb` (one run each, or both methods of one run); None where a row list is missing or the two differ
    in length."""
    ra, rb = ma.methods[la], mb.methods[lb]
    last = len(ra.matrix) - 1
    b = c = rows = 0
    for j in range(len(ma.tasks) - 1):
        ca, cb = ra.cell(last, j)["correct"], rb.cell(last, j)["correct"]
        if ca is None or cb is None or len(ca) != len(cb):
            return None
        db, dc = stats.discordant(ca, cb)
        b, c, rows = b + db, c + dc, rows + len(ca)
    return rows, b, c


def rows_test(by: dict, seeds: list, ka: str, kb: str, metrics_of) -> RowsTest | None:
    """Exact McNemar (two-sided) over the final-stage rows of the earlier tasks, pooled over the replicates both
    groups ran (`by`: (group key, (seed, order)) -> Point; `metrics_of(run_id)` -> RunMetrics, or None where a
    run can no longer be read: then no row test): does one method keep more rows right than the other?"""
    if metrics_of is None:  # constructed inputs without runs behind them
        return None
    b = c = rows = 0
    for seed in seeds:
        pa, pb = by[(ka, seed)], by[(kb, seed)]
        ma, mb = metrics_of(pa.run_id), metrics_of(pb.run_id)
        got = None if ma is None or mb is None else final_discordant(ma, pa.method, mb, pb.method)
        if got is None:
            return None
        rows, b, c = rows + got[0], b + got[1], c + got[2]
    if not rows:
        return None
    return RowsTest(rows=rows, only_first_right=b, only_second_right=c, p_value=stats.mcnemar_two_sided(b, c))


def interval_text(s: Summary | Interpolated | dict | None, digits: int = 2, unit: str = "",
                  single: str = " (one seed: no interval)", measure: str | None = None) -> str:
    """A summary as "mean [lo, hi]" (the study's sentences, the Compare tab, bench/demo_study_time.py);
    `single` follows the mean when there is no interval; naming the `measure` clips the interval to its range."""
    if isinstance(s, dict):
        s = Summary.of(s)
    if s is None or s.mean is None:
        return "n/a"
    ci = within(s.ci95, measure)
    return f"{s.mean:.{digits}f}{unit}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else single)


def compare(groups: dict[str, Group], points: list[Point], a: str, b: str, metrics_of,
            margin: float = DEFAULT_MARGIN, top: bool = False, measure: str = "forgetting") -> Comparison:
    """Does a forget less than b at matched learning? The measures at the level both methods' fitted learning
    reaches (the middle of that range; with `top`, its top: the most learning both reach), with bootstrap intervals
    over seeds, a paired t-test and TOST over seeds at the nearest learning rates, and the McNemar row test.
    p_adjusted and the verdict are set by `analyse` once the whole family is known (`decide`). `measure`:
    "forgetting" (every earlier task) or "forgetting_known" (the earlier tasks each run knew; no row test, which
    pools every earlier task's rows)."""
    family = (FAMILY_CHAT if measure in CHAT_TESTED else FAMILY_KNOWN if measure == "forgetting_known"
              else FAMILY_TOP if top else FAMILY)
    if measure in CHAT_TESTED and not CHAT_TESTED[measure][3]:
        margin = None  # no equivalence test on this measure
    out = Comparison(methods=[a, b], margin=margin, family=family, measure=measure)
    ga, gb = rising(_mine(groups, a)), rising(_mine(groups, b))
    kept = {a: {g.lr for g in ga}, b: {g.lr for g in gb}}  # the same rates in every bootstrap draw
    fa, fb = Fit(ga, "learning"), Fit(gb, "learning")
    if not fa or not fb:
        out.sentence = f"No comparison of {a} and {b}: one of them has no finished learning rate yet."
        return out
    lo, hi = max(min(fa.y), min(fb.y)), min(max(fa.y), max(fb.y))
    if lo > hi + 1e-12:
        out.sentence = (f"{a} and {b} never reach the same learning: {a}'s fitted learning "
                        f"{_reach(fa.y, ' points')}, {b}'s {_reach(fb.y, verb='')}; widen a grid to compare them "
                        "at matched learning.")
        return out
    level = hi if top else (lo + hi) / 2
    out.learning = level
    units = sorted({p.unit for p in points if p.method in (a, b)})

    def measures(gs: dict[str, Group]) -> dict:
        """Each fitted measure of both methods at the level, and the forgetting difference a − b."""
        vals = {}
        for m in (a, b):
            mine = [g for g in _mine(gs, m) if g.lr in kept[m]]
            x = Fit(mine, "learning").where(level)
            for name in Comparison.FITTED:
                vals[(m, name)] = None if x is None else Fit(mine, name).at(x)
        fa_, fb_ = vals[(a, measure)], vals[(b, measure)]
        vals["difference"] = None if fa_ is None or fb_ is None else fa_ - fb_
        return vals

    here = measures(groups)
    cis = stats.bootstrap_many(units, lambda drawn: measures(_resampled(points, drawn)), draws=BOOTSTRAP_DRAWS) \
        if points else {}
    for name in Comparison.FITTED:
        setattr(out, name, {m: None if here[(m, name)] is None else
                            Interpolated(mean=here[(m, name)], ci95=cis.get((m, name))) for m in (a, b)})
    if here["difference"] is not None:
        out.difference = Interpolated(mean=here["difference"], ci95=cis.get("difference"))
    ka, kb = _nearest(ga, level), _nearest(gb, level)
    out.nearest = {a: ka, b: kb}
    by = {(p.key, p.unit): p for p in points}
    common = [u for u in sorted({u for (k, u) in by if k == ka} & {u for (k, u) in by if k == kb})
              if getattr(by[(ka, u)], measure) is not None and getattr(by[(kb, u)], measure) is not None]
    diffs, log = _differences(measure, [(getattr(by[(ka, u)], measure), getattr(by[(kb, u)], measure))
                                        for u in common])
    if diffs:
        raw = stats.paired_t(diffs)
        t, out.tost_p = _tested(diffs, margin, log)  # tost None: no equivalence test on this measure
        out.paired = Paired(seeds=[s for s, _ in common], orders=[o for _, o in common], **t)
        out.p, out.scale = out.paired.p_value, "log" if log else "linear"
        if raw["sd"]:
            width = margin or 0.0
            out.seeds_needed = stats.seeds_needed(raw["mean"], raw["sd"], math.log1p(width) if log else width)
    out.rows = rows_test(by, common, ka, kb, metrics_of) if measure == "forgetting" else None
    fa_, fb_ = getattr(out, measure)[a], getattr(out, measure)[b]
    out.intervals_overlap = stats.overlap(fa_ and fa_.ci95, fb_ and fb_.ci95)
    return out


def _unlearned(groups: dict[str, Group], points: list[Point], c: Comparison) -> list[str]:
    """The compared settings whose runs did not learn their earlier tasks by the per-run test (fewer than half of
    their runs learned any; in the family of what each run knew, knew any); a setting stored before this test was
    kept is not judged."""
    field_ = "known_earlier" if c.measure == "forgetting_known" else "learned_earlier"
    out = []
    for m, k in c.nearest.items():
        runs = [p for p in points if p.key == k]
        if runs and all(getattr(p, field_) is not None for p in runs) and \
                sum(1 for p in runs if getattr(p, field_)) < LEARNED_SHARE * len(runs):
            out.append(described(m, groups[k].setting))
    return out


def _reach(y: list[float], unit: str = "", verb: str = "spans ") -> str:
    """What a fitted curve reaches, to the digit shown: "spans 3.3 to 4.4 points" (`verb` first), or "is 5.8
    points" where it is one value (one rate on the rising branch, or a flat fit)."""
    lo, hi = f"{min(y):.1f}", f"{max(y):.1f}"
    return f"{verb}{lo} to {hi}{unit}" if lo != hi else f"is {lo}{unit}"


def without_spread(n: int, sd: float | None, difference: float | None, margin: float | None) -> str | None:
    """Two or more pairs that all differ by exactly the same amount leave no spread to test; decided by that
    difference against the margin: "differs" at or beyond it (any non-zero difference where there is no margin),
    "same" inside it, None where there is spread, fewer than two pairs, or no margin and no difference."""
    if n < 2 or sd or difference is None:
        return None
    if difference != 0 and (margin is None or abs(difference) >= margin):
        return "differs"
    return "same" if margin is not None else None


def verdict_of(nothing_learned: bool, p_adjusted: float | None, difference: float | None,
               tost_p: float | None, spread: str | None = None) -> str:
    """The four-word verdict on "does A forget less than B" (docs/statistics.md), checked in this order: nothing
    learned (a compared setting learned no earlier task by the per-run test), less / more (Holm-adjusted p < 0.05,
    by the sign of the mean difference A − B), equivalent (TOST p < 0.05), else inconclusive. `spread`: what
    `without_spread` made of pairs with no spread left to test, decided as each method at its chosen rate is
    (`decide_at_chosen`): "differs" by the difference's sign, "same" equivalent."""
    if nothing_learned:
        return "nothing learned"
    if p_adjusted is not None and p_adjusted < stats.ALPHA and difference is not None:
        return "less" if difference < 0 else "more"
    if tost_p is not None and tost_p < stats.ALPHA:
        return "equivalent"
    if spread == "differs":
        return "less" if difference < 0 else "more"
    if spread == "same":
        return "equivalent"
    return "inconclusive"


def _spread(pr: Paired | None, difference: float | None, margin: float | None) -> str | None:
    """`without_spread` of a comparison's pairs (None where there are none)."""
    return without_spread(pr.n, pr.sd, difference, margin) if pr else None


def decide(c: Comparison, groups: dict[str, Group], points: list[Point]) -> None:
    """The verdict and the sentence, once p_adjusted is known (Holm over the family)."""
    if c.learning is None:
        return
    if c.measure in CHAT_TESTED:
        decide_chat(c, groups)
        return
    a, b = c.methods
    known = c.measure == "forgetting_known"
    fa_, fb_ = getattr(c, c.measure)[a], getattr(c, c.measure)[b]
    nearest = " and ".join(described(m, groups[k].setting) for m, k in c.nearest.items() if k)
    where = "the most learning both fits reach" if c.family == FAMILY_TOP else "the middle of what both fits reach"
    what = (" on the earlier tasks each run knew (above the majority class right after training it, learned or "
            "already the base's)") if known else ""
    head = (f"At matched learning ({c.learning:.1f} points above the better of the majority class and the base, "
            f"{where}){what}, {a} forgets {interval_text(fa_, unit=' pts')} and {b} "
            f"{interval_text(fb_, unit=' pts')} (monotone fits in lr; 95 % bootstrap over seeds; nearest settings "
            f"{nearest}).")
    la, lb = c.forgetting_learned.get(a), c.forgetting_learned.get(b)
    if not known and la is not None and lb is not None and la.mean is not None and lb.mean is not None:
        head += (f" Over the earlier tasks each run learned only: {a} {la.mean:.2f} pts, {b} {lb.mean:.2f} pts.")
    head += chat_sentence(c)
    test = ""
    pr = c.paired
    over = f"{pr.n} seeds" if pr and len(set(pr.orders)) < 2 else f"{pr.n if pr else 0} runs (seed × task order)"
    if pr and pr.n >= 2:
        if c.p is None:
            test = (f" Paired over {over}: the difference is {pr.mean:.2f} pts on every pair, so there is "
                    "no spread to test.")
        else:
            test = (f" Paired over {over} at those settings: {a} − {b} = {pr.mean:.2f} pts, p = {c.p:.3g} "
                    f"(Holm-adjusted in the family '{c.family}': {c.p_adjusted:.3g}), d_z = {pr.effect_size:.2f}; "
                    f"equivalence within ±{c.margin:g} pts (TOST) p = {c.tost_p:.3g}.")
    if c.rows:
        r = c.rows
        test += (f" On the earlier tasks' final rows ({r.rows} paired rows, pooled over seeds: it takes rows as "
                 f"independent) {a} alone is right on {r.only_first_right}, {b} alone on {r.only_second_right} "
                 f"(exact McNemar p = {r.p_value:.3g}, adjusted {r.p_adjusted:.3g}).")
    unlearned = _unlearned(groups, points, c)
    difference = pr.mean if pr else None
    c.verdict = verdict_of(bool(unlearned), c.p_adjusted, difference, c.tost_p, _spread(pr, difference, c.margin))
    if unlearned and known:
        why = (f" Verdict: nothing learned — the runs of {' and '.join(unlearned)} knew none of the earlier tasks "
               "(none above the majority class right after its training), so their forgetting has nothing to "
               "measure.")
    elif unlearned:
        why = (f" Verdict: nothing learned — the runs of {' and '.join(unlearned)} learned none of the earlier tasks "
               "by the per-run test, so their forgetting has nothing to measure.")
    elif c.verdict in ("less", "more"):
        less = c.verdict == "less"
        why = (f" Verdict: {c.verdict} — {a} forgets {'less' if less else 'more'} than {b} at this learning "
               + (f"(adjusted p = {c.p_adjusted:.3g})." if c.p_adjusted is not None else
                  f"(every pair by exactly {pr.mean:+.2f} pts, at or beyond ±{c.margin:g}: no spread left to test)."))
    elif c.verdict == "equivalent":
        why = (f" Verdict: equivalent — {a} and {b} forget the same within ±{c.margin:g} points at this learning "
               + (f"(TOST p = {c.tost_p:.3g})." if c.tost_p is not None else
                  f"(every pair by exactly {pr.mean:+.2f} pts: no spread left to test)."))
    else:
        if pr is None or pr.n < 2:
            need = "run at least two seeds per setting to test it"
        elif c.p is None:
            need = "the runs agree exactly, so no test can say more; vary the seeds or the rows"
        elif c.seeds_needed:
            need = (f"about {c.seeds_needed} seeds would decide it (80 % power, if the spread of these "
                    f"{pr.n} holds)")
        else:
            need = "no feasible number of seeds would decide it at this spread"
        why = (f" Verdict: inconclusive — neither a difference nor equivalence within ±{c.margin:g} points is "
               f"shown; {need}.")
    c.sentence = head + test + why


def decide_chat(c: Comparison, groups: dict[str, Group]) -> None:
    """The verdict on "does A lose less of the base model than B?" by one measure of CHAT_TESTED: less / more
    (Holm-adjusted p < 0.05; for facts more right is less lost, for chat KL a lower KL), equivalent (facts only,
    TOST within the margin in points; chat KL has no margin, so no equivalence), else inconclusive. No learned
    guard: the chat model is the base's, whatever the tasks taught."""
    a, b = c.methods
    label, digits, unit, _ = CHAT_TESTED[c.measure]
    va, vb = getattr(c, c.measure).get(a), getattr(c, c.measure).get(b)
    nearest = " and ".join(described(m, groups[k].setting) for m, k in c.nearest.items() if k)
    head = (f"At matched learning ({c.learning:.1f} points above the better of the majority class and the base, the "
            f"middle of what both fits reach), {label}: {a} {interval_text(va, digits, unit)}, {b} "
            f"{interval_text(vb, digits, unit)} (monotone fits in lr; 95 % bootstrap over seeds; nearest settings "
            f"{nearest}).")
    pr = c.paired
    test = ""
    if pr and pr.n >= 2:
        over = f"{pr.n} seeds" if len(set(pr.orders)) < 2 else f"{pr.n} runs (seed × task order)"
        if c.p is None:
            test = f" Paired over {over}: the difference is the same on every pair, so there is no spread to test."
        elif c.scale == "log":  # a ratio: tested on the log of each pair's ratio
            test = (f" Paired over {over} at those settings, on the log of each pair's ratio: {a}'s over {b}'s less 1 "
                    f"{pr.mean:+.{digits}f}, p = {c.p:.3g} (Holm-adjusted in the family '{c.family}': "
                    f"{c.p_adjusted:.3g}).")
        else:
            test = (f" Paired over {over} at those settings: {a} − {b} = {pr.mean:.{digits}f}{unit}, p = {c.p:.3g} "
                    f"(Holm-adjusted in the family '{c.family}': {c.p_adjusted:.3g})"
                    + (f"; equivalence within ±{c.margin:g}{unit} (TOST) p = {c.tost_p:.3g}" if c.tost_p is not None
                       else "") + ".")
    # "less" = A loses less of the base model: more facts right, or a lower chat KL or perplexity ratio
    lost = None if pr is None else (-pr.mean if c.measure in HIGHER_IS_BETTER else pr.mean)
    c.verdict = verdict_of(False, c.p_adjusted, lost, c.tost_p, _spread(pr, lost, c.margin))
    if c.verdict in ("less", "more"):
        why = (f" Verdict: {c.verdict} — {a} keeps {'more' if c.verdict == 'less' else 'less'} of the base model "
               f"than {b} by this measure "
               + (f"(adjusted p = {c.p_adjusted:.3g})." if c.p_adjusted is not None else
                  "(every pair differs by the same amount, " + ("a non-zero one" if c.margin is None else
                                                                "at or beyond the margin")
                  + ": no spread left to test)."))
    elif c.verdict == "equivalent":
        why = (f" Verdict: equivalent — within ±{c.margin:g}{unit} "
               + (f"(TOST p = {c.tost_p:.3g})." if c.tost_p is not None else
                  "(every pair differs by the same amount, inside the margin: no spread left to test)."))
    elif pr is None or pr.n < 2:
        why = " Verdict: inconclusive — run at least two seeds per setting to test it."
    else:
        why = (" Verdict: inconclusive — no difference is shown"
               + ("" if c.margin is None else f", nor equivalence within ±{c.margin:g}{unit}")
               + (f"; about {c.seeds_needed} seeds would decide it (80 % power, if this spread holds)"
                  if c.seeds_needed else "") + ".")
    c.sentence = head + test + why


def chat_comparisons(groups: dict[str, Group], points: list[Point], labels: list[str],
                     margin: float = DEFAULT_MARGIN, pairs: list[tuple[str, str]] | None = None) -> list[Comparison]:
    """The base's abilities tested at the primary level: for every pair of methods, the chat KL, the facts right and
    the probe text's perplexity ratio compared by a paired t-test over runs at the nearest settings (facts also by
    TOST within `margin` points), all Holm-adjusted together (FAMILY_CHAT). Empty where no run has the chat
    probe."""
    if not any(p.chat_kl is not None for p in points):
        return []
    return _family(groups, points, labels, None, margin, measures=tuple(CHAT_TESTED), pairs=pairs)


def chat_sentence(c: Comparison) -> str:
    """What the chat probe says at the matched learning ('' where it did not run for both methods)."""
    a, b = c.methods
    ka, kb, fa, fb = c.chat_kl.get(a), c.chat_kl.get(b), c.facts.get(a), c.facts.get(b)
    if not (ka and kb and ka.mean is not None and kb.mean is not None):
        return ""
    out = (f" Chat retention there: KL to the base on its chat replies {a} {interval_text(ka, 4)}, "
           f"{b} {interval_text(kb, 4)}")
    if fa and fb and fa.mean is not None and fb.mean is not None:
        out += f"; factual questions right {a} {interval_text(fa, 1, ' pts')}, {b} {interval_text(fb, 1, ' pts')}"
    return out + "."


def against_base(points: list[Point], groups: dict[str, Group], margin: float = DEFAULT_MARGIN) -> list[AgainstBase]:
    """Does each setting keep the base model's abilities? For every (method, lr) and each measure of AGAINST_BASE:
    the change of each run from the base (facts: its points right minus the base's in the same run; the probe
    text's perplexity, WikiText-2 in the SmolLM2 study: its ratio to the base's, tested on its log (RATIOS), and
    reported as the geometric mean ratio less 1), a two-sided one-sample t-test over runs and TOST within ±margin
    (facts: the study's margin in points; perplexity: ±PPL_MARGIN, ±log(1.05) on the log scale), all Holm-adjusted
    together (FAMILY_BASE). Empty where no run measured either."""
    out = []
    for k, g in groups.items():
        runs = [p for p in points if p.key == k]
        for measure, (_, _, _, base_field) in AGAINST_BASE.items():
            pairs = [(getattr(p, measure), getattr(p, base_field) if base_field else 1.0) for p in runs]
            pairs = [(v, b) for v, b in pairs if v is not None and b is not None]
            if not pairs:
                continue
            m = margin if base_field else PPL_MARGIN
            diffs, ratio = _differences(measure, pairs)
            change, tost_p = _tested(diffs, m, ratio)
            out.append(AgainstBase(key=k, method=g.method, lr=g.lr, setting=dict(g.setting), measure=measure,
                                   base=_mean([b for _, b in pairs], False),
                                   value=_mean([v for v, _ in pairs], ratio), change=change["mean"],
                                   ci95=change["ci95"], n=change["n"], sd=change["sd"], p=change["p_value"],
                                   tost_p=tost_p, margin=m, family=FAMILY_BASE, scale="log" if ratio else "linear"))
    for t, q in zip(out, stats.holm([t.p for t in out])):
        t.p_adjusted = q
        decide_against_base(t)
    return out


def _differences(measure: str, pairs: list[tuple[float, float]]) -> tuple[list[float], bool]:
    """(each pair's difference, whether on the log scale): log(a / b) for a measure of RATIOS whose values are all
    positive, else a − b."""
    log = measure in RATIOS and all(a > 0 and b > 0 for a, b in pairs)
    return [math.log(a / b) if log else a - b for a, b in pairs], log


def _mean(values: list[float], log: bool) -> float:
    """The geometric mean on the log scale, else the arithmetic mean."""
    return math.exp(sum(map(math.log, values)) / len(values)) if log else sum(values) / len(values)


def paired_test(measure: str, pairs: list[tuple[float, float]], margin: float | None = None
                ) -> tuple[tuple[float, float], dict, float | None, bool]:
    """Two sides paired (a, b) on one measure: (each side's mean, the paired t-test of a − b as stats.paired_t gives
    it, the TOST p within ±margin or None, whether on the log scale). A ratio measure (RATIOS) is tested on log(a / b),
    its means geometric and its difference and interval a's over b's less 1."""
    diffs, log = _differences(measure, pairs)
    t, tost_p = _tested(diffs, margin, log)
    return (_mean([a for a, _ in pairs], log), _mean([b for _, b in pairs], log)), t, tost_p, log


def margin_text(margin: float | None, unit: str, measure: str) -> str:
    """An equivalence margin as sentences and tables say it: a ratio's (RATIOS: perplexity to the base's or between
    two sides) as a share, ±5 %; a measure in points with its unit, ±3 pts; else as is; "no margin" for None."""
    if margin is None:
        return "no margin"
    return f"±{margin * 100:g} %" if measure in RATIOS else f"±{margin:g}{unit}"


def _tested(diffs: list[float], margin: float | None, log: bool) -> tuple[dict, float | None]:
    """(stats.paired_t of diffs, TOST p within ±margin). With `log`, diffs are logs of ratios: the test and TOST
    (within ±log(1 + margin)) run on them, and mean and interval come back as ratios less 1 (e^x − 1)."""
    t = stats.paired_t(diffs)
    if not log:
        return t, None if margin is None else stats.tost_paired(diffs, margin)
    back = {**t, "mean": math.expm1(t["mean"]) if t["mean"] is not None else None,
            "ci95": [math.expm1(c) for c in t["ci95"]] if t["ci95"] else None}
    return back, None if margin is None else stats.tost_paired(diffs, math.log1p(margin))


def decide_against_base(t: AgainstBase) -> None:
    """The verdict and sentence of one setting against the base, once its Holm-adjusted p is known: keeps (TOST
    p < 0.05 within ±margin — also where the change is real but that small: kept in practice, and the sentence says
    so), loses / gains (adjusted p < 0.05 and not within the margin, by whether the change keeps less or more), else
    inconclusive. At least two runs that all changed it by exactly the same amount (an untouched model does) leave
    nothing to test: keeps inside the margin, loses / gains beyond it."""
    label, digits, unit, base_field = AGAINST_BASE[t.measure]
    within = margin_text(t.margin, unit, t.measure)
    who = described(t.method, t.setting) if t.setting else key(t.method, t.lr)
    ci = f" [{t.ci95[0]:+.{digits}f}, {t.ci95[1]:+.{digits}f}]" if t.ci95 else ""
    runs = f"{t.n} run{'s' if t.n != 1 else ''}"
    if base_field:
        head = (f"{who}: {label} {t.value:.{digits}f}{unit} against the base's {t.base:.{digits}f}{unit}, a change of "
                f"{t.change:+.{digits}f}{unit}{ci} over {runs} (each paired with the base in its own run).")
    else:  # a ratio to the base, measured in each run
        mean = "the geometric mean over runs, " if t.scale == "log" else ""
        tested = "; tested on the log of each ratio" if t.scale == "log" else ""
        head = (f"{who}: {label.removesuffix(' / the base' + chr(39) + 's')} {t.value:.{digits}f}× the base's "
                f"({mean}a change of {t.change:+.{digits}f}{ci}) over {runs} (each a ratio to the base in its own "
                f"run{tested}).")
    worse = t.change < 0 if t.measure in HIGHER_IS_BETTER else t.change > 0
    side = "loses some of the base" if worse else "does better than the base"
    changed = t.p_adjusted is not None and t.p_adjusted < stats.ALPHA and t.change != 0
    test = (f" t-test over runs p = {t.p:.3g}, Holm-adjusted in the family '{t.family}' {t.p_adjusted:.3g}"
            if t.p is not None else "")
    if t.tost_p is not None and t.tost_p < stats.ALPHA:  # within the margin: kept, even where the change is real
        t.verdict = "keeps"
        why = (f" Within {within} of the base (TOST p = {t.tost_p:.3g})"
               + (f"; a real but small change ({test.strip()})" if changed else "")
               + ": it keeps the base's by this measure.")
    elif changed:
        t.verdict = "loses" if worse else "gains"
        why = f"{test}: it {side} by this measure, beyond what {within} could call the same."
    elif t.n >= 2 and not t.sd and abs(t.change) < t.margin:  # no spread: every run inside the margin, exactly
        t.verdict = "keeps"
        why = (f" Every run changed it by exactly {t.change:+.{digits}f}{unit}, inside {within}, so no "
               "spread is left to test: it keeps the base's by this measure (a model left untouched reads so).")
    elif t.n >= 2 and not t.sd:  # no spread, every run beyond the margin the same way
        t.verdict = "loses" if worse else "gains"
        why = (f" Every run changed it by exactly {t.change:+.{digits}f}{unit}, beyond {within}, so no "
               f"spread is left to test: it {side} by this measure.")
    else:
        t.verdict = "inconclusive"
        if t.n < 2:
            why = " One run: no test; run more seeds."
        else:
            why = (f" Neither a change (p = {t.p:.3g}, adjusted {t.p_adjusted:.3g}) nor equivalence within "
                   f"{within} (TOST p = {t.tost_p:.3g}) is shown.")
    t.sentence = head + why


# what at_chosen compares each pair on, each measure a family of its own (Holm within it): (what it is, digits,
# unit, its equivalence margin: "study" for the study's margin in points, a number, or None for none)
AT_CHOSEN = {"learning_test": ("learning on test rows", 1, " pts", "study"),
             "forgetting": ("forgetting of every earlier task", 1, " pts", "study"),
             "forgetting_known": ("forgetting of what each run knew", 1, " pts", "study"),
             "chat_kl": ("KL to the base on its chat replies", 4, "", None),
             "facts": ("factual questions right", 1, " pts", "study"),
             "probe_ppl_ratio": ("WikiText-2 perplexity / the base's", 3, "", PPL_MARGIN)}
FAMILY_CHOSEN = "each method at its chosen learning rate"


def chosen_spec(measure: str) -> tuple:
    """AT_CHOSEN's entry for a record's measure ("learning", where a side lacked test rows, reads as learning_test)."""
    return AT_CHOSEN["learning_test" if measure == "learning" else measure]


def at_chosen(points: list[Point], groups: dict[str, Group], best: dict[str, Best | None], labels: list[str],
              margin: float = DEFAULT_MARGIN, pairs: list[tuple[str, str]] | None = None) -> list[AtChosen]:
    """Each pair of methods (or those of `pairs`), each at its own chosen learning rate (`best`), on each measure
    of AT_CHOSEN: the runs of the two chosen groups paired by seed × task order, the mean difference a − b with
    its Student-t interval, a paired t-test and TOST within the measure's margin; Holm within each measure's
    family (FAMILY_CHOSEN: measure). Learning is on test rows (the rows the rate was not chosen on); where either
    side lacks them, on every eval row, and the record's measure says so. Empty where fewer than two methods have
    a chosen rate."""
    pairs = list(itertools.combinations(labels, 2)) if pairs is None else pairs
    out: list[AtChosen] = []
    for a, b in pairs:
        ba, bb = best.get(a), best.get(b)
        if ba is None or bb is None or ba.key not in groups or bb.key not in groups:
            continue
        runs = {side: {p.unit: p for p in points if p.key == k} for side, k in ((a, ba.key), (b, bb.key))}
        shared = sorted(set(runs[a]) & set(runs[b]))
        for measure, (_, _, _, m) in AT_CHOSEN.items():
            name = measure
            if measure == "learning_test" and any(getattr(runs[side][u], name) is None for side in (a, b)
                                                  for u in shared):
                name = "learning"
            both = [(getattr(runs[a][u], name), getattr(runs[b][u], name)) for u in shared]
            both = [(x, y) for x, y in both if x is not None and y is not None]
            if not both:
                continue
            width = margin if m == "study" else m
            means, t, tost_p, ratio = paired_test(name, both, width)
            out.append(AtChosen(methods=[a, b], keys=[ba.key, bb.key],
                                settings=[dict(groups[ba.key].setting), dict(groups[bb.key].setting)],
                                measure=name, means=list(means),
                                difference=t["mean"], ci95=t["ci95"], n=t["n"], sd=t["sd"], p=t["p_value"],
                                tost_p=tost_p, margin=width, family=f"{FAMILY_CHOSEN}: {measure}",
                                scale="log" if ratio else "linear"))
    for family in dict.fromkeys(t.family for t in out):
        mine = [t for t in out if t.family == family]
        for t, q in zip(mine, stats.holm([t.p for t in mine])):
            t.p_adjusted = q
    for t in out:
        decide_at_chosen(t)
    return out


def decide_at_chosen(t: AtChosen) -> None:
    """The verdict and sentence of one pair at its chosen rates on one measure, once its adjusted p is known:
    more / less (Holm-adjusted p < 0.05; of learning, whether the first learns more; of a loss, "less" = the first
    loses less: forgets less, drifts less, keeps more facts), equivalent (TOST p < 0.05 within ±margin, and no
    difference shown), else inconclusive. At least two pairs that all differ by exactly the same amount leave no
    spread to test: decided by that difference against the margin (`without_spread`)."""
    label, digits, unit, _ = chosen_spec(t.measure)
    within = margin_text(t.margin, unit, t.measure)
    if t.measure == "learning":
        label = "learning on every eval row (a side lacks test rows)"
    a, b = t.methods
    who = [described(m, s) if s else k for m, s, k in zip(t.methods, t.settings, t.keys)]
    ci = f" [{t.ci95[0]:+.{digits}f}, {t.ci95[1]:+.{digits}f}]" if t.ci95 else ""
    pairs = f"{t.n} paired run{'s' if t.n != 1 else ''} (seed × task order"
    if t.scale == "log":  # a ratio: geometric means, a's over b's less 1, tested on the log of each pair's ratio
        head = (f"{who[0]} against {who[1]}, each at its chosen rate, {label}: {t.means[0]:.{digits}f} against "
                f"{t.means[1]:.{digits}f} (geometric means), {a}'s over {b}'s less 1 {t.difference:+.{digits}f}{ci} "
                f"over {pairs}; tested on the log of each pair's ratio).")
    else:
        head = (f"{who[0]} against {who[1]}, each at its chosen rate, {label}: {t.means[0]:.{digits}f}{unit} against "
                f"{t.means[1]:.{digits}f}{unit}, a difference of {t.difference:+.{digits}f}{unit}{ci} over {pairs}).")
    learning = t.measure in ("learning_test", "learning")
    up = t.difference > 0
    better = up if learning or t.measure in HIGHER_IS_BETTER else not up
    word = ("more" if up else "less") if learning else ("less" if better else "more")
    what = (f"{a} learns {'more' if up else 'less'} than {b}" if learning else
            f"{a} loses {'less' if better else 'more'} by this measure than {b}")
    shown = t.p_adjusted is not None and t.p_adjusted < stats.ALPHA and t.difference != 0
    test = (f" Paired t-test p = {t.p:.3g}, Holm-adjusted in the family '{t.family}' {t.p_adjusted:.3g}"
            if t.p is not None else "")
    spread = without_spread(t.n, t.sd, t.difference, t.margin)
    if shown:
        t.verdict, why = word, f"{test}: {what}."
    elif t.tost_p is not None and t.tost_p < stats.ALPHA:
        t.verdict = "equivalent"
        why = f"{test}; within {within} (TOST p = {t.tost_p:.3g}): the same by this measure."
    elif spread == "differs":
        t.verdict, why = word, (f" Every pair differs by exactly {t.difference:+.{digits}f}{unit}, so no spread is "
                                f"left to test: {what}.")
    elif spread == "same":
        t.verdict = "equivalent"
        why = (f" Every pair differs by exactly {t.difference:+.{digits}f}{unit}, inside {within}, so no "
               "spread is left to test: the same by this measure.")
    else:
        t.verdict = "inconclusive"
        why = (" One pair: no test; run more seeds." if t.n < 2 else
               f"{test}: neither a difference nor" + (f" equivalence within {within}"
                                                      + (f" (TOST p = {t.tost_p:.3g})" if t.tost_p is not None else "")
                                                      if t.margin is not None else " (no margin: no equivalence test)")
               + " is shown.")
    t.sentence = head + why


def warnings_of(orders: list[list[str]], points: list[Point]) -> list[str]:
    """Per task order: when the only task any of its runs learned is its last one."""
    out = []
    for i, tasks in enumerate(orders):
        learned = {t for p in points if p.order == i for t in p.learned}
        if len(tasks) > 1 and learned == {tasks[-1]}:
            which = f" in order {i + 1} ({', '.join(tasks)})" if len(orders) > 1 else ""
            out.append(f"Only the last task, {tasks[-1]}, was learned by any run{which}, so forgetting is measured "
                       "on tasks nobody learned; put a learnable task earlier in the order.")
    return out


# a Point's numbers that are not drift probes: what a probe is checked against, and who the run is
NOT_PROBES = frozenset({"lr", "seed", "order", "learning", "forgetting", "bwt", "acc", "learned_earlier",
                        "forgetting_learned", "bwt_learned", "learning_val", "learning_test", "known_earlier",
                        "forgetting_known", "facts_base"})


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def probe_value(p: Point, name: str):
    """A probe of one run: a Point field, or a key a newer version stored that this one keeps in `extra`."""
    return getattr(p, name) if name in Point.__dataclass_fields__ else p.extra.get(name)


def probe_fields(points: list[Point]) -> list[str]:
    """The drift probes the study's runs have: every number-valued Point field that is not an outcome or the run's
    identity (kl_to_base, self_ppl_ratio, probe_ppl_ratio, and any such field added later), then every number a
    run stored under a key this version does not know (a probe a newer version added, e.g. chat_kl), in order."""
    declared = [f.name for f in dataclasses.fields(Point) if f.name not in NOT_PROBES and
                str(f.type).replace(" ", "") in ("float|None", "float")]
    extra = []
    for p in points:
        extra += [k for k, v in p.extra.items() if k not in NOT_PROBES and k not in extra and _number(v)]
    return declared + extra


FAMILY_PROBES = "which drift probe tracks forgetting"


def probe_tracks(points: list[Point], target: str = "forgetting") -> list[ProbeTrack]:
    """For each drift probe the runs have (`probe_fields`): Spearman's ρ with `target` (forgetting, or
    forgetting_known: of what each run knew) over every run of the study, a seeded bootstrap interval over runs and
    the two-sided p of ρ = 0. A probe is worth watching in place of forgetting only where it tracks it: decided by
    `decide_probes` once the whole family is known (here, for this target alone)."""
    out = []
    for probe in probe_fields(points):
        pairs = [(probe_value(p, probe), getattr(p, target)) for p in points
                 if _number(probe_value(p, probe)) and getattr(p, target) is not None]

        def rho(sample):
            return stats.spearman([x for x, _ in sample], [y for _, y in sample])

        value = rho(pairs)
        ci = stats.bootstrap(pairs, rho, draws=BOOTSTRAP_DRAWS) if value is not None else None
        runs = [p for p in points if _number(probe_value(p, probe)) and getattr(p, target) is not None]
        within, p_within, settings = stats.spearman_within([x for x, _ in pairs], [y for _, y in pairs],
                                                           [(p.method, p.lr) for p in runs])
        out.append(ProbeTrack(probe=probe, target=target, rho=value, ci95=ci, n=len(pairs),
                              p=stats.spearman_p(value, len(pairs)), family=FAMILY_PROBES,
                              rho_within=within, p_within=p_within, settings=settings))
    decide_probes(out)
    return out


def within_text(t: ProbeTrack) -> str:
    """", within settings ρ = 0.06, p = 1" (Holm-adjusted, and whether it tracked there); "" where untested."""
    if t.p_within_adjusted is None or t.rho_within is None:
        return ""
    return (f", within settings ρ = {t.rho_within:.2f}, p = {t.p_within_adjusted:.2g}"
            + (" — tracked it there" if t.tracks_within else ""))


def drift_sign(probe: str) -> int:
    """The sign of ρ when a probe runs the way drift does: +1 for a probe that rises as the model drifts (a KL, a
    perplexity), −1 for one that falls (facts right, HIGHER_IS_BETTER)."""
    return -1 if probe in HIGHER_IS_BETTER else 1


def decide_probes(tracks: list[ProbeTrack]) -> None:
    """Holm over the family (every probe and target given), then `tracks`: adjusted p < 0.05 with ρ the way drift
    runs (drift_sign) and the bootstrap interval on that side of 0 too, where there is one. The within-setting
    tests are a family of their own (the same probes and targets): `tracks_within` on their Holm-adjusted p and
    ρ's side alike."""
    def drifts(t: ProbeTrack, rho: float | None) -> bool:
        return rho is not None and rho * drift_sign(t.probe) > 0

    for t, q in zip(tracks, stats.holm([t.p for t in tracks])):
        t.p_adjusted = q
        inside = not t.ci95 or min(c * drift_sign(t.probe) for c in t.ci95) > 0
        t.tracks = bool(q is not None and q < stats.ALPHA and drifts(t, t.rho) and inside)
    for t, q in zip(tracks, stats.holm([t.p_within for t in tracks])):
        t.p_within_adjusted = q
        t.tracks_within = bool(q is not None and q < stats.ALPHA and drifts(t, t.rho_within))


def order_effect(orders: list[list[str]], labels: list[str], points: list[Point]) -> list[OrderEffect]:
    """With several task orders: each method's learning and forgetting under each order, over all its runs."""
    if len(orders) < 2:
        return []
    out = []
    for label in labels:
        for i, tasks in enumerate(orders):
            mine = [p for p in points if p.method == label and p.order == i]
            if mine:
                out.append(OrderEffect(method=label, order=i, tasks=list(tasks),
                                       learning=Summary.of(stats.summary([p.learning for p in mine])),
                                       forgetting=Summary.of(stats.summary([p.forgetting for p in mine]))))
    return out


def analyse(settings: StudySettings, base: Row | None, plan: list[PlanEntry], points: list[Point],
            metrics_of, tasks: list[str] | None = None, pairs: list[tuple[str, str]] | None = None) -> StudyRecord:
    """The whole analysis of a study's points. `pairs`: the (a, b) method pairs each family compares (default:
    every pair of the grid's methods), e.g. every method against the two frontier methods only."""
    groups = groups_of(points)
    labels = list(settings.lrs)
    orders = settings.orders or [list(tasks or [])]
    fronts = {label: frontier_of(groups, label) for label in labels}
    chat_fronts = {label: frontier_of(groups, label, "chat_kl") for label in labels
                   if any(g.method == label and g.mean("chat_kl") is not None for g in groups.values())}
    best = {label: best_of(groups, label, settings.kl_budget) for label in labels}
    comparisons = _family(groups, points, labels, metrics_of, settings.margin, pairs=pairs)
    tops = _family(groups, points, labels, metrics_of, settings.margin, top=True, pairs=pairs)
    knowns = _family(groups, points, labels, metrics_of, settings.margin, measures=("forgetting_known",), pairs=pairs)
    chats = chat_comparisons(groups, points, labels, settings.margin, pairs=pairs)
    bases = against_base(points, groups, settings.margin)
    chosen = at_chosen(points, groups, best, labels, settings.margin, pairs=pairs)
    probes = probe_tracks(points)
    probes_known = probe_tracks(points, "forgetting_known") if any(p.forgetting_known is not None for p in points) \
        else []
    decide_probes(probes + probes_known)  # one family: every probe against both targets
    return StudyRecord(settings=settings, notes={"best_rule": BEST_RULE, "interpolation": INTERPOLATION,
                                                 "family": f"{FAMILY}: every comparison's paired test and row test, "
                                                           "Holm-adjusted together"},
                       base=base, plan=plan, points=points, groups=groups, frontier=fronts,
                       chat_frontier=chat_fronts, best=best,
                       comparison=comparisons, comparison_top=tops, comparison_known=knowns,
                       comparison_chat=chats, against_base=bases, at_chosen=chosen,
                       tasks=list(tasks or []),
                       warnings=warnings_of(orders, points),
                       order_effect=order_effect(orders, labels, points), probes=probes,
                       probes_known=probes_known)


def top_comparisons(rec: StudyRecord, metrics_of=None) -> list[Comparison]:
    """The secondary comparisons of a study: every pair of its methods at the most learning both fits reach (where
    the middle of the shared range can fall below what the per-run test calls learned), Holm-adjusted as a family
    of their own (FAMILY_TOP), with verdicts and sentences as the primary ones."""
    return _family(rec.groups, rec.points, rec.labels, metrics_of, rec.settings.margin, top=True)


def _family(groups: dict[str, Group], points: list[Point], labels: list[str], metrics_of, margin: float,
            top: bool = False, measures: tuple[str, ...] = ("forgetting",),
            pairs: list[tuple[str, str]] | None = None) -> list[Comparison]:
    """Every pair of methods (or those of `pairs`) compared at one level (the middle of the shared learning range,
    or with `top` its top) on each of `measures`, all Holm-adjusted together, then each decided."""
    pairs = list(itertools.combinations(labels, 2)) if pairs is None else pairs
    comparisons = [compare(groups, points, a, b, metrics_of, margin, top=top, measure=m)
                   for a, b in pairs for m in measures]
    adjust(comparisons)
    for c in comparisons:
        decide(c, groups, points)
    return comparisons


def adjust(comparisons: list[Comparison]) -> None:
    """Holm over the family: every comparison's paired test and row test together."""
    ps = [c.p for c in comparisons] + [c.rows.p_value if c.rows else None for c in comparisons]
    adjusted = stats.holm(ps)
    for i, c in enumerate(comparisons):
        c.p_adjusted = adjusted[i]
        if c.rows:
            c.rows.p_adjusted = adjusted[len(comparisons) + i]


# -- a stored study, analysed again -----------------------------------------------------------------------------
def upgraded(p: Point, order: list[str], matrix: list | None = None) -> tuple[Point, list[str]]:
    """A point as stored by an older version, with what today's measures add derived from what it kept: the
    earlier tasks it learned (from its `learned` tasks and its task order) and, from its accuracy matrix when one
    is given, forgetting and BWT over those tasks. Returns the point and the measures it still lacks."""
    q = dataclasses.replace(p, extra=dict(p.extra))
    missing = []
    if q.learned_earlier is None:
        q.learned_earlier = len(set(q.learned) & set(order[:-1]))
    if q.forgetting_learned is None and q.bwt_learned is None:
        keep = [j for j, t in enumerate(order[:-1]) if t in q.learned]
        if matrix is not None:
            earlier = earlier_tasks(matrix, keep)
            q.forgetting_learned = None if earlier["forgetting"] is None else 100 * earlier["forgetting"]
            q.bwt_learned = None if earlier["bwt"] is None else 100 * earlier["bwt"]
        elif keep:
            missing.append("forgetting_learned")
    if q.learning_val is None or q.learning_test is None:
        missing.append("learning_val")
    if q.known_earlier is None:
        missing.append("forgetting_known")
    return q, missing


def reanalyse(rec: StudyRecord, tasks: list[str] | None = None, metrics_of=None, matrices: dict | None = None,
              source: str = "") -> StudyRecord:
    """A stored study's analysis (groups, frontier, best lr, comparisons with their verdicts and Holm family,
    warnings, order effect, probe correlations) recomputed with today's code; nothing is trained.

    Each point is measured again (`point_measures`) from its run's metrics where `metrics_of(run_id)` returns them
    (the study folder is here); otherwise the stored point is `upgraded` (`matrices`: {run_id: accuracy matrix},
    e.g. bench/forgetting_frontier.py's matrices file). The settings (margin, kl_budget) are `rec.settings`: set
    them first to re-decide at another margin. `tasks` (training order) is needed when study.json predates storing
    them. The result's `reanalysis` names each measure or test that could not be recomputed, and why."""
    tasks = list(rec.tasks or tasks or [])
    if not tasks:
        raise CurloraError("This study.json does not store its tasks (it predates that): give them in training "
                           "order, e.g. --tasks mrpc,sst2,reviews.")
    runs = {p.run_id: (metrics_of(p.run_id) if metrics_of else None) for p in rec.points}
    points, missing, remeasured = [], set(), 0
    for p in rec.points:
        m = runs[p.run_id]
        measures = point_measures(m, p.method) if m is not None else None
        if measures is not None:
            points.append(dataclasses.replace(p, extra=dict(p.extra), **measures))
            remeasured += 1
            continue
        order = list(rec.settings.orders[p.order]) if rec.settings.orders else tasks
        q, lacks = upgraded(p, order, (matrices or {}).get(p.run_id))
        points.append(q)
        missing.update(lacks)
    every_run = bool(points) and remeasured == len(points)
    new = analyse(rec.settings, rec.base, rec.plan, points, metrics_of if every_run else None, tasks)
    new.notes = {**rec.notes, **new.notes}
    new.extra, new.bases = dict(rec.extra), dict(rec.bases)  # each seed's base row (rows_per_seed) is measured, kept
    if not every_run:
        new.notes["family"] = f"{FAMILY}: every comparison's paired test, Holm-adjusted together (no row test: " \
                              "the runs' per-row results are not here)"
    stored = len(points) - remeasured
    done = ["points' learned earlier tasks", "groups over seeds", "frontier", "best learning rate",
            "comparisons at matched learning (monotone fits, bootstrap intervals)", "paired t-test, TOST and seeds "
            "needed", "Holm within the family", "verdicts", "warnings", "order effect", "probe correlations",
            "each pair at its chosen rates"]
    lacks = []
    if not every_run:
        lacks.append("the McNemar row test: it needs every compared run's per-row results, and "
                     f"{stored} of {len(points)} runs are not here; the Holm family holds the paired tests only")
    if "learning_val" in missing:
        lacks.append("learning on validation and test rows (learning_val, learning_test): the stored points lack "
                     "them and their runs' per-row results are not here, so each best learning rate is chosen on "
                     "all eval rows")
    if "forgetting_learned" in missing:
        lacks.append("forgetting and BWT over the learned earlier tasks, for the points that learned one: no "
                     "accuracy matrix for their runs (give --matrices)")
    if "forgetting_known" in missing:
        lacks.append("forgetting of what each run knew (forgetting_known) and its family of comparisons: it needs "
                     "each run's accuracy right after every task with its row count and the majority-class shares, "
                     "which only the runs' metrics hold")
    new.reanalysis = Reanalysis(source=source, remeasured=remeasured, stored=stored, recomputed=done,
                                not_recomputed=lacks)
    return new


def together(records: list[StudyRecord], metrics_of=None, pairs: list[tuple[str, str]] | None = None
             ) -> StudyRecord:
    """Several studies of one experiment analysed as one (a study run in phases: more rates for a method, more
    methods, more seeds): the union of their grids (each method's rates sorted), seeds, plans and points, every
    family over all of them; the first record's settings otherwise (margin, kl_budget, task orders), its base row
    and tasks, and each seed's base row from the first record that measured it. `pairs`: as `analyse` (default:
    every pair of methods). That the studies are comparable (the same model, tasks, training and evaluation, no
    setting run in two of them) is the caller's to check: curlora/run/study.py `together` does."""
    if not records:
        raise CurloraError("No study to analyse.")
    first = records[0]
    labels = list(dict.fromkeys(m for r in records for m in r.settings.lrs))
    lrs = {m: sorted({lr for r in records for lr in r.settings.lrs.get(m, [])}) for m in labels}
    seeds = sorted({s for r in records for s in r.settings.seeds})
    settings = dataclasses.replace(first.settings, lrs=lrs, seeds=seeds)
    out = analyse(settings, first.base, [e for r in records for e in r.plan], [p for r in records for p in r.points],
                  metrics_of, tasks=first.tasks, pairs=pairs)
    out.notes = {**first.notes, **out.notes}
    out.bases = {seed: row for r in reversed(records) for seed, row in r.bases.items()}  # the first's wins
    return out
