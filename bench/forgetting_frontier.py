"""The forgetting study as a learning–forgetting frontier on stories260K (docs/forgetting-study-toys.md).

    # the matched-loss comparison: one ordinary run per seed, CURLoRA chasing LoRA's training loss on every task
    python bench/forgetting_frontier.py matched docs/studies/stories260k-matched-loss.yaml --seeds 0,1,2 \\
        --data-dir /tmp/fs-matched --out docs/studies/stories260k-matched-loss.json
    # the frontier itself is a study: CURLORA_DATA_DIR=/tmp/fs-runs python -m curlora study \\
    #     docs/studies/stories260k-frontier.yaml   (then copy its study.json to docs/studies/stories260k-frontier.json)
    # the document's tables, from the committed JSON files (nothing is re-run; the study is analysed again with
    # today's code, as `python -m curlora study --analyse` does), written into its generated blocks
    python bench/forgetting_frontier.py tables --study docs/studies/stories260k-frontier.json \\
        --matrices docs/studies/stories260k-frontier-matrices.json \\
        --matched docs/studies/stories260k-matched-loss.json \\
        --earlier docs/forgetting-study-results.json docs/forgetting-study-head-results.json \\
        docs/forgetting-study-kjv-results.json --doc docs/forgetting-study-toys.md

Every mean over seeds comes with its 95 % Student-t interval (curlora.measure.stats.summary, df = seeds − 1), every
accuracy cell of one run with its Wilson interval over the n eval rows, so no number in the document is copied by
hand and none stands without its spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from doc_blocks import splice  # noqa: E402

from curlora.measure import stats  # noqa: E402
from curlora.measure.describe import described  # noqa: E402
from curlora.measure.record import Row  # noqa: E402
from curlora.measure.study_analysis import (LEARNED_SHARE, final_discordant, interval_text,  # noqa: E402
                                           point_measures, reanalyse, verdict_of)
from curlora.measure.study_record import DEFAULT_MARGIN, within  # noqa: E402
from curlora.measure.study_record import Point, StudyRecord, Summary, key  # noqa: E402

MEASURES = ("learning", "forgetting", "bwt", "acc", "kl_to_base", "self_ppl_ratio", "probe_ppl_ratio")
CHAT = ("chat_kl", "facts", "replies_unterminated", "replies_repetitive", "task_kl")  # where the run measured them


def fmt(s: Summary | dict | None, digits: int = 2, measure: str | None = None) -> str:
    """A mean with its interval; with `measure`, the interval's ends clipped to the range it can take (RANGES:
    facts and accuracy 0–100 %, KL and perplexity ratios at least 0)."""
    if measure is not None and s is not None:
        s = Summary.of(s)
        s = dataclasses.replace(s, ci95=within(s.ci95, measure))
    return interval_text(s, digits, single=" (n=1)")


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def adjusted_text(p: float | None) -> str:
    """A Holm-adjusted p after its raw one: 'adjusted 0.038', 'adjusted < 0.001'."""
    return "adjusted n/a" if p is None else "adjusted < 0.001" if p < 0.001 else f"adjusted {p:.3f}"


def t_note(n: int) -> str:
    if n < 2:
        return "one seed: no interval"
    return f"t = {stats.t_quantile(n - 1):.2f} at {n - 1} degree{'s' if n > 2 else ''} of freedom"


# -- the matched-loss runs -------------------------------------------------------------------------------------
def seeded(cfg, seed: int):
    """The experiment at one seed, as a study point sets it: the example order, heads and CURLoRA's sampling; the
    row samples stay those of the YAML (seed 0), so every seed scores the same eval rows."""
    methods = [dataclasses.replace(m, seed=seed) if m.kind == "curlora" else m for m in cfg.methods]
    return dataclasses.replace(cfg, methods=methods, training=dataclasses.replace(cfg.training, seed=seed),
                               run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}-s{seed}"))


def matched_entry(seed: int, run_id: str, status: str, seconds: float, m, labels: list[str]) -> dict:
    """One seed's matched-loss run as the summary keeps it: the base row and each method's measures and training."""
    entry = {"seed": seed, "run_id": run_id, "status": status, "seconds": round(seconds, 1),
             "base": {"accuracy": m.base.accuracy, "n": m.base.n, "ci95": m.base.ci95, "ppl": m.base.ppl,
                      "self_ppl": m.base.self_ppl}, "majority": m.majority, "methods": {}}
    for label in labels:
        rec = m.methods[label]
        entry["methods"][label] = {
            "setting": rec.setting, **(point_measures(m, label) or {}),
            "final_accuracy": rec.matrix[-1], "final_ci95": rec.matrix_ci95[-1] if rec.matrix_ci95 else None,
            "n": rec.matrix_n[-1] if rec.matrix_n else None,
            "train": [{"task": tr.task, "steps": tr.steps, "smoothed_loss": tr.smoothed_loss,
                       "target_loss": tr.target_loss, "reached": tr.reached} for tr in rec.train]}
    return entry


def matched_body(experiment: str, ref: str, labels: list[str], per_seed: list[dict], records: dict,
                 wall_s: float, n_tasks: int, rows_per_seed: bool = False) -> dict:
    """The matched-loss summary: each method's measures over seeds and, against the reference, the paired tests
    over seeds and the exact McNemar row test over the earlier tasks' final rows."""
    seeds = [e["seed"] for e in per_seed]
    body = {"experiment": experiment, "reference": ref, "seeds": seeds, "rows_per_seed": rows_per_seed,
            "wall_s": round(wall_s, 1), "runs": per_seed, "groups": {}, "paired": {}}
    for label in labels:
        pts = [e["methods"][label] for e in per_seed]
        g = {name: stats.summary([p.get(name) for p in pts]) for name in MEASURES + CHAT}
        g["setting"] = pts[0]["setting"]
        g["steps"] = [stats.summary([p["train"][j]["steps"] for p in pts]) for j in range(n_tasks)]
        g["reached"] = [sum(1 for p in pts if p["train"][j]["reached"]) for j in range(n_tasks)]
        body["groups"][label] = g
    for label in labels:
        if label == ref:
            continue
        out = {}
        for name in ("forgetting", "kl_to_base", "learning", "acc"):
            diffs = [e["methods"][label][name] - e["methods"][ref][name] for e in per_seed
                     if e["methods"][label].get(name) is not None and e["methods"][ref].get(name) is not None]
            out[name] = stats.paired_t(diffs)
        n = b = c = 0
        for seed in seeds:
            dn, db, dc = final_discordant(records[seed], label, records[seed], ref)
            n, b, c = n + dn, b + db, c + dc
        out["rows"] = {"rows": n, "only_first_right": b, "only_second_right": c,
                       "p_value": stats.mcnemar_two_sided(b, c)}
        body["paired"][f"{label} - {ref}"] = out
    return body


def matched_config(cfg, seed: int, rows_per_seed: bool):
    """The experiment at one seed; with rows_per_seed each seed also draws its own training and eval rows (as the
    SmolLM2 study's points do), else every seed scores seed 0's rows."""
    from curlora.run.study_plan import seeded_tasks

    scfg = seeded(cfg, seed)
    return dataclasses.replace(scfg, tasks=seeded_tasks(scfg.tasks, seed)) if rows_per_seed else scfg


def matched(args) -> int:
    """One run per seed, resumable: a seed whose run (by name, under --data-dir) finished is read, not rerun; one
    that stopped goes on from its last finished stage. --pack copies each finished run's data (no weights) beside
    the summary, as a study pack does."""
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import execute, load_everything, resume, start
    from curlora.run.store import copy_outgoing, runs_named
    from curlora.run.study_data import MAX_FILE, SKIP, machine

    cfg = ExperimentConfig.load(args.experiment)
    ref = cfg.training.matched_loss_reference
    labels = [m.label for m in cfg.methods if m.kind != "base"]
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.data_dir)
    loaded, per_seed, records, t0 = None, [], {}, time.time()
    before = {}  # the machine each run was measured on, from the last summary written
    if Path(args.out).is_file():
        before = {e["run_id"]: e.get("machine") for e in json.loads(Path(args.out).read_text()).get("runs", [])}
    for seed in seeds:
        scfg = matched_config(cfg, seed, args.rows_per_seed)
        mine = runs_named(scfg.run.name, root)
        done = [r for r in mine if r.status()["status"] == "completed"]
        t = time.time()
        if done:
            run, status = done[0], "completed"
        elif mine:  # stopped part-way: on from its last finished stage
            run = resume(mine[0].id, root)
            status = run.status()["status"]
        else:
            loaded = loaded or load_everything(cfg)
            run, _ = start(scfg, root, loaded)
            status = execute(run, scfg, loaded)
        if status != "completed":
            print(f"seed {seed}: {run.id} {status}; run this again to go on", flush=True)
            return 1
        m = run.record()
        records[seed] = m
        per_seed.append(matched_entry(seed, run.id, status, time.time() - t, m, labels))
        per_seed[-1]["machine"] = before.get(run.id) or machine()
        if args.pack:
            copy_outgoing(run.path, Path(args.pack) / "runs" / run.id, skip=SKIP, max_bytes=MAX_FILE, recursive=False)
        print(f"seed {seed}: {run.id} {status} ({time.time() - t:.0f} s)", flush=True)
    body = matched_body(str(args.experiment), ref, labels, per_seed, records, time.time() - t0, len(cfg.tasks),
                        args.rows_per_seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(body, indent=1, default=float) + "\n")
    print(f"wrote {args.out} ({body['wall_s'] / 60:.1f} min)")
    return 0


# -- the document's tables -------------------------------------------------------------------------------------
def setting_text(setting: dict) -> str:
    bits = [f"lr {setting['lr']:g}"] if setting.get("lr") is not None else []
    if setting.get("r") is not None:
        bits.append(f"r {setting['r']}")
    return ", ".join(bits)


def ratio_ppl(s: Summary | dict | None, base_ppl: float | None, digits: int = 0) -> str:
    """A ratio summary shown as perplexity (the ratio times the base's), interval scaled alike."""
    s = Summary.of(s)
    if s.mean is None or not base_ppl:
        return "n/a"
    return fmt(Summary(mean=s.mean * base_ppl, ci95=[x * base_ppl for x in s.ci95] if s.ci95 else None), digits,
               "probe_ppl_ratio")


def base_lines(base: Row, tasks: list[str]) -> list[str]:
    cells = [f"{100 * a:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] (n = {n})"
             for a, (lo, hi), n in zip(base.accuracy, base.ci95, base.n)]
    return ["| task | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|",
            "| base accuracy, % [Wilson 95 %] | " + " | ".join(cells) + " |"]


def counts(points: list[Point], field: str, n: int) -> str:
    """How many runs of a group list each task in `field` (a list of tasks per run): 'mrpc 3/3, sst2 1/3'."""
    c: dict[str, int] = {}
    for p in points:
        for t in getattr(p, field):
            c[t] = c.get(t, 0) + 1
    return ", ".join(f"{t} {k}/{n}" for t, k in c.items()) or "–"


def reanalysed(path: str, tasks: list[str] | None, matrices: str | None) -> StudyRecord:
    """The committed study.json analysed again with today's code (`curlora study --analyse`), nothing trained."""
    rec = StudyRecord.of(json.loads(Path(path).read_text()))
    mats = None
    if matrices:
        body = json.loads(Path(matrices).read_text())
        mats = {r["run_id"]: r["matrix"] for r in body["runs"]}
        tasks = tasks or body["tasks"]
    return reanalyse(rec, tasks, None, mats, source=path)


def study_tables(rec: StudyRecord, probe: str = "WikiText ppl", command: str = "") -> list[str]:
    """A study's tables and sentences, read from its typed record (a reanalysed one: `reanalysed`)."""
    groups, base = rec.groups, rec.base
    n = max(g.learning.n for g in groups.values())
    ppl0, self0 = base.ppl, base.self_ppl
    lines = [f"Means over {n} seeds with 95 % Student-t intervals ({t_note(n)}). Base: {probe} {ppl0:.1f}, "
             f"self-perplexity {self0:.3f}, KL 0.", "",
             f"| method (lr, r) | learning, pts | forgetting, pts | ACC, % | KL to base | self-ppl ratio | {probe} | "
             f"collapsed to one class on (runs) | learned (runs) | runs that learned an earlier task |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    labels = rec.labels
    for k, g in sorted(groups.items(), key=lambda kv: (labels.index(kv[1].method), kv[1].lr)):
        front = " ◆" if k in rec.frontier.get(g.method, []) else ""
        pts = [p for p in rec.points if p.key == k]
        earlier = sum(1 for p in pts if p.learned_earlier)
        lines.append(f"| {described(g.method, g.setting)}{front} | {fmt(g.learning, 1)} | {fmt(g.forgetting, 1)} | "
                     f"{fmt(g.acc, 1)} | {fmt(g.kl_to_base, 3)} | {fmt(g.self_ppl_ratio, 2)} | "
                     f"{ratio_ppl(g.probe_ppl_ratio, ppl0)} | {counts(pts, 'constant_predictions', len(pts))} | "
                     f"{counts(pts, 'learned', len(pts))} | {earlier}/{len(pts)} |")
    lines += ["", "◆: on the method's frontier (no other learning rate of it learns more *and* forgets less, by "
              "the means). Collapsed: ≥ 95 % of a task's eval rows got one class right after training it; learned: "
              "the per-run one-sided test (docs/statistics.md), counted per run, so a task learned in 1 run of 3 is "
              "not a setting that learns it.", "",
              f"Each at its own best learning rate (rule: {rec.notes.get('best_rule', '')}):", ""]
    for label, best in rec.best.items():
        if best:
            g = groups[best.key]
            lines.append(f"- **{described(label, g.setting)}** ({best.chosen}): learning {fmt(g.learning, 1)} pts, "
                         f"forgetting {fmt(g.forgetting, 1)} pts, KL {fmt(g.kl_to_base, 3)}, self-ppl ratio "
                         f"{fmt(g.self_ppl_ratio, 2)}, {probe} {ratio_ppl(g.probe_ppl_ratio, ppl0)}")
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            cand = [(ga, gb) for ga in groups.values() if ga.method == a for gb in groups.values() if gb.method == b
                    if ga.kl_to_base.mean and gb.kl_to_base.mean]
            if cand:
                ga, gb = min(cand, key=lambda x: abs(math.log(x[0].kl_to_base.mean / x[1].kl_to_base.mean)))
                by = {(p.key, p.seed): p for p in rec.points}
                seeds = [sd for sd in ga.seeds if sd in gb.seeds]
                diff = stats.paired_t([by[(key(a, ga.lr), sd)].learning - by[(key(b, gb.lr), sd)].learning
                                       for sd in seeds])
                pairs.append((a, b, ga, gb, seeds, diff))
    if pairs:
        adjusted = stats.holm([d.get("p_value") for *_, d in pairs])
        lines += ["", "At matched in-domain drift (the two learning rates of a pair of methods whose mean KL to base "
                  "is closest, by ratio; learning paired over the seeds; the family *learning at matched KL*, "
                  "Holm-adjusted):", ""]
        for (a, b, ga, gb, seeds, diff), adj in zip(pairs, adjusted):
            p_note = (f", {p_text(diff['p_value'])} (Holm-{adjusted_text(adj)})"
                      if diff.get("p_value") is not None else ", no spread to test")
            lines.append(f"- {described(a, ga.setting)} at KL {fmt(ga.kl_to_base, 3)} learns {fmt(ga.learning, 1)} "
                         f"pts and forgets {fmt(ga.forgetting, 1)}; {described(b, gb.setting)} at KL "
                         f"{fmt(gb.kl_to_base, 3)} learns {fmt(gb.learning, 1)} and forgets {fmt(gb.forgetting, 1)}. "
                         f"Learning, {a} − {b}, paired over {len(seeds)} seeds: {fmt(diff, 1)} pts{p_note}.")
    lines += ["", "At matched learning (each measure a monotone fit in lr per method; the middle of the learning "
              "both fits reach; verdict: docs/statistics.md):", ""]
    for c in rec.comparison:
        a_b = c.methods
        kl = (f" KL there: {a_b[0]} {fmt(c.kl_to_base.get(a_b[0]), 3)}, {a_b[1]} {fmt(c.kl_to_base.get(a_b[1]), 3)}."
              if c.learning is not None else "")
        lines.append(f"- **{' vs '.join(a_b)}: {c.verdict or 'not compared'}.** {c.sentence}{kl}")
    tracks = [t for t in rec.probes if t.rho is not None]
    if tracks:
        lines += ["", "Does a drift probe track forgetting across the study's runs? Spearman's ρ with forgetting "
                  "[95 % bootstrap over runs]: " + "; ".join(
                      f"{t.probe} {t.rho:.2f}" + (f" [{t.ci95[0]:.2f}, {t.ci95[1]:.2f}]" if t.ci95 else "") +
                      f" ({t.n} runs" + (f", Holm p {t.p_adjusted:.2g}" if t.p_adjusted is not None else "") + ")"
                      for t in tracks) +
                  ". " + (f"Tracks it: {', '.join(t.probe for t in tracks if t.tracks)}."
                          if any(t.tracks for t in tracks) else "None tracks it (no Holm-adjusted test of ρ = 0 "
                                                                  "below 0.05 with ρ the way drift runs).")]
    lines += [""] + [f"**Warning:** {w}" for w in rec.warnings] + ([""] if rec.warnings else [])
    r = rec.reanalysis
    if r:
        lines += ["Analysed again from the committed study.json with today's code, nothing retrained"
                  + (f" (`{command}`)" if command else "") + f": {r.stored} points as stored, {r.remeasured} "
                  "measured from their runs. Not recomputed: " + "; ".join(r.not_recomputed) + "."]
    return lines


def matched_tables(body: dict) -> list[str]:
    ref, runs = body["reference"], body["runs"]
    tasks = [t["task"] for t in runs[0]["methods"][ref]["train"]]
    n = len(runs)
    ppl0 = runs[0]["base"]["ppl"]
    chat = any((g.get("chat_kl") or {}).get("mean") is not None for g in body["groups"].values())
    lines = [f"{n} runs (seeds {', '.join(str(s) for s in body['seeds'])}; {body['wall_s'] / 60:.1f} min). Means "
             f"with 95 % Student-t intervals ({t_note(n)}), their ends clipped to the measure's range (accuracy and "
             "facts 0–100 %, KL and perplexity ratios at least 0).", "",
             "| method (lr, r) | steps per task (" + ", ".join(tasks) + ") | target reached (runs) | learning, pts | "
             "forgetting, pts | ACC, % | KL to base | self-ppl ratio | WikiText ppl |" + (
                 " chat KL to base | facts right, % |" if chat else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if chat else "")]
    for label, g in body["groups"].items():
        steps = ", ".join(f"{s['mean']:.0f}" for s in g["steps"])
        reached = "reference" if label == ref else ", ".join(f"{r}/{n}" for r in g["reached"])
        lines.append(f"| {label} ({setting_text(g['setting'])}) | {steps} | {reached} | {fmt(g['learning'], 1)} | "
                     f"{fmt(g['forgetting'], 1)} | {fmt(g['acc'], 1, 'acc')} | "
                     f"{fmt(g['kl_to_base'], 3, 'kl_to_base')} | "
                     f"{fmt(g['self_ppl_ratio'], 2, 'self_ppl_ratio')} | {ratio_ppl(g['probe_ppl_ratio'], ppl0)} |" + (
                         f" {fmt(g['chat_kl'], 3, 'chat_kl')} | {fmt(g['facts'], 0, 'facts')} |" if chat else ""))
    n_rows = runs[0]["methods"][ref]["n"][0] if runs[0]["methods"][ref].get("n") else None
    lines += ["", f"Accuracy at the end, %, mean over the {n} seeds [95 % Student-t]; each cell of one run is scored "
              f"on n = {n_rows} held-out rows; majority share " +
              ", ".join(f"{t} {100 * s:.0f}" for t, s in zip(tasks, runs[0]["majority"])) + ":", "",
              "| method (lr, r) | " + " | ".join(tasks) + " | learned by the one-sided test (runs) | "
              "collapsed to one class on (runs) |", "|---" * (len(tasks) + 3) + "|"]
    for label, g in body["groups"].items():
        recs = [e["methods"][label] for e in runs]
        cells = [fmt(stats.summary([100 * r["final_accuracy"][j] for r in recs]), 1, "acc") for j in range(len(tasks))]
        learned = {t: sum(t in r["learned"] for r in recs) for t in tasks}
        const = {t: sum(t in r["constant_predictions"] for r in recs) for t in tasks}
        lines.append(f"| {label} ({setting_text(g['setting'])}) | " + " | ".join(cells) + " | " +
                     (", ".join(f"{t} {c}/{n}" for t, c in learned.items() if c) or "–") + " | " +
                     (", ".join(f"{t} {c}/{n}" for t, c in const.items() if c) or "–") + " |")
    # the family: every paired test and row test of this section, Holm-adjusted together
    names = (("forgetting", " pts"), ("kl_to_base", ""), ("learning", " pts"))
    ps = [out[name].get("p_value") for out in body["paired"].values() for name, _ in names] + \
        [out["rows"]["p_value"] for out in body["paired"].values()]
    adjusted = iter(stats.holm(ps))
    adj = {(pair, name): next(adjusted) for pair in body["paired"] for name, _ in names}
    adj.update({(pair, "rows"): next(adjusted) for pair in body["paired"]})
    rows_note = ("the row test pools each seed's own rows (drawn per seed) and takes the two methods' answers to them "
                 "as paired" if body.get("rows_per_seed") else
                 "the row test pools the same rows scored under each seed and takes them as independent, which they "
                 "are not (a description of which rows moved, not more evidence than the seeds give)")
    lines += ["", f"Paired over the {n} seeds (" + ("each seed's own eval rows" if body.get("rows_per_seed") else
                                                     "the same eval rows") + f", the same seed's example order), "
              f"method − {ref}. The {len(ps)} tests below are one family, *matched training loss*, Holm-adjusted "
              f"together (p, then adjusted); {rows_note}:", ""]
    for pair, out in body["paired"].items():
        parts = []
        for name, unit in names:
            s = out[name]
            p = (f", {p_text(s['p_value'])}, {adjusted_text(adj[(pair, name)])}"
                 if s.get("p_value") is not None else "")
            shown = "KL to base" if name == "kl_to_base" else name
            parts.append(f"{shown} {fmt(s, 3 if name == 'kl_to_base' else 1)}{unit}{p}")
        r = out["rows"]
        label = pair.split(" - ")[0]
        lines.append(f"- **{pair}**: " + "; ".join(parts) + f". Earlier tasks' final rows ({r['rows']} paired, "
                     f"pooled over seeds): {label} alone right on {r['only_first_right']}, {ref} alone on "
                     f"{r['only_second_right']} (exact McNemar {p_text(r['p_value'])}, "
                     f"{adjusted_text(adj[(pair, 'rows')])}). Verdict on forgetting: "
                     f"**{matched_verdict(body, label, adj[(pair, 'forgetting')])}**.")
    return lines


def matched_verdict(body: dict, label: str, p_adjusted: float | None, margin: float = DEFAULT_MARGIN) -> str:
    """The study's four-word verdict (curlora.measure.study_analysis.verdict_of) for one matched-loss pair: a
    setting learned nothing when fewer than half its runs learned an earlier task by the per-run test."""
    ref, runs = body["reference"], body["runs"]
    tasks = [t["task"] for t in runs[0]["methods"][ref]["train"]]
    def learned_earlier(m: str) -> int:
        return sum(1 for e in runs if set(e["methods"][m]["learned"]) & set(tasks[:-1]))

    unlearned = [m for m in (label, ref) if learned_earlier(m) < LEARNED_SHARE * len(runs)]
    diffs = [e["methods"][label]["forgetting"] - e["methods"][ref]["forgetting"] for e in runs]
    word = verdict_of(bool(unlearned), p_adjusted, sum(diffs) / len(diffs), stats.tost_paired(diffs, margin))
    why = {"nothing learned": f" ({' and '.join(unlearned)}: an earlier task learned in fewer than half the runs)",
           "equivalent": f" (within ±{margin:g} points)"}.get(word, "")
    if word == "inconclusive":
        d = stats.paired_t(diffs)
        need = stats.seeds_needed(d["mean"], d["sd"], margin) if d.get("sd") else None
        why = f" (about {need} seeds would decide it)" if need else ""
    return word + why


def matrices(args) -> int:
    """Beside a study's study.json, what its points leave out: every run's accuracy matrix with n, Wilson intervals
    and the most-predicted share, and its per-stage perplexity, self-perplexity and KL (small enough to commit)."""
    from curlora.run.store import Run

    study = Path(args.study_dir)
    body = json.loads((study / "study.json").read_text())
    out = {"study": study.name, "tasks": None, "majority": None, "runs": []}
    for e in body["plan"]:
        if e["status"] != "completed":
            continue
        m = Run.open(e["run_id"], study.parent).record()
        rec = m.methods[e["method"]]
        out["tasks"], out["majority"] = m.tasks, m.majority
        out["runs"].append({"method": e["method"], "lr": e["lr"], "seed": e["seed"], "run_id": e["run_id"],
                            "matrix": rec.matrix, "n": rec.matrix_n, "ci95": rec.matrix_ci95,
                            "pred_share": rec.matrix_pred_share, "ppl": rec.ppl, "self_ppl": rec.self_ppl,
                            "kl_to_base": rec.kl_to_base, "trainable": rec.trainable})
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}: {len(out['runs'])} runs")
    return 0


def own_stage_table(mats: dict, groups: dict) -> list[str]:
    """Accuracy on each task right after training it, and on each task at the end: means over seeds, intervals."""
    tasks = mats["tasks"]
    n_rows = mats["runs"][0]["n"][1][0]
    seeds = len({r["seed"] for r in mats["runs"]})
    lines = [f"Accuracy, %, mean over {seeds} seeds [95 % Student-t, {t_note(seeds)}]; each cell of one run is "
             f"scored on n = {n_rows} held-out rows (a single run's Wilson interval at 50 % is about ±10 points). "
             "Majority-class share: " + ", ".join(f"{t} {100 * s:.0f}" for t, s in zip(tasks, mats["majority"])) +
             ".", "",
             "| method (lr, r) | " + " | ".join(f"{t} after {t}" for t in tasks) + " | " +
             " | ".join(f"{t} at the end" for t in tasks[:-1]) + " |",
             "|---" * (2 * len(tasks)) + "|"]
    for g in groups.values():
        runs = [r for r in mats["runs"] if r["method"] == g.method and r["lr"] == g.lr]
        if not runs:
            continue
        own = [fmt(stats.summary([100 * r["matrix"][j + 1][j] for r in runs]), 1) for j in range(len(tasks))]
        end = [fmt(stats.summary([100 * r["matrix"][-1][j] for r in runs]), 1) for j in range(len(tasks) - 1)]
        lines.append(f"| {described(g.method, g.setting)} | " + " | ".join(own + end) + " |")
    return lines


def figure(body, png: Path, width: int = 1300) -> None:
    """The app's frontier chart (curlora/ui/study_charts.py) of a study.json body or StudyRecord, as HTML and,
    through headless Chromium, a PNG `width` pixels wide."""
    import subprocess
    import tempfile

    from curlora.ui.study_charts import frontier_figure

    fig = frontier_figure(body)
    height = (fig.layout.height or 430) + 90  # one row of panels or two
    fig.update_layout(width=width, height=height)
    fig.write_html(png.with_suffix(".html"), include_plotlyjs="cdn")
    if not Path("/usr/bin/chromium").is_file():
        print(f"no /usr/bin/chromium here: wrote {png.with_suffix('.html')} only, no PNG", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as d:
        html = Path(d) / "fig.html"
        fig.write_html(html, include_plotlyjs=True, config={"displayModeBar": False})
        subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", "--virtual-time-budget=8000", f"--screenshot={png}",
                        f"--window-size={width + 20},{height + 20}", html.as_uri()], check=True, capture_output=True, timeout=120)


def earlier_tables(paths: list[str]) -> list[str]:
    """The earlier one-setting runs (bench/forgetting_study.py's results JSON: results[scoring][seed] = metrics.json),
    final stage: the in-domain drift (KL to base, self-perplexity on the model's own samples) beside WikiText-2."""
    lines = []
    for path in paths:
        results = json.loads(Path(path).read_text())
        for scoring, by_seed in results.items():
            runs = list(by_seed.values())
            n = len(runs)
            lines += [f"**{Path(path).name}**, {scoring} scoring, final stage, {n} seeds ({t_note(n)}):", "",
                      "| method (lr, r) | KL to base | self-ppl | WikiText ppl | ACC, % | last task, % |",
                      "|---|---|---|---|---|---|"]
            base = runs[0]["methods"][next(iter(runs[0]["methods"]))]
            lines.append(f"| (base before training) | 0 | {base['self_ppl'][0]:.2f} | {base['ppl'][0]:,.1f} | | |")
            for name in runs[0]["methods"]:
                recs = [r["methods"][name] for r in runs]
                train = recs[0]["train"]
                lr = train[0]["lr"] if train and recs[0]["kind"] != "base" else None
                rank = next((int(x[1:]) for x in name.split("-") if x[:1] == "r" and x[1:].isdigit()), None)
                bits = ([f"lr {lr:g}"] if lr else []) + ([f"r {rank}"] if rank else [])
                label = name + (f" ({', '.join(bits)})" if bits else "")
                kl = stats.summary([r["kl_to_base"][-1] for r in recs])
                sp = stats.summary([r["self_ppl"][-1] for r in recs])
                pp = stats.summary([r["ppl"][-1] for r in recs])
                acc = stats.summary([100 * r["summary"]["acc"] if r["summary"].get("acc") is not None else None
                                     for r in recs])
                last = stats.summary([100 * r["matrix"][-1][-1] for r in recs])
                lines.append(f"| {label} | {fmt(kl, 4)} | {fmt(sp, 2)} | {fmt(pp, 0)} | {fmt(acc, 1)} | "
                             f"{fmt(last, 1)} |")
            lines.append("")
    return lines


def blocks(study: str | None = None, matched: str | None = None, matrices: str | None = None,
           earlier: list[str] = (), tasks: list[str] | None = None) -> dict[str, list[str]]:
    """The document's generated blocks (bench/doc_blocks.py), by name, from the committed JSON files (paths
    relative to the repository); the study is analysed again with today's code first (`reanalysed`)."""
    out = {}
    if matched:
        out["stories260k-matched-loss"] = matched_tables(json.loads((REPO / matched).read_text()))
    if study:
        rec = reanalysed(str(REPO / study), tasks, str(REPO / matrices) if matrices else None)
        rec.reanalysis.source = study
        command = f"python -m curlora study --analyse {study}" + (f" --matrices {matrices}" if matrices else
                                                                   f" --tasks {','.join(rec.tasks)}")
        lines = base_lines(rec.base, rec.tasks) + [""] + study_tables(rec, command=command)
        if matrices:
            lines += [""] + own_stage_table(json.loads((REPO / matrices).read_text()), rec.groups)
        out["stories260k-frontier"] = lines
    if earlier:
        out["toy-earlier-runs"] = earlier_tables([str(REPO / e) for e in earlier])
    return out


def tables(args) -> int:
    made = blocks(args.study, args.matched, args.matrices, args.earlier,
                  args.tasks.split(",") if args.tasks else None)
    if args.figure and args.study:
        figure(reanalysed(str(REPO / args.study), None, str(REPO / args.matrices) if args.matrices else None),
               Path(args.figure))
    if args.doc:
        for name, lines in made.items():
            splice(Path(args.doc), name, lines)
        print(f"wrote {', '.join(made)} into {args.doc}")
    else:
        for name, lines in made.items():
            print("\n".join([f"<!-- {name} -->"] + lines + [""]))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("matched", help="the matched-loss runs, one per seed, summarised into one JSON")
    m.add_argument("experiment")
    m.add_argument("--seeds", default="0,1,2")
    m.add_argument("--data-dir", default="/tmp/fs-matched")
    m.add_argument("--out", default=str(REPO / "docs" / "studies" / "stories260k-matched-loss.json"))
    m.add_argument("--rows-per-seed", action="store_true", help="each seed draws its own training and eval rows")
    m.add_argument("--pack", default=None, help="copy each finished run's data (no weights) into DIR/runs/")
    t = sub.add_parser("tables", help="the document's Markdown tables from the committed JSON files")
    t.add_argument("--study", default=None)
    t.add_argument("--matched", default=None)
    t.add_argument("--figure", default=None, help="write the frontier chart here (PNG, an HTML beside it)")
    t.add_argument("--matrices", default=None, help="the study's matrices JSON (the `matrices` command)")
    t.add_argument("--earlier", nargs="*", default=[], help="bench/forgetting_study.py results JSON files")
    t.add_argument("--tasks", default=None, help="the study's tasks in training order, when no --matrices names them")
    t.add_argument("--doc", default=None, help="write each table into its generated block of this document "
                                               "(bench/doc_blocks.py) instead of printing")
    x = sub.add_parser("matrices", help="every run's accuracy matrix and drift of a study folder, into one JSON")
    x.add_argument("study_dir")
    x.add_argument("--out", default=str(REPO / "docs" / "studies" / "stories260k-frontier-matrices.json"))
    args = ap.parse_args(argv)
    return {"matched": matched, "tables": tables, "matrices": matrices}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
