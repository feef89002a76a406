"""CLI over the run store: `run`, `resume`, `list`, `show`, `cancel`, `export` — the same engine the app uses."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

from curlora.errors import CurloraError
from curlora.run import events as ev
from curlora.run.store import Run, data_dir, list_runs, resumable
from curlora.share.export import copy_finished_adapters, export_merged, metrics_csv, table


def register(sub) -> None:
    p = sub.add_parser("run", help="run an experiment YAML (see presets/experiments/)")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="load everything and estimate the run's time on this machine from a short calibration (a "
                        "few training steps per method, a few scoring rows per task); writes nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the estimate as JSON")
    remote_code_flag(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("resume", help="continue an interrupted or cancelled run from its last finished stage")
    p.add_argument("run_id")
    remote_code_flag(p)
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("share", help="make a run a shared example: when the app is hosted every visitor can read, "
                                     "export and chat with it, and nobody can change it (--off: yours again)")
    p.add_argument("run_id")
    p.add_argument("--off", action="store_true", help="stop sharing it (it belongs to the local user again)")
    p.set_defaults(func=cmd_share)
    p = sub.add_parser("list", help="runs in the data directory ($CURLORA_DATA_DIR, default ./runs)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="accuracy matrices and metrics of a run")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", help="ask a running run to stop after its current step")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("eval", help="score a stage of a run on a new task CSV, or its perplexity on a text file")
    p.add_argument("run_id")
    p.add_argument("--method", required=True, help="method label as in `show` (e.g. curlora, lora)")
    p.add_argument("--stage", type=int, required=True, help="0 = the base model, k = after the k-th task")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--task", metavar="FILE.csv", help="a task CSV (columns detected as in check-data)")
    g.add_argument("--text", metavar="FILE.txt", help="a text file for perplexity")
    p.add_argument("--label-words", metavar="V=WORD", nargs="*", default=[],
                   help="verbalizers for --task, e.g. 0=negative 1=positive")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("export", help="metrics CSV/JSON, a Markdown table and the adapters of a run, into a folder; "
                                      "--tensorboard: its curves and numbers as TensorBoard event files")
    p.add_argument("run_id")
    p.add_argument("--out", help="folder to write (must not exist yet)")
    p.add_argument("--merged", action="store_true",
                   help="also write each adapter method's final stage merged into the base: a plain transformers model")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write the run's training curves and stored numbers as TensorBoard event files under DIR/<run "
                        "id> (each run of a study under DIR/<study id>/); `tensorboard --logdir DIR` shows them")
    p.add_argument("--method", help="with --lora or --gguf: the method label as in `show` (e.g. curlora, lora)")
    p.add_argument("--stage", type=int, help="with --lora or --gguf: the stage, k = after the k-th task (--gguf: 0 = "
                                             "the base model)")
    p.add_argument("--lora", metavar="DIR",
                   help="write the stage as a plain PEFT LoRA folder (a CURLoRA stage converted exactly: B = α·C·U, "
                        "A = R), for PEFT, vLLM --lora-modules, TGI; DIR must not exist")
    p.add_argument("--gguf", metavar="FILE",
                   help="write the stage merged into the base as one GGUF file for llama.cpp, Ollama, LM Studio "
                        "(Llama-family bases); FILE must not exist")
    p.add_argument("--gguf-type", choices=["f16", "q8_0"], default="f16",
                   help="the GGUF's matrix type: f16 (default) or q8_0 (half the size, 8-bit blocks)")
    p.set_defaults(func=cmd_export)


def remote_code_flag(p) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model.trust_remote_code: true in the config (runs the model's own Python code; a "
                        "config alone can never turn it on)")


def _allow_remote_code(args) -> None:
    if getattr(args, "trust_remote_code", False):
        from curlora.models.remote_code import allow_remote_code

        allow_remote_code()


def admit(cfg):
    """The CLI's admission of a new run's config, the app's one path (curlora/serve/hosting.py Policy.local():
    sources resolved, remote code refused without --trust-remote-code, trackers installed); no torch yet."""
    from curlora.run.store import data_dir
    from curlora.serve.hosting import Policy

    Policy.local().admit(cfg, data_dir(), None)
    return cfg


def cmd_share(args) -> int:
    from curlora.serve.hosting import share, unshare

    run = Run.open(args.run_id)
    if args.off:  # back to whoever owned it before it was shared, not to the local user
        unshare(run.path)
    else:
        share(run.path)
    print(f"run {run.id} is {'no longer shared: its owner has it again' if args.off else 'a shared, read-only example'}")
    return 0


def _progress():
    """A one-line-per-event printer for the terminal (tqdm would fight the event lines on 2-core CI logs)."""
    def on_event(e):
        kind = e.get("kind")
        if kind == ev.STAGE:
            acc = " ".join("-" if a is None else f"{a:.3f}" for a in e["accuracy"])
            print(f"[{e['method']} stage {e['stage']}] accuracy {acc} | ppl {e['ppl']:.2f}", flush=True)
        elif kind == ev.STEP and (e["step"] % 25 == 0 or e["step"] == e["steps"]):
            print(f"  {e['method']} task {e['task']} step {e['step']}/{e['steps']} loss {e['loss']:.4f}", flush=True)
        elif kind in (ev.ERROR, ev.RUN_END):
            print(f"{kind}: {e.get('message', '')}", flush=True)
    return on_event


def with_signals(fn):
    """SIGINT/SIGTERM ask the runner to stop after the current step, like Stop in the app."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True
        print("stopping after the current step…", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return fn(lambda: flag["stop"])
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_run(args) -> int:
    from curlora.experiment import ExperimentConfig

    _allow_remote_code(args)
    cfg = admit(ExperimentConfig.load(args.experiment))
    from curlora.run.runner import execute, load_everything, start  # torch: only once the config is sound

    if args.dry_run:
        import time

        from curlora.run.cost import estimate

        began = time.perf_counter()
        loaded = load_everything(cfg)
        est = estimate(cfg, loaded, load_s=time.perf_counter() - began)
        print(json.dumps(est.to_json()) if args.json else est.text(), flush=True)
        return 0
    run, loaded = start(cfg)
    print(f"run {run.id} in {run.path}", flush=True)
    status = with_signals(lambda stop: execute(run, cfg, loaded, should_stop=stop, on_event=_progress()))
    print(table(run))
    return 0 if status == "completed" else 3


def cmd_resume(args) -> int:
    _allow_remote_code(args)
    resumable(args.run_id)  # a wrong id or a completed run is refused before torch is imported
    from curlora.run.runner import resume

    run = with_signals(lambda stop: resume(args.run_id, should_stop=stop, on_event=_progress()))
    print(table(run))
    return 0 if run.status()["status"] == "completed" else 3


def cmd_list(args) -> int:
    runs = list_runs()
    if not runs:
        print(f"no runs in {data_dir()}")
        return 0
    for run in runs:
        st, o = run.status(), run.outline()
        print(f"{run.id}  {st['status']:<11s}  tasks: {', '.join(o.tasks) or '–'}  methods: "
              f"{', '.join(o.methods) or '–'}  done: {o.progress}")
        for problem in run.problems():
            print(f"    damaged: {problem}")
    return 0


def cmd_show(args) -> int:
    print(table(Run.open(args.run_id)))
    return 0


def cmd_cancel(args) -> int:
    Run.open(args.run_id).request_cancel()
    print("cancel requested; the run stops after its current step")
    return 0


def cmd_eval(args) -> int:
    from curlora.run.evaluate import evaluate_stage

    verbalizers = {}
    for item in args.label_words:
        if "=" not in item:
            raise CurloraError(f"--label-words takes VALUE=WORD pairs, got {item!r}.")
        k, v = item.split("=", 1)
        verbalizers[k] = v
    from curlora.serve.hosting import Policy

    result = evaluate_stage(args.run_id, args.method, args.stage, task_file=args.task, text_file=args.text,
                            verbalizers=verbalizers or None, limits=Policy.detect().limits)  # the environment's
    print(json.dumps(result, indent=1))
    return 0


def _export_stage(run: Run, args) -> None:
    """--lora DIR and --gguf FILE: one stage of one method, in the formats people serve."""
    if args.method is None or args.stage is None:
        raise CurloraError("export --lora / --gguf needs --method M and --stage K (the stage after the k-th task).")
    from curlora.share.export_lora import check_destination

    for dest in filter(None, (args.lora, args.gguf)):  # both refused before either is written
        check_destination(Path(dest))
    if args.lora:
        from curlora.share.export_lora import export_lora

        res = export_lora(run, args.method, args.stage, Path(args.lora))
        how = "converted from CURLoRA exactly" if res["converted"] else f"the {res['kind']} stage as saved"
        print(f"LoRA adapter (rank {res['r']}, {how}) in {res['path']}: "
              "PeftModel.from_pretrained(base, DIR) or vLLM --lora-modules NAME=DIR")
    if args.gguf:
        from curlora.share.export_gguf import export_gguf

        res = export_gguf(run, args.method, args.stage, Path(args.gguf), args.gguf_type)
        print(f"GGUF ({res['type'].upper()}, {res['bytes'] / 2**20:.1f} MiB) in {res['path']}: "
              f"llama-cli -m {res['path']}, or an Ollama Modelfile with FROM ./{Path(res['path']).name}")


def cmd_export(args) -> int:
    run = Run.open(args.run_id)
    stage_export = bool(args.lora or args.gguf)
    if not stage_export and (args.method is not None or args.stage is not None):
        raise CurloraError("--method and --stage choose the stage for --lora DIR or --gguf FILE; add one of them.")
    if not args.out and not args.tensorboard and not stage_export:
        raise CurloraError("export needs --out FOLDER (files and adapters), --tensorboard DIR (event files), or "
                           "--lora DIR / --gguf FILE with --method and --stage.")
    if stage_export:
        _export_stage(run, args)
        if not args.out and not args.tensorboard:
            return 0
    if args.tensorboard:
        from curlora.run.trackers import export_tensorboard

        for folder in export_tensorboard(run, Path(args.tensorboard)):
            print(f"TensorBoard event files of {folder.name} in {folder}")
        if not args.out:
            return 0
    out = Path(args.out)
    if out.exists():
        raise CurloraError(f"{out} already exists; choose a new folder for the export.")
    m, st = run.record(), run.status()
    if st["status"] == "damaged":
        raise CurloraError(f"Run {run.id} is damaged ({st['message']}).")
    if not m:
        raise CurloraError(f"Run {run.id} has no finished stage to export yet.")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "metrics.json").write_text(json.dumps(run.metrics(), indent=1) + "\n")  # as stored
    (tmp / "metrics.csv").write_text(metrics_csv(m))
    (tmp / "results.md").write_text(table(run) + "\n")
    (tmp / "config.yaml").write_text(run.config_yaml, encoding="utf-8")  # as the app's download writes it
    copy_finished_adapters(run, m, tmp / "adapters")
    if getattr(args, "merged", False):
        try:
            export_merged(run, m, tmp / "merged")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    tmp.rename(out)
    print(f"exported {run.id} to {out}")
    return 0
