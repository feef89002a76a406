"""A study: each method traced over a grid of learning rates and seeds, drawn as learning against forgetting.

    python -m curlora study EXPERIMENT.yaml --lrs curlora=3e-3,1e-2,3e-2,1e-1 --lrs lora=2e-4,5e-4,1e-3,2e-3 \\
        --seeds 0,1,2 [--kl-budget 0.05]
    python -m curlora study --resume STUDY_ID

A single setting per method cannot say which method forgets less: the answer moves with the learning rate. A
study runs one ordinary run per (method, lr, seed) — each listed, resumable, exportable like any run — and keeps
`study.json` in a folder of its own in the run store (beside `study.yaml`, its settings, and `config.yaml`, the
experiment). Work that does not depend on the method is done once: the model is loaded once, the tasks are read
and encoded once, the base row (stage 0, with the self-probe texts and the base's reference distribution) is
measured once and handed to every run. A killed study resumes where it stopped: finished runs are kept, the run
that was interrupted continues from its last finished stage, the rest start.

study.json:

    settings   {lrs: {method: [lr, ...]}, seeds, kl_budget, replays, best_rule}
    base       the shared row 0 (accuracy, n, ci95, ppl, self_ppl, ...)
    plan       [{method, lr, seed, run_id | null, status}]          in the order they run (seed-major)
    points     one per finished run: method, lr, seed, run_id, setting, and the measures
                 learning          mean over tasks of (accuracy right after training the task − the better of the
                                   majority-class share and the base model), in points (×100)
                 forgetting        Chaudhry et al. (2018), mean over earlier tasks, points
                 bwt, acc          backward transfer and final average accuracy, points
                 kl_to_base        mean per-token KL(base ‖ model) on the self-sampled texts after the last task
                 self_ppl_ratio    self-probe perplexity after the last task / the base's (in the model's domain)
                 probe_ppl_ratio   perplexity on the probe text / the base's (the probe text may be out of domain)
                 final_loss        [per task] the last training loss
                 constant_predictions  [tasks] where ≥ 95 % of eval rows got one class right after training it
                 learned           [tasks] learned by the one-sided test of curlora/measure/probes.py
    groups     one per (method, lr): each measure as {mean, ci95: [lo, hi] | null, n, sd} over seeds (Student t)
    frontier   {method: [group keys "method@lr"]}: the groups no other group of that method beats on both
               learning (higher) and forgetting (lower), by their means, in order of learning
    best       {method: {lr, key, rule}}: the highest learning whose mean KL to base is within kl_budget (all
               groups when no budget is set or none is within it, said so in `rule`)
    comparison [one per pair of methods]: at matched learning (the highest learning both frontiers reach),
               forgetting and KL interpolated along each frontier, a paired t-test over seeds and an exact McNemar
               test over the earlier tasks' final rows at the nearest groups, the effect size, and one sentence
               that says plainly when the intervals overlap.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from pathlib import Path

import yaml

from curlora.errors import Cancelled, CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure import stats
from curlora.measure.record import Row, RunMetrics
from curlora.run import events
from curlora.run.methods import described, lr_text, method
from curlora.run.store import Run, atomic_write_text

STUDY_FILE = "study.json"
OWNER_FILE = "owner"  # curlora/run/hosting.py write_owner
SETTINGS_FILE = "study.yaml"
MEASURES = ("learning", "forgetting", "bwt", "acc", "kl_to_base", "self_ppl_ratio", "probe_ppl_ratio")
CONSTANT_SHARE = 0.95
BEST_RULE = ("the highest mean learning among the learning rates whose mean KL to base is within kl_budget; "
             "without a budget (or when none is within it), the highest mean learning")


@dataclasses.dataclass
class StudySettings:
    lrs: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # method label -> grid
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    kl_budget: float | None = None
    replays: list[float] = dataclasses.field(default_factory=list)  # replay shares: an axis (with_replays)

    @classmethod
    def from_dict(cls, data: dict | None) -> StudySettings:
        data = dict(data or {})
        unknown = set(data) - {"lrs", "seeds", "kl_budget", "replays"}
        if unknown:
            raise CurloraError(f"study: unknown setting(s) {', '.join(sorted(unknown))}; the settings are lrs, "
                               "seeds, kl_budget and replays.")
        lrs = {str(k): [float(x) for x in (v if isinstance(v, list) else [v])] for k, v in (data.get("lrs") or {}).items()}
        replays = data.get("replays") or []
        return cls(lrs=lrs, seeds=[int(s) for s in data.get("seeds", [0])], kl_budget=data.get("kl_budget"),
                   replays=[float(x) for x in (replays if isinstance(replays, list) else [replays])])

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "seeds": self.seeds, "kl_budget": self.kl_budget, "replays": self.replays}


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    out = {}
    for item in items:
        label, sep, values = item.partition("=")
        if not sep or not label.strip():
            raise CurloraError(f"--lrs: {item!r} should read METHOD=LR,LR,… e.g. lora=5e-4,1e-3.")
        try:
            out[label.strip()] = [float(x) for x in values.split(",") if x.strip()]
        except ValueError:
            raise CurloraError(f"--lrs: {values!r} is not a comma-separated list of numbers (e.g. 5e-4,1e-3).") from None
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurloraError(f"--seeds: {text!r} is not a comma-separated list of whole numbers (e.g. 0,1,2).") from None


def default_grid(kind: str) -> list[float]:
    """A method's default grid: the learning-rate prior its registered class states."""
    return list(method(kind).lr_prior)


def replay_label(label: str, share: float) -> str:
    """The label of `label` at a replay share in a study: 'lora-replay10' for 0.1 (a folder name: no dots)."""
    return f"{label}-replay{share * 100:g}".replace(".", "_")


def with_replays(cfg: ExperimentConfig, settings: StudySettings) -> tuple[ExperimentConfig, StudySettings]:
    """Replay as an axis: every trained method that can replay (and has none set) also runs at each share of
    `settings.replays`, as one more method of the experiment beside it ('lora-replay10'), on the same lr grid; the
    expanded experiment is what the study stores, so its runs, groups, frontiers and comparisons treat each as a
    method of its own. Shares the config refuses (1.5, a batch too small for one row) are refused here."""
    shares = [x for x in dict.fromkeys(settings.replays) if x]
    if not shares:
        return cfg, settings
    methods, lrs = [], dict(settings.lrs)
    for m in cfg.methods:
        methods.append(m)
        kind = method(m.kind)
        if not (kind.trains and kind.replays) or m.replay:
            continue
        for share in shares:
            copy = dataclasses.replace(m, name=replay_label(m.label, share), replay=share)
            methods.append(copy)
            if m.label in settings.lrs:  # the method's grid, unless one is given for the copy itself
                lrs.setdefault(copy.label, list(settings.lrs[m.label]))
    if len(methods) == len(cfg.methods):
        raise CurloraError("--replays: no trained method of this experiment can replay (base, head-only and joint "
                           "never do, and one with replay set already has its share); add lora or curlora.")
    expanded = ExperimentConfig.from_dict({**cfg.to_dict(), "methods": [dataclasses.asdict(m) for m in methods]})
    return expanded, dataclasses.replace(settings, lrs=lrs)


def parse_replays(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurloraError(f"--replays: {text!r} is not a comma-separated list of shares (e.g. 0.1,0.25).") from None


def plan_settings(cfg: ExperimentConfig, settings: StudySettings) -> StudySettings:
    """Every trained method of the experiment with a grid (its prior unless one is given); refusals name the fix."""
    trained = [m for m in cfg.methods if method(m.kind).trains]
    if not trained:
        raise CurloraError("methods: a study needs at least one trained method (not only 'base').")
    labels = {m.label for m in trained}
    unknown = set(settings.lrs) - labels
    if unknown:
        raise CurloraError(f"--lrs: {', '.join(sorted(unknown))} is not a trained method of this experiment "
                           f"(they are {', '.join(sorted(labels))}).")
    lrs = {}
    for m in trained:
        grid = settings.lrs.get(m.label) or default_grid(m.kind)
        if not grid:
            raise CurloraError(f"--lrs: give a grid for {m.label}, e.g. --lrs {m.label}=1e-4,1e-3 (its kind has no "
                               "default).")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
            raise CurloraError(f"--lrs: the learning rates of {m.label} must be positive numbers (got {grid}).")
        lrs[m.label] = sorted(set(grid))
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise CurloraError(f"--seeds: give distinct seeds, e.g. 0,1,2 (got {settings.seeds}).")
    if settings.kl_budget is not None and not settings.kl_budget > 0:
        raise CurloraError(f"--kl-budget: must be a positive number (got {settings.kl_budget}).")
    return StudySettings(lrs=lrs, seeds=list(settings.seeds), kl_budget=settings.kl_budget,
                         replays=list(settings.replays))


def point_config(cfg: ExperimentConfig, label: str, lr: float, seed: int, study_id: str) -> ExperimentConfig:
    """The experiment for one point: that method alone at that learning rate; the seed sets the example order,
    the heads and CURLoRA's column/row sampling."""
    m = next(m for m in cfg.methods if m.label == label)
    one = dataclasses.replace(m, lr=lr, seed=seed)
    name = f"{cfg.run.name}-{label}-lr{lr_text(lr)}-s{seed}"
    return dataclasses.replace(cfg, methods=[one], training=dataclasses.replace(cfg.training, seed=seed),
                               run=dataclasses.replace(cfg.run, name=name, group=study_id))  # the trackers' group


def key(label: str, lr: float) -> str:
    return f"{label}@{lr_text(lr)}"


# -- measuring one run ------------------------------------------------------------------------------------------
def point_measures(metrics: RunMetrics, label: str) -> dict | None:
    """The measures of one finished run (None while it has not finished every task)."""
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


# -- the analysis ---------------------------------------------------------------------------------------------
def groups_of(points: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in points:
        g = out.setdefault(key(p["method"], p["lr"]), {"method": p["method"], "lr": p["lr"], "setting": p["setting"],
                                                       "seeds": [], "run_ids": [], "_p": []})
        g["seeds"].append(p["seed"])
        g["run_ids"].append(p["run_id"])
        g["_p"].append(p)
    for g in out.values():
        ps = g.pop("_p")
        for name in MEASURES:
            g[name] = stats.summary([p[name] for p in ps])
        g["constant_predictions"] = sorted({t for p in ps for t in p["constant_predictions"]})
    return out


def _mean(g: dict, name: str):
    return g[name]["mean"]


def frontier_of(groups: dict[str, dict], label: str) -> list[str]:
    """The (method, lr) groups of `label` no other group of it beats on both learning and forgetting (means)."""
    mine = {k: g for k, g in groups.items() if g["method"] == label and _mean(g, "learning") is not None
            and _mean(g, "forgetting") is not None}

    def beaten(g):
        return any(_mean(h, "learning") >= _mean(g, "learning") and _mean(h, "forgetting") <= _mean(g, "forgetting")
                   and (_mean(h, "learning") > _mean(g, "learning") or _mean(h, "forgetting") < _mean(g, "forgetting"))
                   for h in mine.values() if h is not g)

    front = [k for k, g in mine.items() if not beaten(g)]
    return sorted(front, key=lambda k: _mean(mine[k], "learning"))


def best_of(groups: dict[str, dict], label: str, kl_budget: float | None) -> dict | None:
    mine = {k: g for k, g in groups.items() if g["method"] == label and _mean(g, "learning") is not None}
    if not mine:
        return None
    within = {k: g for k, g in mine.items() if kl_budget is not None and _mean(g, "kl_to_base") is not None
              and _mean(g, "kl_to_base") <= kl_budget}
    pool, note = (within, f"within the KL budget {kl_budget:g}") if within else (mine, (
        f"no learning rate is within the KL budget {kl_budget:g}: the highest learning" if kl_budget is not None
        else "no KL budget set: the highest learning"))
    k = max(pool, key=lambda k: _mean(pool[k], "learning"))
    return {"key": k, "lr": pool[k]["lr"], "rule": BEST_RULE, "chosen": note}


def _interp(groups: dict, front: list[str], level: float, name: str) -> dict | None:
    """`name` along a frontier at learning = level: linear between the neighbouring groups, and so is the half
    width of the interval (an approximation, stated in study.json)."""
    pts = [(groups[k]["learning"]["mean"], groups[k][name], k) for k in front if groups[k][name]["mean"] is not None]
    if not pts or level < pts[0][0] - 1e-12 or level > pts[-1][0] + 1e-12:
        return None
    for (x0, s0, k0), (x1, s1, k1) in itertools.pairwise(pts):
        if x0 - 1e-12 <= level <= x1 + 1e-12:
            w = 0.0 if x1 == x0 else (level - x0) / (x1 - x0)
            break
    else:
        x0, s0, k0 = x1, s1, k1 = min(pts, key=lambda p: abs(p[0] - level))
        w = 0.0
    mean = (1 - w) * s0["mean"] + w * s1["mean"]
    halves = [(s["ci95"][1] - s["ci95"][0]) / 2 if s["ci95"] else None for s in (s0, s1)]
    half = None if None in halves else (1 - w) * halves[0] + w * halves[1]
    return {"mean": mean, "ci95": None if half is None else [mean - half, mean + half], "between": [k0, k1],
            "weight": w}


def _nearest(groups: dict, front: list[str], level: float) -> str:
    return min(front, key=lambda k: abs(groups[k]["learning"]["mean"] - level))


def _rows_test(by: dict, seeds: list[int], ka: str, kb: str, metrics_of) -> dict | None:
    """Exact McNemar (two-sided) over the final-stage rows of the earlier tasks, pooled over the seeds both groups
    ran (`by`: (group key, seed) -> point): does one method keep more rows right than the other?"""
    b = c = rows = 0
    for seed in seeds:
        pa, pb = by[(ka, seed)], by[(kb, seed)]
        ma, mb = metrics_of(pa["run_id"]), metrics_of(pb["run_id"])
        ra, rb = ma.methods[pa["method"]], mb.methods[pb["method"]]
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
    return {"rows": rows, "only_first_right": b, "only_second_right": c, "p_value": p}


def interval_text(s: dict | None, digits: int = 2, unit: str = "", single: str = " (one seed: no interval)") -> str:
    """A summary() as "mean [lo, hi]" (the study's sentences, the Compare tab, bench/demo_study_time.py);
    `single` follows the mean when there is no interval."""
    if not s or s.get("mean") is None:
        return "n/a"
    ci = s.get("ci95")
    return f"{s['mean']:.{digits}f}{unit}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else single)


def compare(groups: dict, fronts: dict, points: list[dict], a: str, b: str, metrics_of) -> dict:
    """Methods a and b at matched learning: the highest learning both frontiers reach."""
    fa, fb = fronts.get(a) or [], fronts.get(b) or []
    out = {"methods": [a, b], "learning": None, "forgetting": {}, "kl_to_base": {}, "nearest": {}, "paired": None,
           "rows": None, "intervals_overlap": None}
    if not fa or not fb:
        out["sentence"] = f"No comparison of {a} and {b}: one of them has no finished learning rate yet."
        return out
    la = [groups[k]["learning"]["mean"] for k in fa]
    lb = [groups[k]["learning"]["mean"] for k in fb]
    lo, hi = max(min(la), min(lb)), min(max(la), max(lb))
    if lo > hi + 1e-12:
        out["sentence"] = (f"{a} and {b} never reach the same learning: {a}'s learning rates span "
                           f"{min(la):.1f} to {max(la):.1f} points, {b}'s {min(lb):.1f} to {max(lb):.1f}; widen a "
                           "grid to compare them at matched learning.")
        return out
    level = hi
    out["learning"] = level
    for name in ("forgetting", "kl_to_base"):
        out[name] = {a: _interp(groups, fa, level, name), b: _interp(groups, fb, level, name)}
    ka, kb = _nearest(groups, fa, level), _nearest(groups, fb, level)
    out["nearest"] = {a: ka, b: kb}
    by = {(key(p["method"], p["lr"]), p["seed"]): p for p in points}
    seeds = sorted({s for (k, s) in by if k == ka} & {s for (k, s) in by if k == kb})
    diffs = [by[(ka, s)]["forgetting"] - by[(kb, s)]["forgetting"] for s in seeds
             if by[(ka, s)]["forgetting"] is not None and by[(kb, s)]["forgetting"] is not None]
    out["paired"] = {"seeds": seeds, **stats.paired_t(diffs)} if diffs else None
    out["rows"] = _rows_test(by, seeds, ka, kb, metrics_of)
    fa_, fb_ = out["forgetting"][a], out["forgetting"][b]
    out["intervals_overlap"] = stats.overlap(fa_ and fa_["ci95"], fb_ and fb_["ci95"])
    sa, sb = groups[ka]["setting"], groups[kb]["setting"]
    head = (f"At matched learning ({level:.1f} points above the better of the majority class and the base), "
            f"{a} forgets {interval_text(fa_, unit=' pts')} and {b} {interval_text(fb_, unit=' pts')} (interpolated along each frontier; "
            f"nearest settings {described(a, sa)} and {described(b, sb)}).")
    test = ""
    if out["paired"] and out["paired"]["p_value"] is not None:
        pr = out["paired"]
        test = (f" Paired over {pr['n']} seeds at those settings: {a} − {b} = {pr['mean']:.2f} pts, "
                f"p = {pr['p_value']:.3f}, d_z = {pr['effect_size']:.2f}." if pr["effect_size"] is not None else
                f" Paired over {pr['n']} seeds: the difference is {pr['mean']:.2f} pts on every seed, so there is "
                "no spread to test.")
    if out["rows"]:
        r = out["rows"]
        test += (f" On the earlier tasks' final rows ({r['rows']} paired rows) {a} alone is right on "
                 f"{r['only_first_right']}, {b} alone on {r['only_second_right']} (exact McNemar p = "
                 f"{r['p_value']:.3f}).")
    if out["intervals_overlap"] is None:
        verdict = " With one seed per setting there are no intervals: run more seeds before calling a winner."
    elif out["intervals_overlap"]:
        verdict = " The intervals overlap: neither method forgets measurably less at this learning."
    else:
        less = a if fa_["mean"] < fb_["mean"] else b
        verdict = f" The intervals do not overlap: {less} forgets less at this learning."
    if level <= 0:
        verdict += (f" Note: the highest learning both reach is not above the majority-class / base line, so this "
                    f"compares settings that learned nothing measurable; {a if max(la) <= max(lb) else b} never "
                    "learned above it on this grid.")
    out["sentence"] = head + test + verdict
    return out


def analyse(settings: StudySettings, base: dict | None, plan: list[dict], points: list[dict], metrics_of) -> dict:
    groups = groups_of(points)
    labels = list(settings.lrs)
    fronts = {label: frontier_of(groups, label) for label in labels}
    best = {label: best_of(groups, label, settings.kl_budget) for label in labels}
    comparisons = [compare(groups, fronts, points, a, b, metrics_of) for a, b in itertools.combinations(labels, 2)]
    return {"settings": {**settings.to_dict(), "best_rule": BEST_RULE,
                         "interpolation": "linear in learning between neighbouring frontier groups, means and "
                                          "interval half-widths alike"},
            "base": base, "plan": plan, "points": points, "groups": groups, "frontier": fronts, "best": best,
            "comparison": comparisons}


# -- running --------------------------------------------------------------------------------------------------
def create(cfg: ExperimentConfig, settings: StudySettings, root: Path | None = None) -> Run:
    """The study's folder, with its plan: nothing runs yet. Refusals (bad grids, no trained method) write nothing."""
    cfg, settings = with_replays(cfg, settings)
    settings = plan_settings(cfg, settings)
    study = Run.create(cfg.to_yaml(), name=f"{cfg.run.name}-study", root=root)
    atomic_write_text(study.path / SETTINGS_FILE, yaml.safe_dump(settings.to_dict(), sort_keys=False))
    plan = [{"method": label, "lr": lr, "seed": seed, "run_id": None, "status": "pending"}
            for seed in settings.seeds for label, grid in settings.lrs.items() for lr in grid]
    write(study, analyse(settings, None, plan, [], None))
    study.set_status("queued", f"study of {len(plan)} runs, waiting to start")
    return study


def is_study(run: Run) -> bool:
    return (run.path / SETTINGS_FILE).is_file()


def read(study: Run) -> dict:
    try:
        return json.loads((study.path / STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write(study: Run, body: dict) -> None:
    atomic_write_text(study.path / STUDY_FILE, json.dumps(body, indent=1, default=float) + "\n")


def settings_of(study: Run) -> StudySettings:
    return StudySettings.from_dict(yaml.safe_load((study.path / SETTINGS_FILE).read_text(encoding="utf-8")))


def execute(study: Run, loaded, should_stop=None, on_event=None, device_call=None) -> str:
    """Run (or resume) every point of the study in `study`, one after another, sharing `loaded` and the base row.
    Returns the study's status: completed | cancelled (a failed point is recorded and the study goes on)."""
    from curlora.run.runner import execute as execute_run

    cfg, settings = study.config(), settings_of(study)
    root = study.root
    body = read(study)
    plan = body.get("plan") or []
    with study.lock():
        study.set_status("running", f"study of {len(plan)} runs")
        try:
            base = _base_row(study, body, cfg, loaded, should_stop, device_call)
            for entry in plan:
                if entry["status"] == "completed":
                    continue
                if should_stop and should_stop():
                    raise Cancelled()
                if entry["run_id"]:
                    run = Run.open(entry["run_id"], root)
                    if run.status()["status"] == "completed":
                        entry["status"] = "completed"
                        continue
                    run.clear_cancel()
                    with run.lock():
                        run.repair()
                    pcfg = run.config()
                else:
                    run, pcfg = _new_point_run(study, cfg, entry)
                    _save(study, settings, body, plan)
                entry["status"] = "running"
                status = execute_run(run, pcfg, loaded, should_stop=should_stop, on_event=on_event,
                                     device_call=device_call, base=base)
                entry["status"] = status
                if status == "cancelled":
                    _save(study, settings, body, plan)
                    raise Cancelled()
                _save(study, settings, body, plan)
                study.log(events.STUDY_POINT, study=study.id, run_id=run.id, method=entry["method"], lr=entry["lr"],
                          seed=entry["seed"])
        except Cancelled:
            _save(study, settings, body, plan)
            study.set_status("cancelled", "stopped on request; finished runs are kept — resume the study to go on")
            return "cancelled"
        except Exception as err:
            _save(study, settings, body, plan)
            study.set_status("failed", str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}")
            raise
        done = sum(1 for e in plan if e["status"] == "completed")
        study.set_status("completed", f"study finished: {done} of {len(plan)} runs completed")
        return "completed"


def _new_point_run(study: Run, cfg: ExperimentConfig, entry: dict) -> tuple[Run, ExperimentConfig]:
    """The run folder of one plan entry (its id goes into the entry), with the study's shared self-probe files (the
    run reads them back) and its owner (a visitor owns the runs of their study)."""
    from curlora.measure.probes import PROBE_FILE, REF_FILE  # here: the probes module imports torch

    pcfg = point_config(cfg, entry["method"], entry["lr"], entry["seed"], study.id)
    run = Run.create(pcfg.to_yaml(), name=pcfg.run.name, root=study.root)
    for name in (PROBE_FILE, REF_FILE, OWNER_FILE):
        if (study.path / name).is_file():
            shutil.copyfile(study.path / name, run.path / name)
    entry["run_id"] = run.id
    return run, pcfg


def _point_in_worker(root: str, run_id: str, base: dict) -> str:
    """One point run inside a Ray worker: it loads the model itself and reads the shared base row and self-probe
    from the run store (the workers share its filesystem: one machine, or a store on shared storage)."""
    from curlora.run.runner import execute as execute_run
    from curlora.run.runner import load_everything

    run = Run.open(run_id, Path(root))
    cfg = run.config()
    return execute_run(run, cfg, load_everything(cfg), base=Row.from_json(base))


def execute_ray(study: Run, loaded, should_stop=None, address: str | None = None, poll: float = 1.0) -> str:
    """Like `execute`, but the study's pending runs spread over a Ray cluster (`address`, else RAY_ADDRESS, else
    a local instance with this machine's CPUs and GPUs): one GPU per run where the cluster has GPUs, else one CPU.
    The base row is measured here first, then every point is one Ray task; Stop cancels the tasks not finished."""
    try:
        import ray
    except ImportError:
        raise CurloraError("--executor ray needs Ray: pip install -r requirements-extras.txt (or pip install ray)."
                           ) from None
    import os

    cfg, settings = study.config(), settings_of(study)
    root = study.root
    body = read(study)
    plan = body.get("plan") or []
    started_here = not ray.is_initialized()
    if started_here:
        package_root = str(Path(__file__).resolve().parents[2])  # workers import curlora from the same tree
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    try:
        with study.lock():
            study.set_status("running", f"study of {len(plan)} runs on Ray")
            _base_row(study, body, cfg, loaded, should_stop, None)
            gpus = ray.cluster_resources().get("GPU", 0)
            remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(_point_in_worker)
            tasks = {}
            for entry in plan:
                if entry["status"] == "completed":
                    continue
                run = _new_point_run(study, cfg, entry)[0] if not entry["run_id"] else Run.open(entry["run_id"], root)
                if run.status()["status"] == "completed":
                    entry["status"] = "completed"
                    continue
                run.set_status("queued", f"waiting for a Ray worker (study {study.id})")
                entry["status"] = "running"
                tasks[remote.remote(str(root), entry["run_id"], body["base"])] = entry
            _save(study, settings, body, plan)
            failed = []
            while tasks:
                if should_stop and should_stop():
                    for ref, entry in tasks.items():
                        Run.open(entry["run_id"], root).request_cancel()
                        ray.cancel(ref)
                        entry["status"] = "cancelled"
                    _save(study, settings, body, plan)
                    study.set_status("cancelled", "stopped on request; finished runs are kept — resume the study "
                                                  "to go on")
                    return "cancelled"
                done, _ = ray.wait(list(tasks), num_returns=1, timeout=poll)
                for ref in done:
                    entry = tasks.pop(ref)
                    try:
                        entry["status"] = ray.get(ref)
                    except Exception as err:  # the run wrote its own failed status; the study goes on
                        entry["status"] = "failed"
                        failed.append(f"{entry['run_id']}: {type(err).__name__}")
                    _save(study, settings, body, plan)
                    study.log(events.STUDY_POINT, study=study.id, run_id=entry["run_id"], method=entry["method"],
                              lr=entry["lr"], seed=entry["seed"])
            done_n = sum(1 for e in plan if e["status"] == "completed")
            note = f"; failed: {', '.join(failed)}" if failed else ""
            study.set_status("completed", f"study finished on Ray: {done_n} of {len(plan)} runs completed{note}")
            return "completed"
    finally:
        if started_here:
            ray.shutdown()


def _base_row(study, body, cfg, loaded, should_stop, device_call) -> Row:
    """Row 0, measured once for the whole study (in the study folder, with the self-probe files)."""
    from curlora.run.runner import Executor

    if body.get("base"):
        return Row.from_json(body["base"])
    ex = Executor(study, cfg, loaded, should_stop=should_stop)
    box = {}

    def unit():
        ex.prepare_self_probe()
        box["row"] = ex.evaluate(loaded.model, {})

    (device_call or (lambda fn: fn()))(unit)
    row = box["row"]
    body["base"] = dataclasses.asdict(row)
    write(study, body)
    study.log(events.STAGE, method="base", stage=0, **row.event())
    return row


def _save(study: Run, settings: StudySettings, body: dict, plan: list[dict]) -> None:
    """The points and the analysis from the runs the plan names, written to study.json. A finished run's point is
    measured once (kept from the last save); only runs finished since are read."""
    root = study.root
    known = {p["run_id"]: p for p in body.get("points") or []}
    cache: dict[str, RunMetrics] = {}

    def metrics_of(run_id: str) -> RunMetrics:
        if run_id not in cache:
            cache[run_id] = Run.open(run_id, root).record()
        return cache[run_id]

    points = []
    for e in plan:
        if e["status"] != "completed" or not e["run_id"]:
            continue
        if e["run_id"] in known:
            points.append(known[e["run_id"]])
            continue
        m = metrics_of(e["run_id"])
        measures = point_measures(m, e["method"])
        if measures is None:
            continue
        points.append({"method": e["method"], "lr": e["lr"], "seed": e["seed"], "run_id": e["run_id"],
                       "setting": m.methods[e["method"]].setting, **measures})
    body.update(analyse(settings, body.get("base"), plan, points, metrics_of))
    write(study, body)


def run_study(cfg: ExperimentConfig, settings: StudySettings, root: Path | None = None, should_stop=None,
              on_event=None, executor: str = "auto") -> Run:
    """Create and run a study here (the CLI): load once, then every point — one after another (`local`) or
    spread over a Ray cluster (`ray`)."""
    from curlora.run.runner import load_everything

    loaded = load_everything(cfg)
    study = create(cfg, settings, root)
    _dispatch(study, loaded, should_stop, on_event, executor)
    return study


def pick_executor(executor: str = "auto") -> str:
    """`auto`: Ray where there is something to spread over (RAY_ADDRESS set, or more than one GPU visible) and
    Ray is installed; else the runs go one after another here."""
    if executor != "auto":
        return executor
    import importlib.util
    import os

    import torch

    wide = bool(os.environ.get("RAY_ADDRESS")) or torch.cuda.device_count() > 1
    return "ray" if wide and importlib.util.find_spec("ray") is not None else "local"


def _dispatch(study, loaded, should_stop, on_event, executor: str) -> str:
    executor = pick_executor(executor)
    if executor == "ray":
        return execute_ray(study, loaded, should_stop=should_stop)
    if executor != "local":
        raise CurloraError(f"--executor: {executor!r} is not one of auto, local, ray.")
    return execute(study, loaded, should_stop=should_stop, on_event=on_event)


def resume_study(study_id: str, root: Path | None = None, should_stop=None, on_event=None,
                 executor: str = "auto") -> Run:
    from curlora.run.runner import load_everything

    study = Run.open(study_id, root)
    if not is_study(study):
        raise CurloraError(f"{study_id} is a run, not a study; resume it with `python -m curlora resume {study_id}`.")
    study.check_free()
    if study.status()["status"] == "completed":
        raise CurloraError(f"Study {study_id} is already completed; start a new study to run it again.")
    _dispatch(study, load_everything(study.config()), should_stop, on_event, executor)
    return study
