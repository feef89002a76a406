"""`python -m curlora study EXPERIMENT.yaml --lrs curlora=3e-3,1e-2 --lrs lora=5e-4,1e-3 --seeds 0,1,2`: the
learning-rate × seed study of curlora/run/study.py from the command line; `--resume STUDY_ID` continues one.
A `study:` section in the YAML (lrs, seeds, kl_budget, replays) does the same; flags override it.

`--analyse PATH/study.json [--write OUT.json]` trains nothing: it recomputes a stored study's analysis with
today's code (curlora/measure/study_analysis.py `reanalyse`), from its runs where the study folder is here, else
from the points study.json stored, and says what could not be recomputed. `--with OTHER` (repeatable) analyses
other studies of the same experiment together with it, as one study (curlora/run/study_data.py `together`).

`--pack STUDY_ID DIR` / `--unpack DIR` train nothing: a study's data without weights, to commit as it grows and
to resume on another machine (curlora/run/study_data.py).

`--progress STUDY_ID [--json]` trains nothing: how many runs are finished and about how long the rest take
(curlora/run/study_data.py); `EXPERIMENT.yaml … --dry-run [--json]` estimates the whole study's time before it
starts (curlora/run/cost.py estimate_study)."""

from __future__ import annotations

import json
from pathlib import Path

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run import events
from curlora.run.store import STUDY_FILE
from curlora.run.study import StudySettings, parse_grid, parse_replays, parse_seeds, resume_study, run_study


def register(sub) -> None:
    p = sub.add_parser("study", help="each method over a grid of learning rates and seeds: the learning-forgetting "
                                     "frontier, with intervals")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", nargs="?")
    p.add_argument("--lrs", action="append", default=[], metavar="METHOD=LR,LR,…",
                   help="a method's learning-rate grid (repeat per method); default: the method's prior")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--replays", default=None, metavar="SHARE,…",
                   help="experience replay as an axis: each trained method also runs at these replay shares, as "
                        "'<method>-replay<percent>' (e.g. 0.1,0.25)")
    p.add_argument("--kl-budget", type=float, default=None,
                   help="pick each method's best lr as the highest learning with mean KL to base within this")
    p.add_argument("--margin", type=float, default=None,
                   help="the equivalence margin of the verdict, in points of forgetting (default 3)")
    p.add_argument("--permutations", type=int, default=None,
                   help="task orders as an axis: the experiment's order and K-1 seeded shuffles of it")
    p.add_argument("--executor", choices=("auto", "local", "ray"), default="auto",
                   help="local: runs one after another here; ray: spread over a Ray cluster (RAY_ADDRESS, else a "
                        "local instance; one GPU per run where there are GPUs); auto (default): ray when RAY_ADDRESS "
                        "is set or several GPUs are visible and ray is installed, else local")
    p.add_argument("--resume", metavar="STUDY_ID", default=None, help="continue a stopped or killed study")
    p.add_argument("--analyse", metavar="STUDY_JSON", default=None,
                   help="train nothing: recompute this stored study.json's analysis (verdicts, Holm, probes) with "
                        "today's code; --margin and --kl-budget re-decide it")
    p.add_argument("--with", dest="together", action="append", default=[], metavar="STUDY",
                   help="with --analyse: analyse this study (its folder or study.json, in a run store) together "
                        "with the first, as one study of the union of their grids, seeds and runs (repeat for more); "
                        "they must share the model, tasks, training and evaluation")
    p.add_argument("--write", metavar="OUT.json", default=None, help="with --analyse: write the new study.json here")
    p.add_argument("--tasks", default=None, metavar="TASK,…",
                   help="with --analyse: the tasks in training order, for a study.json that does not store them")
    p.add_argument("--matrices", default=None, metavar="MATRICES.json",
                   help="with --analyse: every run's accuracy matrix (bench/forgetting_frontier.py matrices), for "
                        "forgetting over the learned tasks where the runs are not here")
    p.add_argument("--pack", nargs=2, metavar=("STUDY_ID", "DIR"), default=None,
                   help="train nothing: copy the study's data (study.json, every finished run's metrics; no weights) "
                        "into DIR, to commit or to resume on another machine")
    p.add_argument("--unpack", metavar="DIR", default=None,
                   help="train nothing: put a packed study into the run store, ready for --resume")
    p.add_argument("--share", action="store_true",
                   help="with --unpack: make the unpacked study a shared, read-only example, so that on a hosted app "
                        "every visitor can read it in the Compare tab (`python -m curlora share --off ID` undoes it)")
    p.add_argument("--progress", metavar="STUDY_ID", default=None,
                   help="train nothing: how many of the study's runs are finished and about how long the rest take, "
                        "at each method's median minutes per finished run (--json: the record)")
    p.add_argument("--dry-run", action="store_true",
                   help="train nothing: estimate the study's time on this machine from a short calibration of each "
                        "method, priced over its plan (learning rates × seeds × task orders)")
    p.add_argument("--json", action="store_true", help="with --progress or --dry-run: print the record as JSON")
    p.set_defaults(func=cmd_study)


def _printer():
    def on_event(e):
        if e.get("kind") == events.RUN_END:
            print(f"  run {e['status']}: {e['message']}", flush=True)
        elif e.get("kind") == events.ERROR:
            print(f"error: {e.get('message', '')}", flush=True)
    return on_event


def analyse_stored(args) -> int:
    """--analyse: a stored study.json analysed again; its runs are read where they are beside its folder."""
    from curlora.measure.study_analysis import reanalyse
    from curlora.measure.study_record import StudyRecord
    from curlora.run.store import Run, Study

    path = Path(args.analyse)
    if path.is_dir():
        path = path / STUDY_FILE
    try:
        rec = StudyRecord.of(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise CurloraError(f"study --analyse: cannot read {path} ({err}).") from None
    if not rec:
        raise CurloraError(f"study --analyse: {path} holds no study (no plan, no grid).")
    if args.margin is not None:
        rec.settings.margin = args.margin
    if args.kl_budget is not None:
        rec.settings.kl_budget = args.kl_budget
    root = path.resolve().parent.parent

    def metrics_of(run_id):
        try:
            return Run.open(run_id, root).record()
        except (CurloraError, OSError, ValueError):
            return None

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if not tasks and not rec.tasks:
        try:
            folder = Run.open(path.resolve().parent.name, root)
            tasks = [t.name for t in folder.config().tasks] if isinstance(folder, Study) else None
        except CurloraError:
            tasks = None
    matrices = None
    if args.matrices:
        runs = json.loads(Path(args.matrices).read_text(encoding="utf-8")).get("runs", [])
        matrices = {r["run_id"]: r["matrix"] for r in runs if r.get("run_id")}
    new = reanalyse(rec, tasks, metrics_of, matrices, source=str(args.analyse))
    if args.write:
        Path(args.write).write_text(json.dumps(new.to_json(), indent=1, default=float) + "\n", encoding="utf-8")
    r = new.reanalysis
    print(f"{path}: analysed again, nothing trained ({r.remeasured} points measured from their runs, {r.stored} "
          f"as stored)" + (f"; wrote {args.write}" if args.write else ""))
    print_analysis(new)
    for lack in r.not_recomputed:
        print(f"not recomputed: {lack}")
    return 0


def stored_study(value: str):
    """A study of a run store from its folder or its study.json (--analyse, --with)."""
    from curlora.run.store import Run, Study

    path = Path(value)
    folder = path.parent if path.name == STUDY_FILE else path
    try:
        study = Run.open(folder.resolve().name, folder.resolve().parent)
    except CurloraError:
        study = None
    if not isinstance(study, Study):
        raise CurloraError(f"study --analyse/--with: {value} is not a study's folder in a run store (its runs "
                           "beside it); `python -m curlora list` shows the studies of this store.")
    return study


def analyse_together(path: Path, args) -> int:
    """--analyse … --with …: the studies analysed as one (curlora/run/study_data.py together)."""
    from curlora.run import study_data

    studies = [stored_study(str(path))] + [stored_study(v) for v in args.together]
    new = study_data.together(studies, margin=args.margin, kl_budget=args.kl_budget)
    if args.write:
        Path(args.write).write_text(json.dumps(new.to_json(), indent=1, default=float) + "\n", encoding="utf-8")
    print(f"{len(studies)} studies analysed together, nothing trained ({', '.join(s.id for s in studies)}: "
          f"{len(new.points)} finished runs)" + (f"; wrote {args.write}" if args.write else ""))
    print_analysis(new)
    return 0


def print_analysis(new) -> None:
    """Every verdict, test and probe of an analysed study, one line each."""
    from curlora.measure.study_analysis import within_text

    for family, comparisons, named in new.families():
        for c in comparisons:
            by = f" by {c.measure}" if named else ""
            print(f"{family}: {' vs '.join(c.methods)}{by}: {c.verdict or 'not compared'}. {c.sentence}")
    for t in new.against_base:
        print(f"against the base, {t.key} by {t.measure}: {t.verdict}. {t.sentence}")
    for t in new.at_chosen:
        print(f"each at its chosen rate, {' vs '.join(t.keys)} by {t.measure}: {t.verdict}. {t.sentence}")
    for t in new.probes + new.probes_known:
        what = "forgetting" if t.target == "forgetting" else "forgetting of what each run knew"
        print(f"probe {t.probe}: Spearman ρ with {what} " +
              (f"{t.rho:.2f}" + (f" [{t.ci95[0]:.2f}, {t.ci95[1]:.2f}]" if t.ci95 else "") if t.rho is not None
               else "n/a") + f" over {t.n} runs"
              + (f", Holm-adjusted p {t.p_adjusted:.2g}" if t.p_adjusted is not None else "")
              + (" — tracks it" if t.tracks else "") + within_text(t))
    for warning in new.warnings:
        print(f"warning: {warning}")


def cmd_study(args) -> int:
    from curlora.cli.runs import admit, with_signals

    if args.dry_run and (args.resume or args.analyse or args.pack or args.unpack or args.progress
                         or not args.experiment):
        raise CurloraError("--dry-run estimates a study before it starts: give EXPERIMENT.yaml alone (for a study "
                           "that runs already: --progress STUDY_ID).")
    if getattr(args, "share", False) and not args.unpack:
        raise CurloraError("--share makes an unpacked study a shared example: give it with --unpack DIR (for a run "
                           "or study already in the store: `python -m curlora share ID`).")
    if args.together and not args.analyse:
        raise CurloraError("--with analyses studies together: give the first with --analyse STUDY, e.g. "
                           "`python -m curlora study --analyse STUDY --with OTHER`.")
    if args.analyse:  # with --with, the studies are read from the store, not the study.json alone
        return analyse_together(Path(args.analyse), args) if args.together else analyse_stored(args)
    if args.progress:
        from curlora.run.store import Run, Study
        from curlora.run.study_data import progress

        study = Run.open(args.progress)
        if not isinstance(study, Study):
            raise CurloraError(f"{args.progress} is a run, not a study; `python -m curlora list` shows the studies.")
        p = progress(study)
        print(json.dumps(p.to_json(), indent=1) if args.json else f"study {study.id} ({p.status}): {p.sentence()}")
        return 0
    if args.pack or args.unpack:
        from curlora.run import study_data

        if args.pack:
            meta = study_data.pack(args.pack[0], Path(args.pack[1]))
            print(f"study {meta['study']}: packed into {args.pack[1]} ({meta['points']} finished runs, "
                  f"{meta['pending']} still to run)")
        else:
            done = study_data.unpack(Path(args.unpack))
            print(done.sentence())
            for m in done.moved:
                print(f"  {m.sentence()}")
            if args.share:
                from curlora.serve.hosting import share

                share(done.study.path)
                print(f"study {done.study.id} is a shared, read-only example: hosted, every visitor can read it")
        return 0
    if args.resume:
        study = with_signals(lambda stop: resume_study(args.resume, should_stop=stop, on_event=_printer(),
                                                          executor=args.executor))
    else:
        if not args.experiment:
            raise CurloraError("study: give EXPERIMENT.yaml, or --resume STUDY_ID.")
        sections = {"study": None}
        cfg = ExperimentConfig.load(args.experiment, sections)
        settings = StudySettings.from_dict(sections["study"])
        if args.lrs:
            settings.lrs.update(parse_grid(args.lrs))
        if args.seeds:
            settings.seeds = parse_seeds(args.seeds)
        if args.replays:
            settings.replays = parse_replays(args.replays)
        if args.kl_budget is not None:
            settings.kl_budget = args.kl_budget
        if args.margin is not None:
            settings.margin = args.margin
        if args.permutations is not None:
            settings.permutations, settings.orders = args.permutations, None
        admit(cfg)
        if args.dry_run:
            from curlora.run.cost import estimate_study

            est = estimate_study(cfg, settings)
            print(json.dumps(est.to_json()) if args.json else est.text(), flush=True)
            return 0
        study = with_signals(lambda stop: run_study(cfg, settings, should_stop=stop, on_event=_printer(),
                                                       executor=args.executor))
    rec = study.study_record()
    print(f"study {study.id}: {study.path / STUDY_FILE} ({study.status()['status']})")
    for label, best in rec.best.items():
        if best:
            g = rec.groups[best.key]
            test = g.learning_test.mean
            learning = f"learning {test:.1f} pts on test rows" if test is not None else \
                f"learning {g.learning.mean:.1f} pts"
            print(f"{label}: best lr {best.lr:g} ({best.chosen}) — {learning}, forgetting "
                  f"{g.forgetting.mean:.1f} pts, KL {g.kl_to_base.mean or 0:.4f} (n={g.learning.n})")
    for warning in rec.warnings:
        print(f"warning: {warning}")
    for o in rec.order_effect:
        print(f"{o.method} in order {o.order + 1} ({', '.join(o.tasks)}): learning {o.learning.mean:.1f} pts, "
              f"forgetting {o.forgetting.mean if o.forgetting.mean is not None else float('nan'):.1f} pts "
              f"(n={o.learning.n})")
    for c in rec.comparison:
        print(f"{' vs '.join(c.methods)}: {c.verdict or 'not compared'}. {c.sentence}")
    return 0 if study.status()["status"] == "completed" else 1
