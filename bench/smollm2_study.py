"""The SmolLM2 forgetting study's tables, from its committed packs (docs/forgetting-study.md, issue 30).

    python bench/smollm2_study.py                 # print every block
    python bench/smollm2_study.py --write         # write them into docs/forgetting-study.md's generated marks
                                                  # (and the summary into README.md's)
    python bench/smollm2_study.py --figure        # and the frontier figure, docs/forgetting-study-smollm2.{html,png}

The study runs with the project's own command and is packed as it grows (`python -m curlora study --pack ID DIR`):

    docs/studies/smollm2-pilot/     phase 1: each method without a full frontier over three learning rates, seed 0
    docs/studies/smollm2-pilot2/    phase 1b: DoRA and OSF likewise
    docs/studies/smollm2-frontier/  phase 2: CURLoRA and LoRA over three learning rates, 3 seeds x 2 task orders
    docs/studies/smollm2-peers/     phase 3: the others at the pilot's learning rate, 3 seeds x 2 task orders
    docs/studies/smollm2-control/   the paper's control: head-only under head scoring, three lrs, 3 seeds, first order
    docs/studies/smollm2-frontier-edge/  one rate beyond the top of each frontier grid, analysed with the frontier
    docs/studies/smollm2-sampling/  cross-check: CURLoRA's other sampling rules at two lrs, 3 seeds, first order,
                                    analysed together with the frontier's inverted CURLoRA at the same lrs and order
    docs/studies/smollm2-sampling-low/  the same rules at 1e-3, to meet the inverted rule's learning (added after
                                    the sampling phase's first seed), analysed with the sampling phase

Each pack holds study/study.json (the typed StudyRecord: plan, points, groups over seeds, frontiers, best learning
rates, comparisons with their verdicts) and pack.json (which machine ran each finished run). This script only reads
them through the records and formats; every number in a block is in those files. Blocks whose pack is not committed
yet say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from curlora.errors import CurloraError  # noqa: E402
from curlora.measure.describe import lr_text  # noqa: E402,F401  (group keys, as the records write them)
from curlora.measure.study_analysis import (AGAINST_BASE, AT_CHOSEN, chosen_spec, drift_sign,  # noqa: E402
                                            margin_text, reanalyse)
from curlora.measure.study_record import CLIPPED, RANGES, StudyRecord, within  # noqa: E402
from curlora.methods.registry import method  # noqa: E402
from curlora.run.study_data import RunTimes, run_times  # noqa: E402
from doc_blocks import splice  # noqa: E402

DOC = REPO / "docs" / "forgetting-study.md"
STUDIES = REPO / "bench" / "studies"
EDGE = "frontier-edge"  # one more rate each beyond the top of the frontier's grids, analysed as part of the frontier
LOW = "sampling-low"  # the other sampling rules one rate lower, to meet the inverted rule's learning; part of sampling
PHASES = ("pilot", "pilot2", "frontier", EDGE, "peers", "control", "sampling", LOW)
PACKS = {phase: REPO / "docs" / "studies" / f"smollm2-{phase}" for phase in PHASES}
# the measures each table shows, in order, where the study stored them: (name, header, scale, digits)
COLUMNS = [("learning_val", "learning, validation rows (pts)", 1, 1),
           ("learning_test", "learning, test rows (pts)", 1, 1),
           ("forgetting_learned", "forgetting of learned tasks (pts)", 1, 1),
           ("forgetting", "forgetting, all earlier tasks (pts)", 1, 1),
           ("forgetting_known", "forgetting of known tasks (pts)", 1, 1),
           ("chat_kl", "chat KL to base", 1, 3),
           ("facts", "facts right (%)", 1, 0),  # Point.facts is in points already
           ("replies_unterminated", "chat replies not ended (of 32)", 1, 1),
           ("replies_repetitive", "chat replies repeating (of 32)", 1, 1),
           ("probe_ppl_ratio", "WikiText-2 ppl / base", 1, 3),
           ("kl_to_base", "self-probe KL", 1, 3),
           ("task_kl", "new-task KL", 1, 3)]


_LOADED: dict[tuple, tuple[StudyRecord, dict]] = {}  # (folder, pack.json's and study.json's mtimes): analysed


def load(phase: str, packs: dict[str, Path] = PACKS) -> tuple[StudyRecord, dict] | None:
    """A phase's pack: its record analysed with today's code and its meta; None where it is not packed. Analysing a
    pack takes seconds, so each is analysed once per version of its files in a process (a copy is returned: the
    caller may change it)."""
    import copy

    folder = packs[phase]
    if not (folder / "pack.json").is_file():
        return None
    stamp = (str(folder.resolve()), (folder / "pack.json").stat().st_mtime_ns,
             (folder / "study" / "study.json").stat().st_mtime_ns)
    if stamp not in _LOADED:
        _LOADED[stamp] = _load(folder)
    return copy.deepcopy(_LOADED[stamp])


def _load(folder: Path) -> tuple[StudyRecord, dict]:
    meta = json.loads((folder / "pack.json").read_text(encoding="utf-8"))
    rec = StudyRecord.of(json.loads((folder / "study" / "study.json").read_text(encoding="utf-8")))
    if rec.points and all((folder / "runs" / p.run_id / "metrics.json").is_file() for p in rec.points):
        # analysed again with today's code from every run's metrics (a pack written by a study still running an
        # older version lacks what was added since, e.g. the family of what each run knew); nothing is trained
        rec = reanalyse(rec, metrics_of=metrics_reader(folder))
        rec.reanalysis = None
    cfg = yaml.safe_load((folder / "study" / "config.yaml").read_text(encoding="utf-8"))
    meta["instructions"] = (cfg.get("evaluation") or {}).get("chat_probe_instructions")
    return rec, meta


def summary_text(s, scale: float, digits: int, measure: str | None = None) -> str:
    if s is None or s.mean is None:
        return "—"
    text = f"{s.mean * scale:.{digits}f}"
    if s.ci95:
        lo, hi = within([s.ci95[0] * scale, s.ci95[1] * scale], measure)
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


MATCHED = {phase: REPO / "docs" / "studies" / f"smollm2-{phase}" / "summary.json"
           for phase in ("matched-curlora-chases", "matched-lora-chases")}
MATCHED_SEEDS = 3


def matched_bodies(paths: dict[str, Path] = MATCHED) -> dict[str, dict]:
    """The matched-loss cross-checks' summaries (bench/forgetting_frontier.py matched --out) that are committed."""
    return {phase: json.loads(path.read_text(encoding="utf-8")) for phase, path in paths.items() if path.is_file()}


def matched_packed(phase: str, paths: dict[str, Path] = MATCHED) -> int:
    """A matched-loss cross-check's seeds packed so far: the driver packs each seed's run as it finishes, and writes
    summary.json after the last."""
    runs = paths[phase].parent / "runs" if phase in paths else None
    return sum(1 for p in runs.iterdir() if p.is_dir()) if runs is not None and runs.is_dir() else 0


def status_block(loaded: dict, matched: dict | None = None, matched_paths: dict[str, Path] = MATCHED) -> list[str]:
    lines = ["| phase | finished runs | still to run | machines |", "|---|---|---|---|"]
    for phase in PACKS:
        got = loaded.get(phase)
        if got is None:
            lines.append(f"| {phase} | 0 | not started | — |")
            continue
        rec, meta = got
        machines = sorted(set(meta.get("runs", {}).values()))
        lines.append(f"| {phase} | {meta['points']} | {meta['pending']} | {'; '.join(machines) or '—'} |")
    for phase in MATCHED:
        body = (matched or {}).get(phase)
        if body is None:
            n = matched_packed(phase, matched_paths)
            lines.append(f"| {phase} | {n} | {MATCHED_SEEDS - n if n else 'not started'} | "
                         f"{'packed seed by seed; the summary waits for the last' if n else '—'} |")
            continue
        machines = sorted({e.get("machine") or "—" for e in body["runs"]})
        lines.append(f"| {phase} | {len(body['runs'])} | {MATCHED_SEEDS - len(body['runs'])} | {'; '.join(machines)} |")
    return lines


def base_block(rec: StudyRecord, instructions: int | None = None) -> list[str]:
    """The base model's row (each seed's, with rows_per_seed): each task's accuracy with n and its Wilson interval,
    WikiText-2 perplexity, and the chat probe's counts."""
    rows = sorted(rec.bases.items()) or ([("all", rec.base)] if rec.base is not None else [])
    if not rows:
        return ["The base row is not measured yet."]
    lines = ["| seed | " + " | ".join(rec.tasks) + " | WikiText-2 ppl | facts right | replies not ended | "
             "replies repeating |", "|---|" + "---|" * (len(rec.tasks) + 4)]
    of = f" of {instructions}" if instructions else ""
    for seed, b in rows:
        cells = [f"{a * 100:.1f} % [{c[0] * 100:.1f}, {c[1] * 100:.1f}] (n={n})"
                 for a, c, n in zip(b.accuracy, b.ci95, b.n)]
        chat = [f"{b.facts} of {b.facts_n}" if b.facts is not None else "—",
                *(f"{v}{of}" if v is not None else "—" for v in (b.replies_unterminated, b.replies_repetitive))]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {b.ppl:.2f} | " + " | ".join(chat) + " |")
    return lines


QUALITY = REPO / "presets" / "quality" / "smollm2-135m-instruct.json"  # bench/model_quality.py's zero-shot row


def tasks_block(loaded: dict, quality: Path = QUALITY, packs: dict[str, Path] = PACKS) -> list[str]:
    """The base row that chose the tasks: the zero-shot measurement before the study (bench/model_quality.py, n = 300
    per GLUE/Sentiment140 task), and for the bundled `answers` task, which that measurement does not cover, the
    frontier's own base row (seed 0's rows) once it is packed. Accuracy with its 95 % Wilson interval and n, the
    majority-class share, and where each number comes from."""
    body = json.loads(quality.read_text(encoding="utf-8"))
    names = {"sst2": "SST-2 (movie-review sentiment, GLUE)", "mrpc": "MRPC (news paraphrase, GLUE)",
             "sentiment140": "Sentiment140 (tweet sentiment)", "answers": "`answers` (bundled: does a reply fit the "
             "question's type?)"}
    lines = ["| task | base accuracy [95 % CI] | n | majority class | one class only | measured by |",
             "|---|---|---|---|---|---|"]
    for row in body["zero_shot"]:
        one = "yes" if row.get("pred_share", 0) >= 0.95 else "no"
        lines.append(f"| {names.get(row['task'], row['task'])} | {row['accuracy'] * 100:.1f} % "
                     f"[{row['ci95'][0] * 100:.1f}, {row['ci95'][1] * 100:.1f}] | {row['n']} | "
                     f"{row['majority'] * 100:.1f} % | {one} | `{body['measured_by']}` (before the study) |")
    front = loaded.get("frontier")
    if front is not None:
        rec = front[0]
        b = rec.bases.get(0) or rec.base
        if b is not None and "answers" in rec.tasks:
            j = rec.tasks.index("answers")
            share = (b.pred_share or [None] * len(rec.tasks))[j]
            one = "—" if share is None else ("yes" if share >= 0.95 else "no")
            run = next((p.run_id for p in rec.points if p.seed == 0 and p.order == 0), None)
            m = metrics_reader(*front_folders(packs))(run) if run else None
            major = f"{m.majority[j] * 100:.1f} %" if m is not None and m.majority else "—"
            lines.append(f"| {names['answers']} | {b.accuracy[j] * 100:.1f} % [{b.ci95[j][0] * 100:.1f}, "
                         f"{b.ci95[j][1] * 100:.1f}] | {b.n[j]} | {major} | {one} | the frontier's base row, seed 0 "
                         "(after the choice) |")
    return lines


def run_costs(loaded: dict, packs: dict[str, Path] = PACKS) -> dict[str, dict[str, list[RunTimes]]]:
    """{phase: {method: [RunTimes of each packed run]}} (curlora/run/study_data.py run_times), from each packed
    run's events (phases not packed: left out)."""
    out: dict[str, dict[str, list[RunTimes]]] = {}
    for phase, folder in packs.items():
        got = loaded.get(phase)
        if got is None:
            continue
        by = out.setdefault(phase, {})
        for p in got[0].points:
            f = folder / "runs" / p.run_id / "events.jsonl"
            t = run_times([json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]) \
                if f.is_file() else None
            if t is not None:
                by.setdefault(p.method, []).append(t)
    return out


def compute_block(loaded: dict, packs: dict[str, Path] = PACKS) -> list[str]:
    """Each phase's measured cost per method, from the packed runs' events: seconds per training step, seconds of
    evaluation per stage, and minutes per run (median [min, max] over its runs), with the machines they ran on."""
    lines = ["| phase | method | runs | s per training step | evaluation s per stage | minutes per run | machines |",
             "|---|---|---|---|---|---|---|"]

    def spread(xs: list[float], digits: int) -> str:
        xs = sorted(xs)
        return f"{statistics.median(xs):.{digits}f} [{xs[0]:.{digits}f}, {xs[-1]:.{digits}f}]"
    for phase, by in run_costs(loaded, packs).items():
        machines = "; ".join(sorted(set(loaded[phase][1].get("runs", {}).values()))) or "—"
        for method, ts in by.items():
            lines.append(f"| {phase} | {method} | {len(ts)} | "
                         f"{spread([t.train_s / t.steps for t in ts if t.steps], 2)} | "
                         f"{spread([x for t in ts for x in t.eval_s], 0)} | "
                         f"{spread([t.minutes for t in ts], 1)} | {machines} |")
    return lines


def groups_block(rec: StudyRecord, chosen: bool = True) -> list[str]:
    """One row per (method, lr) the study has finished runs of, with n and each measure's mean [95 % CI]; the rate
    chosen on validation rows marked (chosen=False: none, where a phase's one rate per method chooses nothing)."""
    if not rec.groups:
        return ["No run of this phase has finished yet."]
    shown = [(n, h, sc, d) for n, h, sc, d in COLUMNS
             if any(g.mean(n) is not None for g in rec.groups.values())]
    lines = ["| method | lr | runs | " + " | ".join(h for _, h, _, _ in shown) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for label in rec.labels:
        best = rec.best.get(label) if chosen else None
        for key, g in sorted(((k, g) for k, g in rec.groups.items() if g.method == label), key=lambda kg: kg[1].lr):
            grid = sorted(rec.settings.lrs.get(label) or [])
            edge = "" if len(grid) < 2 else "; the lowest of its grid" if g.lr == grid[0] else \
                "; the highest of its grid" if g.lr == grid[-1] else ""
            mark = f" (chosen{edge})" if best is not None and best.key == key else ""
            cells = [summary_text(g.measure(n), sc, d, n) for n, _, sc, d in shown]
            lines.append(f"| {label} | {g.lr:g}{mark} | {len(g.run_ids)} | " + " | ".join(cells) + " |")
    def at_edge(m, b) -> bool:
        grid = rec.settings.lrs.get(m) or []
        return len(grid) > 1 and b.key in rec.groups and rec.groups[b.key].lr in (min(grid), max(grid))
    if chosen and any(at_edge(m, b) for m, b in rec.best.items() if b is not None):
        lines += ["", "A rate chosen at the edge of its grid may not be the method's best: a rate beyond the edge was "
                  "not tried."]
    if any(g.measure(n).ci95 for g in rec.groups.values() for n, _, _, _ in shown if n in RANGES):
        lines += ["", CLIPPED]
    return lines


def num(x) -> str:
    """A p value (or a margin) in a table: three significant digits, a dash for none."""
    return "—" if x is None else f"{x:.3g}"


def comparisons_block(rec: StudyRecord, comparisons: list | None = None) -> list[str]:
    """The comparisons' verdicts, p values and sentences: the study's own (at the middle of the shared learning
    range) or those given (the secondary ones, at its top)."""
    comparisons = rec.comparison if comparisons is None else comparisons
    if not comparisons:
        return ["No comparison yet: it needs finished runs of both methods at matched learning."]
    decided = [c for c in comparisons if c.verdict]
    lines = []
    if decided:
        lines = ["| comparison | verdict | p | p (Holm) | TOST p | margin (pts) |", "|---|---|---|---|---|---|"]
        for c in decided:
            lines.append(f"| {' vs '.join(c.methods)} | {c.verdict} | {num(c.p)} | {num(c.p_adjusted)} | "
                         f"{num(c.tost_p)} | {num(c.margin)} |")
        lines += [""] + [f"- {c.sentence}" for c in decided if c.sentence]
    # a pair not compared yet says why once (a family tests some pairs on several measures: the same reason each
    # time); the pairs of a method with no finished run yet are one line, not one each
    idle = [m for m in rec.labels if not any(g.method == m for g in rec.groups.values())]
    undecided = [c for c in comparisons if not c.verdict]
    unrun = [c for c in undecided if set(c.methods) & set(idle)]
    waiting = list(dict.fromkeys(c.sentence for c in undecided if c not in unrun and c.sentence))
    if unrun:
        pairs = len({tuple(c.methods) for c in unrun})
        many = len(idle) > 1
        waiting.append(f"{', '.join(idle)}: no finished run yet; the {pairs} pair{'s' if pairs > 1 else ''} with "
                       f"{'them' if many else 'it'} {'are' if pairs > 1 else 'is'} compared once "
                       f"{'each has' if many else 'it has'} one.")
    if waiting:
        lines += ([""] if decided else []) + ["Not compared yet:", ""] + [f"- {w}" for w in waiting]
    return lines


def against_base_block(rec: StudyRecord) -> list[str]:
    """Each setting against the base model (study_analysis.against_base): facts and WikiText-2 perplexity, the change
    over runs with its interval, the test, TOST and the verdict."""
    if not rec.against_base:
        return ["No setting has finished a run with the chat probe and the probe text yet."]
    lines = ["| setting | measure | base | setting's mean | change [95 % CI] | runs | p | p (Holm) | TOST p | margin "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    names = {"facts": "facts right (pts)", "probe_ppl_ratio": "WikiText-2 ppl / base",
             "probe_ppl_ratio:log": "WikiText-2 ppl / base (geometric)"}
    for t in sorted(rec.against_base, key=lambda t: (t.method, t.lr, t.measure)):
        d = AGAINST_BASE[t.measure][1]
        ci = f" [{t.ci95[0]:+.{d}f}, {t.ci95[1]:+.{d}f}]" if t.ci95 else ""
        name = names.get(f"{t.measure}:{t.scale}", names.get(t.measure, t.measure))
        lines.append(f"| {t.method} lr {t.lr:g} | {name} | {t.base:.{d}f} | "
                     f"{t.value:.{d}f} | {t.change:+.{d}f}{ci} | {t.n} | {num(t.p)} | {num(t.p_adjusted)} | "
                     f"{num(t.tost_p)} | {margin_text(t.margin, AGAINST_BASE[t.measure][2], t.measure)} | "
                     f"{t.verdict} |")
    if any(t.scale == "log" for t in rec.against_base):
        lines += ["", "Perplexity ratios are tested on their logarithm (a run at ×2 and one at ×10⁴ are "
                  "multiplicative changes): the setting's mean is the geometric mean ratio, the change that ratio less "
                  "1 with its interval, and TOST within ±log 1.05."]
    return lines


CHOSEN_SHORT = {"learning_test": "learning, test rows (pts)", "learning": "learning, every eval row (pts)",
                "forgetting": "forgetting (pts)", "forgetting_known": "forgetting of known tasks (pts)",
                "chat_kl": "chat KL to base", "facts": "facts right (pts)", "probe_ppl_ratio": "WikiText-2 ppl / base"}


def at_chosen_block(rec: StudyRecord) -> list[str]:
    """Each pair, each at its own chosen rate (study_analysis.at_chosen): both means, the difference over the paired
    runs with its interval, the test, TOST and the verdict; grouped by measure (each measure its own Holm family)."""
    if not rec.at_chosen:
        return ["No pair has finished runs at both chosen rates yet."]
    lines = ["| first | second | measure | first's mean | second's mean | difference [95 % CI] | pairs | p | p (Holm) "
             "| TOST p | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    order = list(AT_CHOSEN)
    for t in sorted(rec.at_chosen, key=lambda t: order.index("learning_test" if t.measure == "learning"
                                                              else t.measure)):
        d = chosen_spec(t.measure)[1]
        ci = f" [{t.ci95[0]:+.{d}f}, {t.ci95[1]:+.{d}f}]" if t.ci95 else ""
        lr = [rec.groups[k].lr if k in rec.groups else None for k in t.keys]
        lines.append(f"| {t.methods[0]} lr {lr[0]:g} | {t.methods[1]} lr {lr[1]:g} | "
                     f"{CHOSEN_SHORT.get(t.measure, t.measure)} | {t.means[0]:.{d}f} | {t.means[1]:.{d}f} | "
                     f"{t.difference:+.{d}f}{ci} | {t.n} | {num(t.p)} | {num(t.p_adjusted)} | {num(t.tost_p)} | "
                     f"{t.verdict} |")
    if any(t.scale == "log" for t in rec.at_chosen):
        lines += ["", "Perplexity rows pair the runs on the log of their ratio: both means are geometric, and the "
                  "difference is the first's ratio over the second's, less 1."]
    return lines


def _lrs(items) -> str:
    return ", ".join(f"{x:g}" for x in sorted(items))


def chosen_group(rec, method: str):
    """The group of `method` at its rate chosen on validation rows (rec.best), with learning on test rows; None
    where there is none."""
    b = rec.best.get(method)
    g = rec.groups.get(b.key) if b is not None else None
    return g if g is not None and g.mean("learning_test") is not None else None


def _runs(g) -> str:
    n = len(g.run_ids)
    return f"{n} run{'' if n == 1 else 's'}"


NAMES = {"curlora": "CURLoRA", "lora": "LoRA"}


def title(label: str) -> str:
    """A study label as prose names it: the method's registered title, with its replay share ('lora-replay25' →
    'LoRA + 25 % replay'); the label itself where no method is registered under it."""
    kind, _, share = label.partition("-replay")
    try:
        name = method(kind).title
    except CurloraError:
        return label
    return f"{name} + {share.replace('_', '.')} % replay" if share else name
SHORT = {"chat_kl": "chat KL", "facts": "facts right", "probe_ppl_ratio": "WikiText-2 perplexity"}  # in sentences
CHOSEN_WORDS = {"learning_test": "learning", "learning": "learning (every eval row)", "forgetting": "forgetting",
                "forgetting_known": "forgetting of what each run knew", **SHORT}
# how the claim paragraph says each verdict of a setting against the base, per measure
AGAINST_WORDS = {
    ("facts", "loses"): "answers fewer factual questions than the base",
    ("facts", "keeps"): "answers as many factual questions as the base, within ±3 points",
    ("facts", "gains"): "answers more factual questions than the base",
    ("facts", "inconclusive"): "is not shown to answer fewer factual questions nor as many",
    ("probe_ppl_ratio", "loses"): "raises WikiText-2 perplexity over the base's",
    ("probe_ppl_ratio", "keeps"): "keeps WikiText-2 perplexity within ±5 % of the base's",
    ("probe_ppl_ratio", "gains"): "lowers WikiText-2 perplexity below the base's",
    ("probe_ppl_ratio", "inconclusive"): "is not shown to change WikiText-2 perplexity nor to keep it within ±5 %"}


def beyond_chosen(rec: StudyRecord, methods: list[str]) -> str:
    """What the rates above each method's chosen one did (the frontier's edge): learning on test rows, the chat
    replies that never end their turn (of 32; the base's count beside it), facts right and WikiText-2 perplexity as the
    geometric mean ratio over runs (the against-base record's), each with its interval where it has one."""
    base = next(iter(rec.bases.values()), rec.base)
    said, broken = [], []
    for m in methods:
        best = rec.best.get(m)
        if best is None:
            continue
        above = sorted(((k, g) for k, g in rec.groups.items() if g.method == m and g.lr > best.lr),
                       key=lambda kg: kg[1].lr)
        for k, g in above:
            ppl = next((t for t in rec.against_base if t.key == k and t.measure == "probe_ppl_ratio"), None)
            broken.append(g.mean("replies_unterminated") is not None and g.mean("replies_unterminated") >= 32)
            said.append(f"{NAMES[m]} at lr {g.lr:g} learns {summary_text(g.measure('learning_test'), 1, 1)} points "
                        f"({_runs(g)}), {g.mean('replies_unterminated'):.0f} of 32 chat replies never end their turn, "
                        f"facts right {summary_text(g.measure('facts'), 1, 0, 'facts')} % and WikiText-2 perplexity "
                        + (f"×{ppl.value:,.0f} the base's (geometric mean)" if ppl else "not measured"))
    if not said:
        return ""
    unended = getattr(base, "replies_unterminated", None) if base is not None else None
    facts = 100 * base.facts / base.facts_n if base is not None and base.facts is not None and base.facts_n else None
    return ("Above each chosen rate (the frontier's edge), " + "; ".join(said)
            + (f" (the base: {unended} of 32 replies unended" if unended is not None else " (the base:")
            + (f", {facts:.0f} % facts)" if facts is not None else ")")
            + (": in every run there every reply ran on to the token limit — a rate past the chosen one broke the "
               "chat model, whichever method trained it." if all(broken) else "."))


MATCHED_MEASURES = (("chat_kl", "chat KL", 3), ("facts", "facts right", 0), ("probe_ppl_ratio",
                                                                           "WikiText-2 perplexity / the base's", 2))


def matched_block(matched: dict) -> list[str]:
    """The matched-loss cross-check in one paragraph, both ways round: the chasing method trained until its smoothed
    loss reached the reference's final one, so the two sides learned to the same training loss. For each direction
    and each of the base's abilities (chat KL, facts right, WikiText-2 perplexity; the last on the log of each
    seed's ratio, A's over B's less 1): both means, the paired difference CURLoRA − LoRA over seeds with its Student-t
    interval and p, every test of both directions Holm-adjusted together; a verdict only where the adjusted p is below
    0.05."""
    from curlora.measure import stats
    from curlora.measure.study_analysis import paired_test

    done = [(phase, body) for phase, body in matched.items() if body]
    if not done:
        return ["The matched-loss cross-check has not finished a direction yet."]
    tests = []  # (phase, measure, label, digits, (CURLoRA's mean, LoRA's), the paired test, on logs)
    for phase, body in done:
        ref = body["reference"]
        for name, label, digits in MATCHED_MEASURES:
            pairs = [(r["methods"]["curlora"].get(name), r["methods"]["lora"].get(name)) for r in body["runs"]]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if len(pairs) < 2:
                continue
            means, t, _, log = paired_test(name, pairs)
            tests.append((phase, name, label, digits, means, t, log))
    adjusted = stats.holm([t["p_value"] for *_, t, _ in tests])
    parts = []
    for (phase, name, label, digits, means, t, log), q in zip(tests, adjusted):
        unit = " %" if name == "facts" else ""
        ci = f" [{t['ci95'][0]:+.{digits}f}, {t['ci95'][1]:+.{digits}f}]" if t["ci95"] else ""
        diff = (f"CURLoRA's over LoRA's less 1 {t['mean']:+.{digits}f}{ci}" if log else
                f"CURLoRA − LoRA {t['mean']:+.{digits}f}{ci}{' points' if name == 'facts' else ''}")
        keeps = None if q is None or q >= stats.ALPHA else ((t["mean"] > 0) == (name == "facts"))
        said = ("" if keeps is None else " — CURLoRA keeps " + ("more" if keeps else "less") + " of the base") + (
            f" (p = {t['p_value']:.2g}, Holm {q:.2g})" if q is not None else " (no spread to test)")
        parts.append((phase, f"{label} {means[0]:.{digits}f}{unit} against {means[1]:.{digits}f}{unit}, {diff}{said}"))
    out = ["**Matched training loss, both ways round** (first order, one run per seed, the chasing method trained "
           "until its smoothed loss reached the reference's final one; each measure paired by seed, the perplexity "
           "ratio on its log; every test below Holm-adjusted together)."]
    for phase, body in done:
        ref = body["reference"]
        chaser = next(m for m in body["groups"] if m != ref)
        g, r = body["groups"][chaser], body["groups"][ref]
        steps = ", ".join(f"{s['mean']:.0f}" for s in g["steps"])
        reached = ", ".join(f"{x}/{len(body['runs'])}" for x in g["reached"])
        mine = "; ".join(text for ph, text in parts if ph == phase)
        out.append(f"{NAMES[chaser]} at lr {g['setting']['lr']:g} chasing {NAMES[ref]} at lr {r['setting']['lr']:g} "
                   f"({len(body['runs'])} seeds) reached its loss in {steps} steps per task (reached in {reached} "
                   f"runs); at that loss, CURLoRA against LoRA: {mine}.")
    missing = [phase for phase, body in matched.items() if not body]
    if missing:
        out.append(f"Not finished yet: {', '.join(missing)}.")
    return [" ".join(out)]


def claim_block(loaded: dict) -> list[str]:
    """The paragraph of claim_sentences, as one line."""
    return [" ".join(claim_sentences(loaded))]


def headline(loaded: dict) -> list[str]:
    """The README's first word on the study, under its opening: the claim paragraph's conclusion (its last sentence,
    every verdict in it with its Holm p and the settings compared), with the study's size and where the rest is."""
    said = claim_sentences(loaded)
    front = loaded.get("frontier")
    if front is None or len(said) < 2:
        return said
    rec, meta = front
    done, _ = frontier_runs(meta)
    orders = len(rec.settings.orders or [rec.tasks])
    rates = min(len({g.lr for g in rec.groups.values() if g.method == m}) for m in ("curlora", "lora"))
    return [f"**What it found on a real model** (SmolLM2-135M-Instruct, {len(rec.tasks)} tasks in {orders} orders, "
            f"{len(rec.settings.seeds)} seeds; {done} CURLoRA and LoRA runs over {rates} learning rates each; "
            "[the study](docs/forgetting-study.md), and [below](#what-we-measured-about-forgetting) its peers, "
            "intervals and cross-checks): " + said[-1]]


def frontier_runs(meta: dict) -> tuple[int, int]:
    """The frontier's finished and planned runs, its edge's included once they are analysed with it (with_edge)."""
    edge = meta.get("edge")
    return (meta["points"] + (edge["points"] if edge else 0),
            planned("frontier") + (planned(EDGE) if edge else 0))


def claim_sentences(loaded: dict) -> list[str]:
    """One paragraph on the paper's claim — CURLoRA keeps the base model's abilities while it learns a task sequence,
    where LoRA forgets — from the frontier's record only: what each method learned, the verdicts of CURLoRA against
    LoRA at matched learning (forgetting, forgetting of what each run knew, the base's abilities), and each
    setting against the base itself. Every clause carries its adjusted p or its verdict; the conclusion follows
    the verdicts, whichever method they favour."""
    front = loaded.get("frontier")
    if front is None:
        return ["No frontier run has finished yet: nothing to say about the paper's claim."]
    rec, meta = front
    edge = meta.get("edge")  # the edge's runs, analysed with the frontier's (with_edge)
    methods = [m for m in ("curlora", "lora") if m in rec.labels]
    if len(methods) < 2:
        return ["The frontier has not run both CURLoRA and LoRA yet."]
    done, total = frontier_runs(meta)
    out = [f"**What the data says about the paper's claim** ({done} of {total} frontier runs"
           + (", its edge's included" if edge else "")
           + ("; it will move as the rest run" if done < total else "") + "). The paper claims CURLoRA keeps the base "
           "model's abilities while it learns a task sequence, where LoRA forgets."]
    learned = []
    for m in methods:  # at the rate chosen on validation rows, reported on the test rows no choice was made on
        g = chosen_group(rec, m)
        if g is not None:
            learned.append(f"{NAMES[m]} {summary_text(g.measure('learning_test'), 1, 1)} points at lr {g.lr:g} "
                           f"({_runs(g)})")
    if learned:
        out.append("Each learns, at its rate chosen on validation rows and averaged over its tasks on test rows, "
                   + " and ".join(learned)
                   + " (above the better of the majority class and the base; 95 % interval over runs).")
    if edge:
        out.append(beyond_chosen(rec, methods))

    def sides(c) -> str:
        return " and ".join(f"{NAMES.get(m, m)} lr {rec.groups[k].lr:g}" for m, k in c.nearest.items()
                            if k in rec.groups)

    pairs = [(c, what) for comps, what in ((rec.comparison, "forgetting"),
                                          (rec.comparison_top, "forgetting at the most learning both reach"),
                                          (rec.comparison_known, "forgetting of what each run knew"),
                                          (rec.comparison_chat, None)) for c in comps
             if set(c.methods) == set(methods)]
    told, first = [], None
    for c, what in pairs:
        name = what or SHORT.get(c.measure, c.measure)
        at = sides(c)
        if first is None:
            first = at
        elif at and at != first:
            name += f" (at {at})"
        p = "" if c.p_adjusted is None else f", Holm p = {c.p_adjusted:.2g}"
        told.append(f"{name} *{c.verdict or 'not compared'}*{p}")
    if told:
        out.append(f"Against LoRA at matched learning{f' (nearest settings {first})' if first else ''}: "
                   + "; ".join(told) + ".")
    chosen = [t for t in rec.at_chosen if t.methods == methods]
    if chosen:
        lr = [rec.groups[k].lr for k in chosen[0].keys]
        def one(t) -> str:
            name = CHOSEN_WORDS.get(t.measure, t.measure)
            p = "" if t.p_adjusted is None else f", Holm p = {t.p_adjusted:.2g}"
            if t.verdict in ("more", "less"):
                verb = "learns" if t.measure.startswith("learning") else "loses"
                return f"CURLoRA {verb} *{t.verdict}*" + ("" if verb == "learns" else f" by {name}") + p
            return f"{name} *{t.verdict}*{p}"
        out.append(f"Each at its own chosen rate (CURLoRA lr {lr[0]:g}, LoRA lr {lr[1]:g}: what a user who takes "
                   "each recommendation gets; runs paired, each measure its own Holm family): "
                   + "; ".join(one(t) for t in chosen) + ".")
    for m in methods:
        parts = []
        for measure in ("facts", "probe_ppl_ratio"):
            for verdict in ("loses", "gains", "keeps", "inconclusive"):
                ts = sorted((t for t in rec.against_base if (t.method, t.measure, t.verdict) == (m, measure, verdict)),
                            key=lambda t: t.lr)
                if ts:
                    decided = verdict in ("loses", "gains")
                    ps = ", ".join(f"{t.p_adjusted:.2g}" for t in ts if decided and t.p_adjusted is not None)
                    # every run alike beyond the margin: decided without a test (curlora/measure/study_analysis.py)
                    alike = [t.lr for t in ts if decided and t.p_adjusted is None]
                    notes = ([f"Holm p {ps}"] if ps else []) + (
                        [f"at lr {_lrs(alike)} every run the same, no spread left to test"] if alike else [])
                    parts.append(f"{AGAINST_WORDS[(measure, verdict)]} at lr {_lrs(t.lr for t in ts)}"
                                 + (f" ({'; '.join(notes)})" if notes else ""))
        if parts:
            out.append(f"Against the base model, {NAMES[m]} " + "; ".join(parts) + ".")
    control = loaded.get("control")
    crec = control[0] if control is not None else None
    g = chosen_group(crec, "head-only") if crec is not None else None
    if g is not None:
        k = crec.best["head-only"].key  # chosen_group's
        kept = sorted({t.measure for t in crec.against_base if t.key == k and t.verdict == "keeps"})
        said = {"facts": "its factual answers", "probe_ppl_ratio": "its WikiText-2 perplexity"}
        out.append(f"The paper's control, a linear head per task on the frozen model (head scoring, so learning "
                   "above the majority class on another scale), learns at its rate chosen on validation rows "
                   f"{summary_text(g.measure('learning_test'), 1, 1)}"
                   f" points at lr {g.lr:g} ({_runs(g)})"
                   + (f" and keeps {' and '.join(said[m] for m in kept)} by the test against the base" if kept else "")
                   + ".")
    favour = [(c, what) for c, what in pairs if c.verdict in ("less", "more")]
    partial = done < total  # a verdict on part of the frontier says so
    if favour:
        camp = {True: [], False: []}  # for CURLoRA, against it
        for c, what in favour:
            good = (c.verdict == "less") == (c.methods[0] == "curlora")
            name = what or SHORT.get(c.measure, c.measure)
            p = "no spread left to test" if c.p_adjusted is None else f"Holm p = {c.p_adjusted:.2g}"
            camp[good].append(f"{name} ({p}, {sides(c)})")
        parts = []
        if camp[True]:
            parts.append("favour CURLoRA by " + " and ".join(camp[True]))
        if camp[False]:
            parts.append("go against CURLoRA by " + " and ".join(camp[False]))
        verdict = ("So far the" if partial else "The") + " tests at matched learning " + "; they ".join(parts) + "."
        if camp[False] and not camp[True]:
            verdict += (" At the same learning CURLoRA keeps less of what they measure than LoRA, and no test finds "
                        "it forgetting less: on this model, at these settings, the data goes against the paper's "
                        "claim.")
        elif camp[True] and not camp[False]:
            verdict += " On this model, at these settings, the data supports the paper's claim by those measures."
    else:
        verdict = (("So far no" if partial else "No") + " test at matched learning favours either method: "
                   "none of the comparisons above is *less* or *more*, and none shows them *equivalent*, so the "
                   "data neither supports nor refutes that CURLoRA forgets less than LoRA.")
    for m in methods:
        lrs = {g.lr for g in rec.groups.values() if g.method == m}
        lost = {t.lr for t in rec.against_base if t.method == m and t.verdict == "loses"}
        if lrs and lost == lrs:
            verdict += (f" {NAMES[m]} loses some of the base's abilities at every learning rate tried "
                        f"({_lrs(lrs)}), by a test against the base.")
        elif lost:
            kept = {lr for lr in lrs - lost if all(t.verdict == "keeps" for t in rec.against_base
                                                   if t.method == m and t.lr == lr)}
            verdict += (f" {NAMES[m]} loses some of the base's abilities at lr {_lrs(lost)}"
                        + (f", keeps them within the margins at lr {_lrs(kept)}" if kept else "")
                        + ("; at its other rates the tests show neither a loss nor keeping within the margins"
                           if lrs - lost - kept else "") + ".")
    out.append(verdict)
    return out


def metrics_reader(*folders: Path):
    """metrics_of(run_id) over the runs of some packs (their runs/ folders), as the running study reads its own."""
    from curlora.run.store import Run

    def metrics_of(run_id: str):
        for folder in folders:
            if (folder / "runs" / run_id / "metrics.json").is_file():
                return Run.open(run_id, folder / "runs").record()
        raise FileNotFoundError(run_id)
    return metrics_of


def _sampling_phases(loaded: dict) -> list[str]:
    """The sampling cross-check's phases that have a pack: the sampling phase's and its lower rate's (LOW)."""
    return [phase for phase in ("sampling", LOW) if loaded.get(phase)]


def sampling_record(loaded: dict, packs: dict[str, Path] = PACKS) -> StudyRecord | None:
    """The sampling cross-check's analysis: its rules' points (the sampling phase's and, once packed, its lower
    rate's, LOW) beside the frontier's inverted CURLoRA points at the same learning rates, seeds and first task order
    (the same runs the cross-check would repeat), analysed as one study with today's code (groups, frontiers,
    comparisons at matched learning, Holm over their family)."""
    import dataclasses

    from curlora.measure.study_analysis import analyse

    if not (loaded.get("sampling") and loaded.get("frontier")):
        return None
    front = loaded["frontier"][0]
    present = _sampling_phases(loaded)
    parts = [loaded[phase][0] for phase in present]
    rec = parts[0]
    lrs = {m: sorted({lr for r in parts for lr in r.settings.lrs.get(m, [])})
           for m in dict.fromkeys(m for r in parts for m in r.settings.lrs)}
    grid = sorted({lr for rates in lrs.values() for lr in rates})

    def same(x) -> bool:  # a frontier point or plan entry the cross-check would repeat
        return x.method == "curlora" and x.order == 0 and x.lr in grid and x.seed in rec.settings.seeds
    mine, plan = [p for p in front.points if same(p)], [e for e in front.plan if same(e)]
    settings = dataclasses.replace(rec.settings, lrs={"curlora": grid, **lrs})
    folders = [packs[phase] for phase in present]
    out = analyse(settings, front.base, plan + [e for r in parts for e in r.plan],
                  mine + [p for r in parts for p in r.points], metrics_reader(*folders, *front_folders(packs)),
                  tasks=rec.tasks)
    out.bases = front.bases
    return out


FRONT = ("curlora", "lora")  # the frontier's methods: every other method is compared against each of them


def across_record(loaded: dict, packs: dict[str, Path] = PACKS) -> StudyRecord | None:
    """The frontier and the peers analysed as one study (same tasks, rows per seed, seeds, orders, training and
    evaluation), comparing each peer against CURLoRA and against LoRA, and CURLoRA against LoRA, in each family
    (Holm over the family's pairs here, so the frontier's own pair is adjusted in a larger family than in its phase).
    None until both packs are there."""
    from curlora.measure.study_analysis import together

    if not (loaded.get("peers") and loaded.get("frontier")):
        return None
    front, peers = loaded["frontier"][0], loaded["peers"][0]
    labels = list(front.settings.lrs) + [m for m in peers.settings.lrs if m not in front.settings.lrs]
    pairs = [FRONT] + [(a, m) for a in FRONT for m in labels if m not in FRONT]
    return together([front, peers], metrics_reader(*front_folders(packs), packs["peers"]), pairs=pairs)


FLIP = {"less": "more", "more": "less"}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def which_block(loaded: dict, packs: dict[str, Path] = PACKS, across: StudyRecord | None = None) -> list[str]:
    """The user's question — which method gives the learning they need with the least forgetting — for each peer,
    each method at its chosen rate against CURLoRA and against LoRA at theirs (the across record's at_chosen: runs
    paired by seed × order, each measure a Holm family over these pairs), in one paragraph: the verdicts that decide
    (more, less, equivalent) with their adjusted p, the measures left inconclusive named. A peer with fewer than 3
    runs at its chosen rate is named as waiting, not judged."""
    across = across_record(loaded, packs) if across is None else across
    if across is None:
        return ["The peers have not started: no method is set against CURLoRA and LoRA at its chosen rate yet."]
    out = ["**Which method, each at its chosen rate** (the frontier and the peers as one study; runs paired by seed × "
           "task order; each measure Holm-adjusted over these pairs)."]
    waiting = []
    for m in across.labels:
        if m in FRONT:
            continue
        best = across.best.get(m)
        g = across.groups.get(best.key) if best is not None else None
        if g is None or len(g.run_ids) < 3:
            n = 0 if g is None else len(g.run_ids)
            waiting.append(f"{title(m)} ({n} run{'' if n == 1 else 's'})")
            continue
        sides = []
        for other in FRONT:
            ts = [t for t in across.at_chosen if t.methods == [other, m]]
            if not ts:
                continue
            lr = across.groups[ts[0].keys[0]].lr
            decided, open_ = [], []
            for t in ts:
                name = CHOSEN_WORDS.get(t.measure, t.measure)
                p = "" if t.p_adjusted is None else f" (Holm p = {t.p_adjusted:.2g})"
                # the record reads "other against m": say it of m, the peer
                if t.verdict in ("more", "less"):
                    flip = FLIP[t.verdict]
                    verb = "learns" if t.measure.startswith("learning") else "loses"
                    decided.append(f"{verb} {flip}" + ("" if verb == "learns" else f" by {name}") + p)
                elif t.verdict == "equivalent":
                    decided.append(f"shows the same {name} within "
                                   f"{margin_text(t.margin, chosen_spec(t.measure)[2], t.measure)}"
                                   + (f" (TOST p = {t.tost_p:.2g})" if t.tost_p is not None else ""))
                else:
                    open_.append(name)
            said = ", ".join(decided) if decided else "is decided on no measure (each test inconclusive)"
            sides.append(f"against {title(other)} lr {lr:g} it {said}" + (f"; {', '.join(open_)} inconclusive"
                                                                          if open_ and decided else ""))
        if sides:
            out.append(f"{_cap(title(m))} at lr {g.lr:g} ({len(g.run_ids)} runs): " + "; ".join(sides) + ".")
    if waiting:
        out.append(f"Fewer than 3 runs so far at the chosen rate of {', '.join(waiting)}: not judged yet.")
    return [" ".join(out)]


def probes_block(rec: StudyRecord) -> list[str]:
    """Which drift probe tracked forgetting over the study's runs — all earlier tasks, and what each run knew:
    Spearman's ρ with its bootstrap interval, the test of ρ = 0 Holm-adjusted over every probe and both targets,
    and whether it tracked (study_analysis.decide_probes)."""
    if not rec.probes:
        return ["No probe correlation yet: it needs finished runs."]
    known = {t.probe: t for t in rec.probes_known}
    lines = ["| probe | ρ with forgetting [95 % bootstrap] (runs) | p (Holm) | tracked it | within settings: ρ | "
             "p (Holm) | ρ with forgetting of what each run knew [95 % bootstrap] (runs) | p (Holm) | tracked it | "
             "within settings: ρ | p (Holm) |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(t) -> str:
        if t is None or t.rho is None:
            return "— | — | — | — | —"
        ci = f" [{t.ci95[0]:.2f}, {t.ci95[1]:.2f}]" if t.ci95 else ""
        p = "—" if t.p_adjusted is None else f"{t.p_adjusted:.2g}"
        within = "— | —" if t.p_within_adjusted is None else \
            f"{t.rho_within:.2f} | {t.p_within_adjusted:.2g}{' (tracks)' if t.tracks_within else ''}"
        return f"{t.rho:.2f}{ci} ({t.n}) | {p} | {'yes' if t.tracks else 'no'} | {within}"
    for t in rec.probes:
        lines.append(f"| {t.probe} | {cell(t)} | {cell(known.get(t.probe))} |")
    n = len([t for t in rec.probes + rec.probes_known if t.p is not None])
    k = max((t.settings for t in rec.probes), default=0)
    return lines + ["", f"A probe tracks forgetting when its Holm-adjusted p (over these {n} tests) is below 0.05 and ρ "
                    "runs the way drift does: above 0, below 0 for facts right, which fall as the model drifts. "
                    "Runs at one learning rate share it, so ρ over every run mixes the rate's effect with the seeds'; "
                    f"the within-settings columns take ranks within each of the {k} settings (method × rate) and "
                    "test by shuffling within them (2,000 permutations, so no p below 0.0005 before Holm; a family "
                    "of its own)."]


PROBE_NAMES = {"kl_to_base": "self-probe KL", "self_ppl_ratio": "self-probe perplexity ratio",
               "probe_ppl_ratio": "WikiText-2 perplexity ratio", "chat_kl": "chat KL", "facts": "facts right",
               "task_kl": "new-task KL"}


def probes_sentence(loaded: dict) -> list[str]:
    """The cross-check 'did any drift probe predict forgetting?' in one paragraph, from the frontier's record: which
    probes tracked forgetting (Holm-adjusted over every probe and both targets) and which did not, with ρ and p."""
    front = loaded.get("frontier")
    if front is None or not front[0].probes:
        return ["No drift probe has been checked against forgetting yet."]
    rec = front[0]
    family = [t for t in rec.probes + rec.probes_known if t.p is not None]

    def say(t) -> str:
        p = "untested" if t.p_adjusted is None else f"Holm p {t.p_adjusted:.2g}"
        return f"{PROBE_NAMES.get(t.probe, t.probe)} (ρ {t.rho:.2f}, {p})"
    yes = [say(t) for t in rec.probes if t.tracks]
    no = [say(t) for t in rec.probes if not t.tracks and t.rho is not None]
    known = [say(t) for t in rec.probes_known if t.tracks]
    n = len(rec.points)
    out = (f"**Did a drift probe predict forgetting?** Over the frontier's {n} runs (Spearman's ρ with forgetting, "
           f"each test Holm-adjusted over the {len(family)} probes × targets): "
           + (f"{', '.join(yes)} tracked it" if yes else "no probe tracked it")
           + (f"; {', '.join(no)} did not" if no else "") + ". "
           + ("Against forgetting of what each run knew, " + (f"{', '.join(known)} tracked it." if known else
                                                               "none did.") if rec.probes_known else "")
           + " Runs at one learning rate share it, so ρ over every run mixes the rate's effect with the seeds'. ")
    return [out + within_sentence(rec)]


RULES = {"curlora": "the paper's inverted rule", "curlora-offset": "the reference code's offset rule",
         "curlora-uniform": "uniform sampling", "curlora-leverage": "leverage scores"}


def sampling_sentence(loaded: dict, packs: dict[str, Path] = PACKS, rec: StudyRecord | None = None) -> list[str]:
    """The cross-check of CURLoRA's sampling rules in one paragraph: each other rule against the paper's inverted
    rule at matched learning (forgetting, forgetting of what each run knew, and the base's abilities), each verdict
    read from the other rule's side with its Holm-adjusted p and the settings nearest the matched level; a pair that
    was not compared says why."""
    rec = sampling_record(loaded, packs) if rec is None else rec
    if rec is None:
        return ["**CURLoRA's sampling rules:** no run of the cross-check has finished yet."]
    done = sum(loaded[p][1]["points"] for p in _sampling_phases(loaded))
    total = planned("sampling") + planned(LOW)
    out = [f"**CURLoRA's sampling rules** (cross-check, first order; {done} of {total} runs, beside the frontier's "
           "runs of the inverted rule at the same rates, seeds and rows; each kind of comparison one Holm family over "
           f"every pair of the four rules){'' if done == total else ', so far'}:"]
    for other in (m for m in rec.labels if m != "curlora"):
        if not any(g.method == other for g in rec.groups.values()):
            out.append(f"{_cap(RULES.get(other, other))} has no finished run yet.")
            continue
        found = [(c, what) for comps, what in ((rec.comparison, "forgetting"),
                                               (rec.comparison_known, "forgetting of what each run knew"),
                                               (rec.comparison_chat, None)) for c in comps
                 if set(c.methods) == {"curlora", other}]
        decided = [(c, what) for c, what in found if c.verdict]
        if not decided:
            why = next((c.sentence for c, _ in found if c.sentence), "")
            out.append(f"{_cap(RULES.get(other, other))} is not compared with the inverted rule yet"
                       + (f" ({why.rstrip('.')})." if why else "."))
            continue
        first = decided[0][0]
        at = " and ".join(f"{RULES.get(m, m)} lr {rec.groups[k].lr:g}" for m, k in first.nearest.items()
                          if k in rec.groups)
        told = []
        for c, what in decided:
            name = what or SHORT.get(c.measure, c.measure)
            verdict = c.verdict if c.methods[0] == other else FLIP.get(c.verdict, c.verdict)
            if verdict in FLIP:
                p = "no spread left to test" if c.p_adjusted is None else f"Holm p = {c.p_adjusted:.2g}"
                told.append(f"loses *{verdict}* by {name} ({p})")
            elif verdict == "equivalent":
                p = "no spread left to test" if c.tost_p is None else f"TOST p = {c.tost_p:.2g}"
                told.append(f"the same {name} within {margin_text(c.margin, ' pts', c.measure)} ({p})")
            else:
                told.append(f"{name} {verdict}")
        level = f"{first.learning:.1f} points; " if first.learning is not None else ""
        out.append(f"Against the inverted rule at matched learning ({level}nearest settings {at}), "
                   f"{RULES.get(other, other)}: " + "; ".join(told) + ".")
    return [" ".join(out)]


def wrong_way(t) -> str:
    """", the opposite way to drift" where a probe's within-setting ρ runs against drift (facts right rising with
    forgetting, a KL falling with it); "" otherwise."""
    against = t.rho_within is not None and t.rho_within * drift_sign(t.probe) < 0
    return ", the opposite way to drift" if against else ""


def within_sentence(rec) -> str:
    """The same question within one setting (method × rate): ranks within each setting, a permutation test that
    shuffles within settings, Holm over the same probes × targets: does a probe tell apart the runs of one setting,
    the question a user watching it during a run asks?"""
    tested = [t for t in rec.probes + rec.probes_known if t.p_within is not None]
    if not tested:
        return "Within one setting there are too few runs to ask."
    k = max(t.settings for t in tested)

    def say(t) -> str:
        return f"{PROBE_NAMES.get(t.probe, t.probe)} (ρ {t.rho_within:.2f}, Holm p {t.p_within_adjusted:.2g})"
    yes = [say(t) for t in tested if t.tracks_within]
    strongest = min(tested, key=lambda t: t.p_within)
    what = "forgetting" if strongest.target == "forgetting" else "forgetting of what each run knew"
    return (f"Within one setting (the same method and rate, {k} settings; ρ of ranks within each, a permutation p "
            f"shuffling within settings, Holm over the {len(tested)} probes × targets) "
            + (f"{', '.join(yes)} told a setting's runs apart by how much they forgot" if yes else
               f"no probe told a setting's runs apart by how much they forgot (the closest, "
               f"{PROBE_NAMES.get(strongest.probe, strongest.probe)} against {what}: ρ {strongest.rho_within:.2f}, "
               f"Holm p {strongest.p_within_adjusted:.2g}{wrong_way(strongest)})")
            + ": " + ("a probe that tracks forgetting across rates " if not yes else "")
            + ("says which rate forgets more, not which run of a rate will." if not yes else
               "those probes are worth watching during a run."))


def load_all(packs: dict[str, Path] = PACKS) -> dict:
    """Every phase's pack, loaded (and analysed with today's code) once: {phase: (record, meta) | None}; the
    frontier with its edge's runs (with_edge)."""
    return with_edge({phase: load(phase, packs) for phase in packs}, packs)


def front_folders(packs: dict[str, Path] = PACKS) -> list[Path]:
    """Where the frontier's runs are: its pack's and its edge's (a folder not there holds nothing)."""
    return [packs["frontier"]] + ([packs[EDGE]] if EDGE in packs else [])


def with_edge(loaded: dict, packs: dict[str, Path] = PACKS) -> dict:
    """`loaded` with the frontier analysed together with its edge's runs as one study (the union of the grids, the
    plans and the points; the same seeds draw the same rows, so the runs pair across the two packs), the frontier's
    meta carrying the edge's under "edge". Unchanged until every edge run has finished: an edge setting of one or
    two runs beside the frontier's six would be chosen as a best rate on noise and move every matched level, so a
    partial edge is shown apart (status_block) and joins the frontier whole."""
    from curlora.measure.study_analysis import together

    front, edge = loaded.get("frontier"), loaded.get(EDGE)
    if not (front and edge and edge[0].points) or edge[1].get("pending", 0):
        return loaded
    rec, meta = front
    merged = together([rec, edge[0]], metrics_reader(*front_folders(packs)))
    return {**loaded, "frontier": (merged, {**meta, "edge": edge[1]})}


def blocks(packs: dict[str, Path] = PACKS, matched_paths: dict[str, Path] = MATCHED,
           loaded: dict | None = None) -> dict[str, list[str]]:
    loaded = load_all(packs) if loaded is None else loaded
    matched = matched_bodies(matched_paths)
    across = across_record(loaded, packs)
    out = {"smollm2-status": status_block(loaded, matched, matched_paths),
           "smollm2-claim": claim_block(loaded) + [""] + matched_block(matched) + [""]
           + which_block(loaded, packs, across) + [""]
           + probes_sentence(loaded) + [""] + sampling_sentence(loaded, packs),
           "smollm2-tasks": tasks_block(loaded, packs=packs), "smollm2-compute": compute_block(loaded, packs)}
    for phase in ("pilot", "pilot2"):
        if loaded.get(phase):
            rec = loaded[phase][0]
            out["smollm2-status"] += ["", f"{phase.capitalize()}, seed 0, first order (learning rates chosen on "
                                      "validation rows):", ""]
            out["smollm2-status"] += groups_block(rec)
    edge = loaded.get(EDGE)
    if edge and edge[0].points and "edge" not in (loaded.get("frontier") or (None, {}))[1]:
        out["smollm2-status"] += ["", f"The frontier's edge so far ({edge[1]['points']} of {planned(EDGE)} runs; it "
                                  "joins the frontier's analysis, tests and figure once all have run):", ""]
        out["smollm2-status"] += groups_block(edge[0], chosen=False)
    for phase in ("frontier", "peers"):
        if loaded.get(phase):
            rec = loaded[phase][0]
            out["smollm2-status"] += ["", f"{phase.capitalize()} (means over seeds and orders, 95 % intervals over "
                                      "runs; learning on test rows):", ""]
            out["smollm2-status"] += ["Base model:", ""] + base_block(rec, loaded[phase][1]["instructions"]) + [""]
            out["smollm2-status"] += groups_block(rec) + [""] + comparisons_block(rec)
            out["smollm2-status"] += ["", "Secondary, at the most learning both methods' fits reach (a family of its "
                                      "own, Holm-adjusted apart from the primary one):", ""]
            out["smollm2-status"] += comparisons_block(rec, rec.comparison_top)
            out["smollm2-status"] += ["", "Forgetting of what each run knew — the earlier tasks it scored above the "
                                      "majority class right after training them, learned or already the base's (a "
                                      "family of its own, added after the first 13 frontier runs, as *How the "
                                      "comparison is decided* says):", ""]
            out["smollm2-status"] += comparisons_block(rec, rec.comparison_known)
            out["smollm2-status"] += ["", "The base's abilities tested at the primary level (chat KL, facts right and "
                                      "WikiText-2 perplexity / the base's, paired over runs at the nearest settings, "
                                      "one Holm family; *less* means the first method loses less of the base model; "
                                      "chat KL and the perplexity ratio have no equivalence margin):", ""]
            out["smollm2-status"] += comparisons_block(rec, rec.comparison_chat)
            out["smollm2-status"] += ["", "Each setting against the base model itself (the change of each run from the "
                                      "base in its own run, t-test over runs and TOST, one Holm family over every "
                                      "setting and measure; facts margin ±3 points, perplexity ±5 %):", ""]
            out["smollm2-status"] += against_base_block(rec)
            if phase == "frontier":
                out["smollm2-status"] += ["", "CURLoRA and LoRA each at its own chosen learning rate, what a user who "
                                          "takes each recommendation gets (runs paired by seed × task order; each "
                                          "measure a Holm family of its own; *more* / *less* of the first method: "
                                          "learns more, or loses less of what the measure keeps):", ""]
                out["smollm2-status"] += at_chosen_block(rec)
            out["smollm2-status"] += ["", "Did a drift probe track forgetting over these runs?", ""] + probes_block(rec)
    if across is not None:
        out["smollm2-status"] += ["", "Across phases: every peer against CURLoRA and against LoRA at matched learning "
                                  "(the frontier and peers analysed as one study; each family Holm-adjusted over "
                                  "these pairs):", ""]
        for title, comps in (("Forgetting, all earlier tasks:", across.comparison),
                             ("Forgetting of what each run knew:", across.comparison_known),
                             ("The base's abilities (chat KL, facts, perplexity):", across.comparison_chat)):
            out["smollm2-status"] += [title, ""] + comparisons_block(across, comps) + [""]
        out["smollm2-status"] += ["Each at its chosen learning rate (a peer that learns beyond a frontier method's "
                                  "whole range cannot be matched, but can be set against that method's chosen "
                                  "setting: runs paired by seed × task order, each measure a Holm family over "
                                  "these pairs):", ""] + at_chosen_block(across) + [""]
    if loaded.get("control"):
        rec = loaded["control"][0]
        out["smollm2-status"] += ["", "Control: head-only, a linear head per task on the frozen model, under head "
                                  "scoring (first order; learning above the majority class, on another scale than "
                                  "the likelihood-scored phases, so it is set beside them, not compared):", ""]
        out["smollm2-status"] += groups_block(rec) + ["", "Against the base model:", ""] + against_base_block(rec)
    sampling = sampling_record(loaded, packs)
    if sampling is not None:
        out["smollm2-status"] += ["", "Cross-check, CURLoRA's sampling rules (first order; the inverted rule's runs "
                                  "are the frontier's at the same learning rates and seeds; the other rules' 1e-3 "
                                  f"runs are the {LOW} phase's):", ""]
        out["smollm2-status"] += groups_block(sampling) + [""] + comparisons_block(sampling)
        out["smollm2-status"] += ["", "The base's abilities at the same matched level (chat KL, facts right, "
                                  "WikiText-2 perplexity / the base's; one Holm family over every pair of rules):",
                                  ""] + comparisons_block(sampling, sampling.comparison_chat)
    if matched:
        from forgetting_frontier import matched_tables

        for phase, body in matched.items():
            chaser = [label for label in body["groups"] if label != body["reference"]]
            out["smollm2-status"] += ["", f"Cross-check, matched training loss: {', '.join(chaser)} chasing "
                                      f"{body['reference']}'s loss (first order):", ""] + matched_tables(body)
    return out


README = REPO / "README.md"
# the README's summary: each method at its chosen learning rate, these measures (name, header, scale, digits)
SUMMARY = [("learning_test", "learning, test rows (pts)", 1, 1),
           ("forgetting", "forgetting, earlier tasks (pts)", 1, 1),
           ("forgetting_known", "forgetting of known tasks (pts)", 1, 1), ("chat_kl", "chat KL to base", 1, 3),
           ("facts", "facts right (%)", 1, 0)]


def planned(phase: str) -> int:
    """The runs a phase's study file plans: learning rates of every method × seeds × task orders. The peers phase,
    whose file is written once the pilots finish, plans every pilot method at one rate with the frontier's seeds and
    orders."""
    def spec(name: str) -> dict:
        return yaml.safe_load((STUDIES / f"smollm2-{name}.yaml").read_text(encoding="utf-8"))["study"]

    if phase == "peers":
        front = spec("frontier")
        methods = sum(len(spec(p)["lrs"]) for p in ("pilot", "pilot2"))
        return methods * len(front["seeds"]) * len(front.get("orders") or [None])
    st = spec(phase)
    return sum(len(v) for v in st["lrs"].values()) * len(st["seeds"]) * len(st.get("orders") or [None])


def readme_blocks(packs: dict[str, Path] = PACKS, matched_paths: dict[str, Path] = MATCHED,
                  loaded: dict | None = None) -> dict[str, list[str]]:
    """The README's summary of the study, from the same packs as the document: how much has run, the base row, each
    method of the frontier and peers phases at the learning rate chosen on validation rows (mean [95 % CI] over its
    runs, with their count) and every comparison's verdict with its Holm-adjusted p. Where a method has fewer than 3
    runs at its rate, the line says no claim is made from it."""
    loaded = load_all(packs) if loaded is None else loaded
    matched = matched_bodies(matched_paths)
    counts = {phase: (loaded[phase][1]["points"] if loaded.get(phase) else 0, planned(phase)) for phase in packs}
    counts.update({phase: (len(matched[phase]["runs"]) if matched.get(phase) else matched_packed(phase, matched_paths),
                           MATCHED_SEEDS) for phase in matched_paths})
    done, total = sum(d for d, _ in counts.values()), sum(t for _, t in counts.values())
    parts = "; ".join(f"{phase} {d} of {t}" for phase, (d, t) in counts.items())
    lines = [f"Finished{' so far' if done < total else ''}: **{done} of {total} runs** ({parts}; a matched-loss run "
             "trains both methods).", ""]
    lines += (claim_block(loaded) + [""] + matched_block(matched) + [""] + which_block(loaded, packs) + [""]
              + probes_sentence(loaded) + [""] + sampling_sentence(loaded, packs) + [""])
    front = loaded.get("frontier")
    if front is None:
        return {"smollm2-summary": lines + ["No frontier run has finished yet."], "smollm2-headline": headline(loaded)}
    rec = front[0]
    b = rec.bases.get(0) or rec.base
    if b is not None:
        cells = [f"{t} {a * 100:.1f} % [{c[0] * 100:.1f}, {c[1] * 100:.1f}] (n = {n})"
                 for t, a, c, n in zip(rec.tasks, b.accuracy, b.ci95, b.n)]
        facts = f", {b.facts} of {b.facts_n} factual questions right" if b.facts is not None else ""
        lines += [f"The base model (seed 0's rows): {', '.join(cells)}; WikiText-2 perplexity {b.ppl:.2f}{facts}.", ""]
    lines += ["| method | lr (chosen on validation rows) | runs | " + " | ".join(h for _, h, _, _ in SUMMARY) + " |",
              "|---|---|---|" + "---|" * len(SUMMARY)]
    few = []
    for phase in ("frontier", "peers"):
        if not loaded.get(phase):
            continue
        r = loaded[phase][0]
        for label in r.labels:
            best = r.best.get(label)
            g = r.groups.get(best.key) if best is not None else None
            if g is None:
                continue
            cells = [summary_text(g.measure(n), sc, d, n) for n, _, sc, d in SUMMARY]
            lines.append(f"| {label} | {g.lr:g} | {len(g.run_ids)} | " + " | ".join(cells) + " |")
            if len(g.run_ids) < 3:
                few.append(label)
    lines += ["", CLIPPED]
    if few:
        lines += ["", f"Fewer than 3 runs so far at the chosen rate of {', '.join(few)}: no claim is made from "
                  "those rows yet."]
    verdicts = []
    for phase in ("frontier",):  # CURLoRA against LoRA; the peers' pairs are in the document
        if not loaded.get(phase):
            continue
        r = loaded[phase][0]
        for where, comps in (("the middle of the learning both reach", r.comparison),
                             ("the most learning both reach", r.comparison_top),
                             ("the middle of the learning both reach, on the earlier tasks each run knew",
                              r.comparison_known)):
            for c in comps:
                p = "" if c.p_adjusted is None else f", Holm-adjusted p = {c.p_adjusted:.3g}"
                sides = " and ".join(f"{m} lr {r.groups[c.nearest[m]].lr:g}" for m in c.methods
                                     if c.nearest.get(m) in r.groups)
                at = f" (nearest settings {sides})" if sides else ""
                verdicts.append(f"- {' vs '.join(c.methods)}, at {where}{at}: *{c.verdict or 'not compared'}*{p}.")
        for c in r.comparison_chat:
            p = "" if c.p_adjusted is None else f", Holm-adjusted p = {c.p_adjusted:.3g}"
            verdicts.append(f"- {' vs '.join(c.methods)}, the base's abilities by {SHORT.get(c.measure, c.measure)} at "
                            f"the middle of the learning both reach (*less*: the first loses less of the base): "
                            f"*{c.verdict or 'not compared'}*{p}.")
    if verdicts:
        lines += ["", "CURLoRA against LoRA, forgetting and the base's abilities at matched learning "
                  "(docs/forgetting-study.md has each test, and the peers' comparisons):", ""] + verdicts
    return {"smollm2-headline": headline(loaded), "smollm2-summary": lines}


def combined(loaded: dict) -> StudyRecord | None:
    """The frontier phase's record with the peers' groups and points beside it (same tasks, rows, seeds, orders and
    evaluation), for one figure: each method where it was run. Comparisons stay each phase's own."""
    import dataclasses

    got = [loaded[p][0] for p in ("frontier", "peers") if loaded.get(p)]
    if not got:
        return None
    rec = got[0]
    for other in got[1:]:
        rec = dataclasses.replace(rec, points=rec.points + other.points, groups={**rec.groups, **other.groups},
                                  plan=rec.plan + other.plan, frontier={**rec.frontier, **other.frontier},
                                  chat_frontier={**rec.chat_frontier, **other.chat_frontier},
                                  settings=dataclasses.replace(rec.settings, lrs={**rec.settings.lrs,
                                                                                   **other.settings.lrs}))
    return rec


PEERS_YAML = STUDIES / "smollm2-peers.yaml"


def peers_yaml(loaded: dict) -> str:
    """The peers phase, written from the pilots' choices: every method of smollm2-pilot.yaml and -pilot2.yaml at the
    learning rate its pilot chose on validation rows, with the frontier's tasks, training, evaluation, seeds, rows
    per seed and task orders (so its points sit beside the frontier's). Refused, naming them, while a pilot method
    has no chosen rate yet."""
    front = yaml.safe_load((STUDIES / "smollm2-frontier.yaml").read_text(encoding="utf-8"))
    methods, lrs, missing = [], {}, []
    for phase in ("pilot", "pilot2"):
        spec = yaml.safe_load((STUDIES / f"smollm2-{phase}.yaml").read_text(encoding="utf-8"))
        rec = loaded[phase][0] if loaded.get(phase) else None
        for m in spec["methods"]:
            methods.append(m)
            label = m.get("name") or m["kind"]
            best = rec.best.get(label) if rec is not None else None
            finished = {g.lr for g in rec.groups.values() if g.method == label} if rec is not None else set()
            if best is None or set(spec["study"]["lrs"][label]) - finished:  # every rate of its grid run first
                missing.append(f"{label} ({phase})")
            else:
                lrs[label] = [best.lr]
    if missing:
        raise SystemExit("the peers phase needs every pilot method's chosen learning rate; not chosen yet: "
                         + ", ".join(missing) + ". Let the pilots finish and pack them first.")
    body = {k: front[k] for k in ("model", "tasks")}
    body["methods"] = methods
    body.update({k: front[k] for k in ("training", "evaluation")})
    body["run"] = {"name": "smollm2-peers"}
    body["study"] = {**{k: v for k, v in front["study"].items() if k != "lrs"}, "lrs": lrs}
    head = ["# Issue 30, phase 3 (the peers): written by `python bench/smollm2_study.py --peers-yaml` from the pilots'",
            "# packs (docs/studies/smollm2-pilot*, each method's learning rate chosen on validation rows, seed 0, first",
            "# order); the frontier's tasks, rows per seed, training, evaluation, seeds and orders (smollm2-frontier.yaml).",
            "#   HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m curlora study bench/studies/smollm2-peers.yaml",
            "#   python -m curlora study --pack STUDY_ID docs/studies/smollm2-peers", ""]
    return "\n".join(head) + yaml.safe_dump(body, sort_keys=False, width=118)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="write the blocks into docs/forgetting-study.md")
    ap.add_argument("--figure", action="store_true", help="write the frontier figure (HTML, and a PNG through "
                    "/usr/bin/chromium) to docs/forgetting-study-smollm2.*")
    ap.add_argument("--peers-yaml", action="store_true", help="write bench/studies/smollm2-peers.yaml from the "
                    "pilots' chosen learning rates")
    args = ap.parse_args(argv)
    loaded = load_all()
    if args.peers_yaml:
        PEERS_YAML.write_text(peers_yaml(loaded), encoding="utf-8")
        print(f"wrote {PEERS_YAML}")
    if args.figure:
        from forgetting_frontier import figure

        rec = combined(loaded)
        if rec is None:
            print("no frontier or peers pack yet: no figure")
        else:
            figure(rec, REPO / "docs" / "forgetting-study-smollm2.png", width=1300)
    for doc, made in ((DOC, blocks(loaded=loaded)), (README, readme_blocks(loaded=loaded))):
        for name, lines in made.items():
            if args.write:
                splice(doc, name, lines)
            else:
                print(f"## {name}\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
