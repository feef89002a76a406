"""Compare: each method over a grid of learning rates and seeds (a study, curlora/run/study.py), drawn live as
learning against forgetting. The experiment is the one on the Train tab (its model, tasks and methods); this tab
adds the grids and the seeds. Every number drawn or written here is read from the study's study.json, and how far a
study has got and how long the rest takes from its runs' events (curlora/run/study_data.py). Studies of the same
experiment (a rate past a grid's edge added later, more methods or seeds) can be analysed together as one
(study_data.together): the union of their grids and runs, every family over all of them."""

from __future__ import annotations

import html

import gradio as gr

from curlora.errors import CurloraError
from curlora.measure.study_analysis import (AGAINST_BASE, BEST_RULE, chosen_spec, interval_text, margin_text,
                                            within_text)
from curlora.measure.study_record import DEFAULT_MARGIN, StudyRecord
from curlora.methods.registry import described, kinds, lr_text, method
from curlora.run import study as studies
from curlora.run import study_data
from curlora.run.store import Study
from curlora.run.study_data import StudyProgress
from curlora.ui import study_charts, train_tab
from curlora.ui.common import Engine, friendly, with_request
from curlora.ui.train_tab import DEFAULT_METHODS

GRID_TEXT_MAX = 2_000  # characters of the grids or seeds box: a hundred learning rates fit
EMPTY = "Pick a study, or start one: the frontier fills in as its runs finish."


def default_grids(methods=DEFAULT_METHODS) -> str:
    """The grids of the Train form's default methods (a grid naming a method the experiment lacks is refused, so
    the default names only those the default experiment has; methods without a grid get their prior anyway)."""
    return "; ".join(f"{k}={','.join(lr_text(x) for x in method(k).lr_prior)}" for k in methods
                     if k in kinds() and method(k).trains and method(k).lr_prior)


def parse_grids(text: str) -> dict[str, list[float]]:
    return studies.parse_grid([part.strip() for part in (text or "").split(";") if part.strip()])


def best_table(rec: StudyRecord | dict) -> list[list]:
    rows = []
    rec = StudyRecord.of(rec)
    for label, best in rec.best.items():
        if not best:
            continue
        g = rec.groups[best.key]

        def cell(name, digits=2):
            return interval_text(g.measure(name), digits, single="", measure=name)

        learning = cell("learning_test") if g.learning_test.mean is not None else cell("learning")
        rows.append([described(label, g.setting), g.learning.n, learning, cell("forgetting"),
                     cell("forgetting_known"), cell("acc"), cell("kl_to_base", 4), cell("self_ppl_ratio", 3),
                     cell("probe_ppl_ratio", 3), ", ".join(g.constant_predictions) or "–", best.chosen])
    return rows


HEADERS = ["method (setting)", "runs", "learning on test rows (pts)", "forgetting (pts)",
           "forgetting of what it knew (pts)", "ACC (pts)", "KL to base", "self-ppl ratio", "probe-ppl ratio",
           "constant predictions", "chosen"]


def summary_md(rec: StudyRecord | dict, status: dict, progress: StudyProgress | None = None) -> str:
    rec = StudyRecord.of(rec)
    if not rec:
        return EMPTY
    lines = [f"**{html.escape(status.get('status', '?'))}** — {html.escape(status.get('message') or '')}"]
    if progress is not None and progress.left:  # how far it has got and about how long the rest takes
        lines.append(html.escape(progress.sentence()))
    lines += [f"⚠ {html.escape(w)}" for w in rec.warnings]
    # each family with its heading (the primary one's every pair, the later ones' pairs that reached a matched
    # level); the chat family names the measure each comparison tests
    for i, (family, comparisons, named) in enumerate(rec.families()):
        for c in comparisons:
            if i == 0 or c.learning is not None:
                by = f" by {MEASURE_NAMES.get(c.measure, html.escape(c.measure))}" if named else ""
                lines.append(f"{family}{by} — **{html.escape(' vs '.join(c.methods))}: "
                             f"{html.escape(c.verdict or 'not compared')}** — {c.sentence}")
    if rec.against_base:  # each setting against the base model itself (keeps | loses | gains | inconclusive)
        lines.append(against_base_md(rec))
    if rec.at_chosen:  # each pair at its own chosen rate (what a user who takes each recommendation gets)
        lines.append(at_chosen_md(rec))
    if rec.order_effect:
        lines.append("Task order: " + "; ".join(
            f"{o.method} in order {o.order + 1} ({', '.join(o.tasks)}) learns {interval_text(o.learning, 1)} and "
            f"forgets {interval_text(o.forgetting, 1)} pts" for o in rec.order_effect) + ".")
    for tracks, what in ((rec.probes, "forgetting"), (rec.probes_known, "forgetting of what each run knew")):
        tracked = [t for t in tracks if t.rho is not None]
        if tracked:
            lines.append(f"Drift probes against {what} over the runs (Spearman ρ, 95 % bootstrap, Holm-adjusted p "
                         "over every probe and target): " + "; ".join(
                             f"{t.probe} ρ = {t.rho:.2f}" + (f" [{t.ci95[0]:.2f}, {t.ci95[1]:.2f}]" if t.ci95 else "")
                             + (f", p = {t.p_adjusted:.2g}" if t.p_adjusted is not None else "")
                             + (" — tracked it" if t.tracks else "") + within_text(t) for t in tracked)
                         + f" (n = {tracked[0].n} runs). Runs at one rate share it, so ρ over every run mixes the "
                         "rate's effect with the seeds'; *within settings* ranks runs within each method × rate.")
    lines.append("Learning = accuracy right after training each task minus the better of the majority-class share "
                 "and the base model, averaged over tasks. Intervals: 95 % Student t over runs (seeds × task "
                 "orders; the table), 95 % bootstrap over runs at the matched level (the verdicts). Verdicts: less / "
                 "more (Holm-adjusted p < 0.05), equivalent (within the margin, TOST), inconclusive (with the runs "
                 "that would decide it), nothing learned (the compared runs learned no earlier task; for what each "
                 f"run knew: knew none above the majority class). The best setting per method: {BEST_RULE}.")
    return "\n\n".join(lines)


AGAINST_NAMES = {"facts": "factual questions right (pts)", "probe_ppl_ratio": "probe-text perplexity × the base's",
                 "probe_ppl_ratio:log": "probe-text perplexity × the base's (geometric mean over runs; change = it "
                                        "less 1; tested on its log)"}


def against_base_md(rec: StudyRecord) -> str:
    """Each setting against the base model as one table: the setting, the measure, the base's value and the
    setting's, the change over runs with its interval, the Holm-adjusted p, TOST p and the verdict (the numbers
    are the record's; nothing is computed here)."""
    def num(x, digits=3):
        return "–" if x is None else f"{x:.{digits}g}"
    rows = ["**Against the base model** (each run paired with the base in its own run; t-test over runs and TOST, "
            "one Holm family; *keeps* = within the margin):", "",
            "| setting | measure | base | setting | change [95 % CI] | runs | p (Holm) | TOST p | margin | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for t in rec.against_base:
        d = AGAINST_BASE[t.measure][1]
        ci = f" [{t.ci95[0]:+.{d}f}, {t.ci95[1]:+.{d}f}]" if t.ci95 else ""
        rows.append(f"| {html.escape(described(t.method, t.setting) if t.setting else t.key)} | "
                    f"{measure_name(AGAINST_NAMES, t)} | {num(t.base, 4)} | {num(t.value, 4)} | "
                    f"{t.change:+.{d}f}{ci} | {t.n} | {num(t.p_adjusted)} | {num(t.tost_p)} | "
                    f"{margin_text(t.margin, AGAINST_BASE[t.measure][2], t.measure)} | "
                    f"**{html.escape(t.verdict)}** |")
    return "\n".join(rows)


MEASURE_NAMES = {"learning_test": "learning, test rows (pts)", "learning": "learning, every eval row (pts)",
                "forgetting": "forgetting (pts)", "forgetting_known": "forgetting of what it knew (pts)",
                "chat_kl": "chat KL to base", "facts": "factual questions right (pts)",
                "probe_ppl_ratio": "probe-text perplexity × the base's",
                "probe_ppl_ratio:log": "probe-text perplexity × the base's (geometric means; difference = the "
                                       "first's over the second's, less 1; tested on its log)"}


def measure_name(names: dict, t) -> str:
    """A record's measure in words, naming the log scale where the record was tested on it."""
    return names.get(f"{t.measure}:{t.scale}") or names.get(t.measure) or html.escape(t.measure)


def at_chosen_md(rec: StudyRecord) -> str:
    """Each pair, each method at its own chosen rate, as one table: both settings, the measure, both means, the
    difference with its interval, the pairs, the Holm-adjusted p, TOST p and the verdict (the record's numbers;
    nothing is computed here)."""
    def num(x):
        return "–" if x is None else f"{x:.3g}"
    rows = ["**Each method at its chosen learning rate** (runs paired by seed × task order; each measure its own "
            "Holm family; *more* / *less* of the first: learns more, or loses less of what the measure keeps):", "",
            "| first | second | measure | first's | second's | difference [95 % CI] | pairs | p (Holm) | TOST p | "
            "verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in rec.at_chosen:
        d = chosen_spec(t.measure)[1]
        ci = f" [{t.ci95[0]:+.{d}f}, {t.ci95[1]:+.{d}f}]" if t.ci95 else ""
        first, second = (html.escape(described(m, st) if st else k)
                         for m, st, k in zip(t.methods, t.settings, t.keys))
        rows.append(f"| {first} | {second} | {measure_name(MEASURE_NAMES, t)} | "
                    f"{t.means[0]:.{d}f} | {t.means[1]:.{d}f} | {t.difference:+.{d}f}{ci} | {t.n} | "
                    f"{num(t.p_adjusted)} | {num(t.tost_p)} | **{html.escape(t.verdict)}** |")
    return "\n".join(rows)


def build(engine: Engine, train: dict) -> dict:
    jobs = engine.jobs
    gr.Markdown("Which method gives the learning you need with the least forgetting? One setting per method cannot "
                "say: the answer moves with the learning rate. A **study** trains every method of the Train tab's "
                "experiment at each learning rate of its grid and each seed (one ordinary run each, listed under "
                "Runs), and draws learning against forgetting.")
    with gr.Row():
        grids = gr.Textbox(default_grids(), label="learning-rate grids (method=lr,lr,…; separated by ;)", scale=3,
                           elem_id="study-grids")
        seeds = gr.Textbox("0,1", label="seeds", scale=1, elem_id="study-seeds")
        kl_budget = gr.Number(0, label="KL budget for 'best' (0: none)", minimum=0, scale=1)
        margin = gr.Number(DEFAULT_MARGIN, label="equivalence margin (points of forgetting)", minimum=0, scale=1)
    with gr.Row():
        start = gr.Button("Start study", variant="primary", elem_id="study-start")
        stop = gr.Button("Stop study")
        time_btn = gr.Button("Estimate the study's time (measures a few steps)", size="sm",
                             elem_id="study-time-btn")
        pick = gr.Dropdown([], label="study", allow_custom_value=True, scale=3, elem_id="study-pick")
    together = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, elem_id="study-with",
                           label="analyse together with (your studies of the same experiment: more rates, methods or "
                                 "seeds)")
    time_box = gr.Markdown(elem_id="study-time")
    summary = gr.Markdown(EMPTY, elem_id="study-summary")
    plot = gr.Plot(study_charts.frontier_figure({}), elem_id="study-frontier")
    table = gr.Dataframe(headers=HEADERS, label="each method at its own best learning rate", interactive=False,
                         wrap=True)
    with gr.Row():
        point = gr.Dropdown([], label="a run of this study", scale=3)
        open_point = gr.Button("Open in Results", scale=1)
        chat_point = gr.Button("Chat with it", scale=1)
    timer = gr.Timer(2.0, active=False)

    def mine(request) -> list[str]:
        return [r.id for r in jobs.runs(engine.owner(request)) if isinstance(r, Study)]

    def draw(sid: str, others: list[str] | None, request):
        owner = engine.owner(request)
        run = jobs.open(sid, owner)
        wanted = [o for o in dict.fromkeys(others or []) if o and o != sid]
        more = [jobs.open(o, owner) for o in wanted[:study_data.TOGETHER_MOST + 1]]  # more: refused by together
        rec = study_data.together([run, *more]) if more else run.study_record()
        statuses = [s.status() for s in (run, *more)]
        status = statuses[0]
        points = rec.point_run_ids()
        live = any(st.get("status") in ("running", "queued") for st in statuses)
        text = summary_md(rec, status, study_data.progress(run))
        if more:
            text = (f"Analysed together with {', '.join(html.escape(s.id) for s in more)}: one study of "
                    f"{len(rec.points)} finished runs over the union of their grids (status and time left: "
                    f"{html.escape(sid)}).\n\n" + text)
        return (text, study_charts.frontier_figure(rec), best_table(rec),
                gr.update(choices=points, value=points[0] if points else None), gr.Timer(active=live))

    inputs = [grids, seeds, kl_budget, margin, *train["form"]]

    def study_of(grid_text, seed_text, budget, equivalence, values, request):
        """The experiment of the Train tab and the study settings of this form, refused as a study would be."""
        for what, text in (("learning-rate grids", grid_text), ("seeds", seed_text)):
            if len(text or "") > GRID_TEXT_MAX:  # the grid's own sentences quote what they refuse
                raise CurloraError(f"The {what} are {len(text):,} characters long; the limit here is "
                                   f"{GRID_TEXT_MAX:,}, far beyond any study a server runs (see its limits).")
        cfg = train_tab.make_config(engine, request, dict(zip(train["paths"], values)))
        settings = studies.StudySettings(lrs=parse_grids(grid_text), seeds=studies.parse_seeds(seed_text or "0"),
                                         kl_budget=budget or None,
                                         margin=DEFAULT_MARGIN if equivalence is None else equivalence)
        return cfg, settings

    @with_request(len(inputs))
    @friendly
    def estimate(grid_text, seed_text, budget, equivalence, *values, request: gr.Request):
        """The study's time on this machine, from a calibration on the device (it waits its turn like a stage)."""
        from curlora.run.cost import estimate_study

        cfg, settings = study_of(grid_text, seed_text, budget, equivalence, values, request)
        return train_tab.calibrated(engine, request, cfg, lambda limits: estimate_study(cfg, settings, limits=limits))

    @with_request(len(inputs))
    @friendly
    def submit(grid_text, seed_text, budget, equivalence, *values, request: gr.Request):
        cfg, settings = study_of(grid_text, seed_text, budget, equivalence, values, request)
        notices = []
        sid = jobs.submit_study(cfg, settings, engine.owner(request), notices, client=engine.client(request))
        for note in notices:
            gr.Info(note)
        return gr.update(choices=mine(request), value=sid), gr.Timer(active=True)

    @friendly
    def show(sid: str, others: list[str] | None, request: gr.Request):
        if not sid:
            return EMPTY, study_charts.frontier_figure({}), [], gr.update(choices=[]), gr.Timer(active=False)
        return draw(sid, others, request)

    @friendly
    def companions(sid: str, request: gr.Request):
        """The studies a newly picked one may be analysed with: the visitor's others, none chosen yet."""
        return gr.update(choices=[i for i in mine(request) if i != sid], value=[])

    @friendly
    def cancel(sid: str, request: gr.Request):
        if not sid:
            raise CurloraError("No study to stop: pick or start one first.")
        jobs.cancel(sid, engine.owner(request))
        gr.Info("Stopping after the current step; finished runs are kept (resume the study from the Runs tab).")

    def fresh(sid: str, others: list[str] | None, request: gr.Request):
        """Opening the tab: the visitor's studies (the picked one kept, else the newest) and, to analyse with it, the
        others, those chosen kept (a study started since is offered too)."""
        ids = mine(request)
        sid = sid if sid in ids else (ids[0] if ids else None)
        rest = [i for i in ids if i != sid]
        return (gr.update(choices=ids, value=sid),
                gr.update(choices=rest, value=[o for o in (others or []) if o in rest]))

    light = {"api_name": False, "concurrency_limit": None, "show_progress": "hidden"}
    outputs = [summary, plot, table, point, timer]
    start.click(submit, inputs, [pick, timer], api_name="start_study")
    stop.click(cancel, pick, None, api_name=False)
    time_btn.click(estimate, inputs, time_box, api_name="estimate_study_time", concurrency_id="gpu",
                   concurrency_limit=1)
    pick.change(companions, pick, together, **light)
    pick.change(show, [pick, together], outputs, **light)
    together.change(show, [pick, together], outputs, api_name="study_together", concurrency_id="study-analysis",
                    concurrency_limit=1)  # an analysis of seconds: one at a time
    timer.tick(show, [pick, together], outputs, **light)
    return {"pick": pick, "together": together, "point": point, "open": open_point, "chat": chat_point,
            "fresh": fresh, "show": show, "outputs": outputs, "grids": grids, "seeds": seeds}


