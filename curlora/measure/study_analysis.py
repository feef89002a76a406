"""A study's analysis: from its finished runs to points, groups over seeds, each method's frontier, its best
learning rate and the comparison at matched learning, with the sentence that says it. Pure: no file is read or
written here (the running study, curlora/run/study.py, hands in the records and one function to read a run's
metrics for the row test), so every number can be checked on constructed inputs.

    point_measures(metrics, label)        one finished run's measures (Point fields), or None
    groups_of(points)                     {key: Group}: each measure over seeds (Student t, curlora/measure/stats.py)
    frontier_of(groups, label)            the groups no other group of that method beats on learning and forgetting
    best_of(groups, label, kl_budget)     the best lr by BEST_RULE
    compare(groups, fronts, points, a, b, metrics_of)   a against b at matched learning: a Comparison
    analyse(settings, base, plan, points, metrics_of)   all of it: a StudyRecord
"""

from __future__ import annotations

import itertools

from curlora.measure import stats
from curlora.measure.describe import described
from curlora.measure.record import Row, RunMetrics
from curlora.measure.study_record import (MEASURES, Best, Comparison, Group, Interpolated, Paired, PlanEntry, Point,
                                          RowsTest, StudyRecord, StudySettings, Summary, key)

CONSTANT_SHARE = 0.95
BEST_RULE = ("the highest mean learning among the learning rates whose mean KL to base is within kl_budget; "
             "without a budget (or when none is within it), the highest mean learning")
INTERPOLATION = "linear in learning between neighbouring frontier groups, means and interval half-widths alike"


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
    return {
        "learning": 100 * learning, "forgetting": pts(s.get("forgetting")), "bwt": pts(s.get("bwt")),
        "acc": pts(s.get("acc")), "kl_to_base": rec.kl_to_base[-1] if rec.kl_to_base else None,
        "self_ppl_ratio": ratio(rec.self_ppl[-1] if rec.self_ppl else None, base.self_ppl),
        "probe_ppl_ratio": ratio(rec.ppl[-1] if rec.ppl else None, base.ppl),
        "final_loss": [t.final_loss for t in rec.train],
        "constant_predictions": [metrics.tasks[j] for j, sh in enumerate(shares) if sh is not None
                                 and sh >= CONSTANT_SHARE],
        "learned": learned,
    }


# -- over seeds -------------------------------------------------------------------------------------------------
def groups_of(points: list[Point]) -> dict[str, Group]:
    members: dict[str, list[Point]] = {}
    for p in points:
        members.setdefault(p.key, []).append(p)
    out = {}
    for k, ps in members.items():
        out[k] = Group(method=ps[0].method, lr=ps[0].lr, setting=ps[0].setting, seeds=[p.seed for p in ps],
                       run_ids=[p.run_id for p in ps],
                       constant_predictions=sorted({t for p in ps for t in p.constant_predictions}),
                       **{name: Summary.of(stats.summary([getattr(p, name) for p in ps])) for name in MEASURES})
    return out


def frontier_of(groups: dict[str, Group], label: str) -> list[str]:
    """The (method, lr) groups of `label` no other group of it beats on both learning and forgetting (means)."""
    mine = {k: g for k, g in groups.items() if g.method == label and g.mean("learning") is not None
            and g.mean("forgetting") is not None}

    def beaten(g):
        return any(h.mean("learning") >= g.mean("learning") and h.mean("forgetting") <= g.mean("forgetting")
                   and (h.mean("learning") > g.mean("learning") or h.mean("forgetting") < g.mean("forgetting"))
                   for h in mine.values() if h is not g)

    front = [k for k, g in mine.items() if not beaten(g)]
    return sorted(front, key=lambda k: mine[k].mean("learning"))


def best_of(groups: dict[str, Group], label: str, kl_budget: float | None) -> Best | None:
    mine = {k: g for k, g in groups.items() if g.method == label and g.mean("learning") is not None}
    if not mine:
        return None
    within = {k: g for k, g in mine.items() if kl_budget is not None and g.mean("kl_to_base") is not None
              and g.mean("kl_to_base") <= kl_budget}
    pool, note = (within, f"within the KL budget {kl_budget:g}") if within else (mine, (
        f"no learning rate is within the KL budget {kl_budget:g}: the highest learning" if kl_budget is not None
        else "no KL budget set: the highest learning"))
    k = max(pool, key=lambda k: pool[k].mean("learning"))
    return Best(key=k, lr=pool[k].lr, rule=BEST_RULE, chosen=note)


# -- at matched learning -----------------------------------------------------------------------------------------
def interpolate(groups: dict[str, Group], front: list[str], level: float, name: str) -> Interpolated | None:
    """`name` along a frontier at learning = level: linear between the neighbouring groups, and so is the half
    width of the interval (an approximation, stated in study.json)."""
    pts = [(groups[k].mean("learning"), groups[k].measure(name), k) for k in front
           if groups[k].mean(name) is not None]
    if not pts or level < pts[0][0] - 1e-12 or level > pts[-1][0] + 1e-12:
        return None
    for (x0, s0, k0), (x1, s1, k1) in itertools.pairwise(pts):
        if x0 - 1e-12 <= level <= x1 + 1e-12:
            w = 0.0 if x1 == x0 else (level - x0) / (x1 - x0)
            break
    else:
        x0, s0, k0 = x1, s1, k1 = min(pts, key=lambda p: abs(p[0] - level))
        w = 0.0
    mean = (1 - w) * s0.mean + w * s1.mean
    halves = [(s.ci95[1] - s.ci95[0]) / 2 if s.ci95 else None for s in (s0, s1)]
    half = None if None in halves else (1 - w) * halves[0] + w * halves[1]
    return Interpolated(mean=mean, ci95=None if half is None else [mean - half, mean + half], between=[k0, k1],
                        weight=w)


def _nearest(groups: dict[str, Group], front: list[str], level: float) -> str:
    return min(front, key=lambda k: abs(groups[k].mean("learning") - level))


def rows_test(by: dict, seeds: list[int], ka: str, kb: str, metrics_of) -> RowsTest | None:
    """Exact McNemar (two-sided) over the final-stage rows of the earlier tasks, pooled over the seeds both groups
    ran (`by`: (group key, seed) -> Point; `metrics_of(run_id)` -> RunMetrics): does one method keep more rows
    right than the other?"""
    b = c = rows = 0
    for seed in seeds:
        pa, pb = by[(ka, seed)], by[(kb, seed)]
        ma, mb = metrics_of(pa.run_id), metrics_of(pb.run_id)
        ra, rb = ma.methods[pa.method], mb.methods[pb.method]
        last = len(ra.matrix) - 1
        for j in range(len(ma.tasks) - 1):
            ca, cb = ra.cell(last, j)["correct"], rb.cell(last, j)["correct"]
            if ca is None or cb is None or len(ca) != len(cb):
                return None
            db, dc = stats.discordant(ca, cb)
            b, c, rows = b + db, c + dc, rows + len(ca)
    if not rows:
        return None
    p = min(1.0, 2 * min(stats.mcnemar_greater(b, c), stats.mcnemar_greater(c, b)))
    return RowsTest(rows=rows, only_first_right=b, only_second_right=c, p_value=p)


def interval_text(s: Summary | Interpolated | dict | None, digits: int = 2, unit: str = "",
                  single: str = " (one seed: no interval)") -> str:
    """A summary as "mean [lo, hi]" (the study's sentences, the Compare tab, bench/demo_study_time.py);
    `single` follows the mean when there is no interval."""
    if isinstance(s, dict):
        s = Summary.of(s)
    if s is None or s.mean is None:
        return "n/a"
    ci = s.ci95
    return f"{s.mean:.{digits}f}{unit}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else single)


def compare(groups: dict[str, Group], fronts: dict[str, list[str]], points: list[Point], a: str, b: str,
            metrics_of) -> Comparison:
    """Methods a and b at matched learning: the highest learning both frontiers reach."""
    fa, fb = fronts.get(a) or [], fronts.get(b) or []
    out = Comparison(methods=[a, b])
    if not fa or not fb:
        out.sentence = f"No comparison of {a} and {b}: one of them has no finished learning rate yet."
        return out
    la = [groups[k].mean("learning") for k in fa]
    lb = [groups[k].mean("learning") for k in fb]
    lo, hi = max(min(la), min(lb)), min(max(la), max(lb))
    if lo > hi + 1e-12:
        out.sentence = (f"{a} and {b} never reach the same learning: {a}'s learning rates span "
                        f"{min(la):.1f} to {max(la):.1f} points, {b}'s {min(lb):.1f} to {max(lb):.1f}; widen a "
                        "grid to compare them at matched learning.")
        return out
    level = hi
    out.learning = level
    for name in ("forgetting", "kl_to_base"):
        setattr(out, name, {a: interpolate(groups, fa, level, name), b: interpolate(groups, fb, level, name)})
    ka, kb = _nearest(groups, fa, level), _nearest(groups, fb, level)
    out.nearest = {a: ka, b: kb}
    by = {(p.key, p.seed): p for p in points}
    seeds = sorted({s for (k, s) in by if k == ka} & {s for (k, s) in by if k == kb})
    diffs = [by[(ka, s)].forgetting - by[(kb, s)].forgetting for s in seeds
             if by[(ka, s)].forgetting is not None and by[(kb, s)].forgetting is not None]
    out.paired = Paired(seeds=seeds, **stats.paired_t(diffs)) if diffs else None
    out.rows = rows_test(by, seeds, ka, kb, metrics_of)
    fa_, fb_ = out.forgetting[a], out.forgetting[b]
    out.intervals_overlap = stats.overlap(fa_ and fa_.ci95, fb_ and fb_.ci95)
    sa, sb = groups[ka].setting, groups[kb].setting
    head = (f"At matched learning ({level:.1f} points above the better of the majority class and the base), "
            f"{a} forgets {interval_text(fa_, unit=' pts')} and {b} {interval_text(fb_, unit=' pts')} (interpolated "
            f"along each frontier; nearest settings {described(a, sa)} and {described(b, sb)}).")
    test = ""
    if out.paired and out.paired.n >= 2:
        pr = out.paired
        test = (f" Paired over {pr.n} seeds at those settings: {a} − {b} = {pr.mean:.2f} pts, "
                f"p = {pr.p_value:.3f}, d_z = {pr.effect_size:.2f}." if pr.p_value is not None else
                f" Paired over {pr.n} seeds: the difference is {pr.mean:.2f} pts on every seed, so there is "
                "no spread to test.")
    if out.rows:
        r = out.rows
        test += (f" On the earlier tasks' final rows ({r.rows} paired rows) {a} alone is right on "
                 f"{r.only_first_right}, {b} alone on {r.only_second_right} (exact McNemar p = {r.p_value:.3f}).")
    if out.intervals_overlap is None:
        verdict = " With one seed per setting there are no intervals: run more seeds before calling a winner."
    elif out.intervals_overlap:
        verdict = " The intervals overlap: neither method forgets measurably less at this learning."
    else:
        less = a if fa_.mean < fb_.mean else b
        verdict = f" The intervals do not overlap: {less} forgets less at this learning."
    if level <= 0:
        verdict += (f" Note: the highest learning both reach is not above the majority-class / base line, so this "
                    f"compares settings that learned nothing measurable; {a if max(la) <= max(lb) else b} never "
                    "learned above it on this grid.")
    out.sentence = head + test + verdict
    return out


def analyse(settings: StudySettings, base: Row | None, plan: list[PlanEntry], points: list[Point],
            metrics_of) -> StudyRecord:
    groups = groups_of(points)
    labels = list(settings.lrs)
    fronts = {label: frontier_of(groups, label) for label in labels}
    best = {label: best_of(groups, label, settings.kl_budget) for label in labels}
    comparisons = [compare(groups, fronts, points, a, b, metrics_of) for a, b in itertools.combinations(labels, 2)]
    return StudyRecord(settings=settings, notes={"best_rule": BEST_RULE, "interpolation": INTERPOLATION}, base=base,
                       plan=plan, points=points, groups=groups, frontier=fronts, best=best, comparison=comparisons)
