"""Results tab: any run's summary table (ACC with the final training loss, BWT, FWT, forgetting, perplexity,
parameters, time, memory), a matched-loss run's targets, its charts, exports built by the engine's export functions
(curlora/share/export.py), so the app and `curlora export` agree, one stage as a PEFT LoRA folder or a merged GGUF
file (curlora/share/export_lora.py, export_gguf.py: the engine behind `curlora export --lora / --gguf`), any finished stage evaluated on a new CSV or
text (curlora/run/evaluate.py, the engine behind `curlora eval`), and the run pushed to the Hugging Face hub
(curlora/share/hub.py, the engine behind `curlora push`)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from curlora.errors import Cancelled, CurloraError
from curlora.measure.record import RunMetrics
from curlora.methods.registry import described, method, setting_text
from curlora.run.evaluate import evaluate_stage
from curlora.run.store import Run
from curlora.serve.downloads import export_file, export_stage_file
from curlora.share.export import FWT_LABEL, STAGE_FORMATS, table
from curlora.share.hub import push
from curlora.ui import live
from curlora.ui.charts import SAME
from curlora.ui.common import Engine, friendly, stage_slider, wait_for_device

SUMMARY_HEADERS = ["method", "setting", "ACC %", "final loss per task", "BWT", FWT_LABEL, "forgetting",
                   "plasticity %", "ppl base → final", "self-ppl base → final", "KL to base", "weight drift",
                   "trainable", "train s", "peak memory", "status"]


def _pct(v, signed=False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def final_losses(rec) -> str:
    """Each trained task's final training loss, in task order: 'a 0.412 · b 0.377' (– for a stage not stored)."""
    parts = [f"{t.task} {'–' if t.final_loss is None else f'{t.final_loss:.3f}'}".strip() for t in rec.train]
    return " · ".join(parts) or "–"


def summary_rows(m: RunMetrics) -> list[list]:
    """The stored numbers, formatted (metrics.json's `summary`, computed by curlora.measure.metrics). The method
    column keeps the bare label (what the API and exports key on); the setting stands beside it."""
    rows = []
    base_ppl = m.base.ppl if m.base else None
    for label, rec in m.methods.items():
        s = rec.summary or {}
        self_ppl = [x for x in rec.self_ppl if x is not None]
        drift = rec.last("drift")
        mem = rec.peak_memory_bytes
        rows.append([label, setting_text(rec.setting) or "–", _pct(s.get("acc")), final_losses(rec),
                     _pct(s.get("bwt"), True), _pct(s.get("fwt"), True),
                     _pct(s.get("forgetting"), True), _pct(s.get("plasticity")),
                     f"{base_ppl:.2f} → {rec.ppl[-1]:.2f}" if base_ppl and rec.ppl and rec.ppl[-1] is not None
                     else "–",
                     f"{self_ppl[0]:.2f} → {self_ppl[-1]:.2f}" if self_ppl else "–",
                     f"{rec.last('kl_to_base'):.4f}" if rec.last("kl_to_base") is not None else "–",
                     f"{drift['total']:.4f}" if drift and drift.get("total") is not None else "–",
                     f"{rec.trainable:,}", f"{rec.seconds:.0f}", f"{mem / 2**20:.0f} MiB" if mem else "–",
                     rec.status])
    return rows


def missed_targets(m: RunMetrics) -> list[str]:
    """One banner sentence per method that missed its target loss on some task of a matched-loss run."""
    if m.comparison != "matched_loss":
        return []
    out = []
    for label, rec in m.methods.items():
        aimed, missed = rec.targets()
        if missed:
            out.append(f"{described(label, rec.setting)} missed its target loss on {len(missed)} of {len(aimed)} "
                       f"tasks: this is not a matched comparison there ({', '.join(t.task for t in missed)}).")
    return out


def matched_loss_md(m: RunMetrics) -> str:
    """Matched-loss runs: target / reached / steps / final loss per method and task (TrainRecord); empty for an
    equal-lr run. The missed-target warning is `banner`."""
    if m.comparison != "matched_loss":
        return ""
    lines = ["**Matched loss:** each method trains each task until its smoothed loss reaches the target (or the "
             "step limit).", "",
             "| method | task | target loss | reached | steps | final loss |", "|---|---|---|---|---|---|"]
    for label, rec in m.methods.items():
        for t in rec.train:
            reached = "–" if t.reached is None else ("yes" if t.reached else "**no**")
            lines.append(f"| {described(label, rec.setting)} | {t.task} | "
                         f"{'–' if t.target_loss is None else f'{t.target_loss:.3f}'} | {reached} | {t.steps:,} | "
                         f"{'–' if t.final_loss is None else f'{t.final_loss:.3f}'} |")
    return "\n".join(lines)


def banner(m: RunMetrics) -> str:
    """The warning a matched-loss run shows first when a method missed its target (empty otherwise)."""
    return "\n\n".join(f"> ⚠️ **{s}**" for s in missed_targets(m))


def notes(m: RunMetrics) -> str:
    if not m:
        return ""
    maj = ", ".join(f"{t} {_pct(a)}%" for t, a in zip(m.tasks, m.majority))
    probe = m.probe or {}
    source = Path(probe["source"]).name if probe.get("source") else "–"
    methods = " · ".join(described(label, rec.setting) for label, rec in m.methods.items())
    text = (f"**Methods:** {methods or '–'} · **Scoring:** {m.scoring} · "
            f"**Forgetting:** {m.forgetting_definition} · "
            f"**BWT** negative = forgot, **{FWT_LABEL}** = gain on a task before training it (points) · "
            f"**Majority-class accuracy:** {maj} · **Perplexity probe:** {source}, "
            f"{probe.get('tokens') or 0:,} tokens, window {probe.get('window', '–')} (a probe outside the model's "
            f"own domain can read better than the base while the model drifts) · **self-ppl / KL:** on "
            f"text sampled from the base model itself (the in-domain drift measure); "
            f"**weight drift:** ‖ΔW‖/‖W‖ over adapted matrices · "
            f"**Accuracy heatmaps:** hover for n and the 95 % interval; "
            f"{SAME} marks a cell whose interval contains the majority-class share or the base model's accuracy"
            + "".join(f"\n\n- {v['verdict']}" for v in m.learnability if v.get("verdict")))
    matched, warn = matched_loss_md(m), banner(m)
    return (warn + "\n\n" if warn else "") + text + ("\n\n" + matched if matched else "")


def stage_choices(run: Run, evaluate: bool = False) -> tuple[list[str], int]:
    """(methods with an adapter to export or push, number of tasks) of a run, from its config; `evaluate`: the
    methods whose stages can be evaluated on new data instead (every kind whose stages keep weights, full too)."""
    cfg = run.config()
    return [m.label for m in cfg.methods if (method(m.kind).loads_stage if evaluate else method(m.kind).has_adapter)], \
        len(cfg.tasks)


def describe_evaluation(res: dict) -> str:
    who = "the base model" if res["stage"] == 0 else f"**{res['method']}** after task {res['stage']}"
    if "accuracy" in res:
        return (f"{who} on **{res['task']}**: accuracy **{100 * res['accuracy']:.1f} %** over {res['n']:,} rows "
                f"({res['mode']} scoring; every row of the file is scored).")
    return (f"{who} on **{Path(res['text']).name}**: perplexity **{res['ppl']:.2f}** over {res['tokens']:,} tokens "
            f"(strided window; lower is better).")


def build(engine: Engine) -> dict:
    jobs = engine.jobs

    @friendly
    def pick(rid: str, request: gr.Request):
        """The evaluation controls for this run: its methods whose stages keep weights and its stages (0 = the base
        model)."""
        if not rid:
            return gr.update(choices=[], value=None), gr.update()
        labels, n = stage_choices(jobs.open(rid, engine.owner(request)), evaluate=True)
        return (gr.update(choices=labels, value=labels[0] if labels else None),
                stage_slider(n, low=0))

    @friendly
    def pick_stage(rid: str, request: gr.Request):
        """The stage export's controls for this run: its adapter methods and stages 1..n."""
        if not rid:
            return gr.update(choices=[], value=None), gr.update()
        labels, n = stage_choices(jobs.open(rid, engine.owner(request)))
        return (gr.update(choices=labels, value=labels[0] if labels else None),
                stage_slider(max(n, 1)))

    stopping: set[str] = set()  # owners who pressed Stop on their evaluation

    def stop_evaluation(request: gr.Request):
        stopping.add(engine.owner(request))
        gr.Info("Stopping the evaluation after its current batch.")

    @friendly
    def evaluate(rid: str, method: str, stage, upload, request: gr.Request, progress=gr.Progress()):
        """A finished stage (or the base, stage 0) on an uploaded task CSV (accuracy) or .txt (perplexity)."""
        if not rid:
            raise CurloraError("Pick a run first.")
        if not upload:
            raise CurloraError("Upload a task CSV (for accuracy) or a .txt file (for perplexity) to evaluate on.")
        stage = int(stage or 0)
        if stage > 0 and not method:
            raise CurloraError("This run has no method whose stages keep weights (CURLoRA, LoRA, full, …) to "
                               "evaluate; pick stage 0 for the base model.")
        path = upload if isinstance(upload, str) else upload.name
        as_text = Path(path).suffix.lower() == ".txt"
        run = jobs.open(rid, engine.owner(request))
        cfg = run.config()
        engine.allow_device(request)
        yield from wait_for_device(jobs.gate, "an evaluation", 1)
        try:
            what = "the base model" if stage == 0 else f"{method} after task {stage}"
            progress(0.2, desc=f"evaluating {what}")
            yield f"Evaluating {what}…"
            owner = engine.owner(request)
            stopping.discard(owner)
            limits = jobs.policy.limits  # the host's; locally the local ones (CURLORA_LIMIT_<NAME> may set them)
            with engine.chat.lock:  # the chat's copy of the base model: loaded once, shared, adapters detached after
                res = jobs.gate.on_device(lambda: evaluate_stage(
                    rid, method or "base", stage, task_file=None if as_text else path,
                    text_file=path if as_text else None, root=jobs.root, loaded_model=engine.chat.base(cfg),
                    limits=limits, should_stop=lambda: owner in stopping,
                    on_progress=lambda done, total: progress(min(1.0, done / total) if total else 0.5, desc=f"evaluating {what}")))
        except Cancelled:
            yield f"Stopped: the evaluation of {what} was stopped before it finished; nothing was kept."
            return
        finally:
            jobs.gate.release()
        yield describe_evaluation(res)

    @friendly
    def show(rid: str, request: gr.Request):
        if not rid:
            return ("_Pick a run._", [], "", *live.figures(RunMetrics(), []))
        owner = engine.owner(request)
        status, metrics, events = live.snapshot(jobs, rid, owner)
        head = live.progress_html(rid, status, metrics, events)
        return (head + "\n\n" + notes(metrics), summary_rows(metrics), table(jobs.open(rid, owner)),
                *live.figures(metrics, events))

    @friendly
    def refresh(current: str, request: gr.Request):
        ids = engine.run_ids(request)
        return gr.update(choices=ids, value=current if current in ids else (ids[0] if ids else None))

    def exporter(what):
        @friendly
        def handler(rid: str, request: gr.Request, progress=gr.Progress()):
            if not rid:
                raise CurloraError("Pick a run first.")
            owner = engine.owner(request)
            if what != "merged.zip":
                progress(0.5, desc=f"writing {what}")
                return export_file(jobs, rid, what, owner)
            jobs.open(rid, owner)  # before waiting for the device
            engine.allow_device(request)
            progress(0.05, desc="waiting for the device")
            with jobs.gate.hold("a merged-model export"):  # loads and merges a full model
                progress(0.2, desc="merging each method's last stage into the base model")
                return export_file(jobs, rid, what, owner)
        return handler

    @friendly
    def export_stage(rid: str, label: str, stage, fmt: str, request: gr.Request, progress=gr.Progress()):
        """One stage of one method as a PEFT LoRA zip or a merged GGUF file (curlora/share/export.py)."""
        if not rid:
            raise CurloraError("Pick a run first.")
        if not label:
            raise CurloraError("This run has no method with an adapter to export; pick a run with CURLoRA or LoRA.")
        owner = engine.owner(request)
        jobs.open(rid, owner)  # before waiting for the device
        engine.allow_device(request)
        progress(0.05, desc="waiting for the device")
        with jobs.gate.hold("a stage export"):  # loads the base model (and merges, for GGUF)
            progress(0.2, desc=f"writing {label} after task {int(stage or 0)} as {STAGE_FORMATS.get(fmt, fmt)}")
            return export_stage_file(jobs, rid, label, int(stage or 0), fmt, owner)

    @friendly
    def push_run(rid: str, repo: str, only: str | None, merged: bool, private: bool, request: gr.Request,
                 oauth: gr.OAuthToken | None = None, progress=gr.Progress()):
        """The run to one hub repo (curlora/share/hub.py): its adapters, the model card, its numbers."""
        if not rid:
            raise CurloraError("Pick a run first.")
        run = jobs.open(rid, engine.owner(request))
        token = getattr(oauth, "token", None)
        if engine.hosted and not token:  # never the server's own token for a visitor
            raise CurloraError("Sign in with Hugging Face first (the button at the top of the page): a push goes to "
                               "your own account with your own token.")
        config, public = None, None
        if engine.hosted:  # the visitor's config and numbers without the server's paths
            config = jobs.policy.public_yaml(run.config(), jobs.root)
            public = lambda path: jobs.policy.public_path(path, jobs.root)  # noqa: E731

        def report(fraction: float, text: str) -> None:
            progress(fraction, desc=text)

        def send() -> str:
            return push(run, repo, only=only or None, merged=bool(merged), token=token, private=bool(private),
                        config_yaml=config, progress=report, public_path=public)

        if merged:
            engine.allow_device(request)
            report(0.02, "waiting for the device")
            with jobs.gate.hold("a push with merged models"):  # loads and merges a full model
                url = send()
        else:
            url = send()
        return f"Pushed run `{rid}` to [{url}]({url})."

    @friendly
    def push_choices(rid: str, request: gr.Request):
        if not rid:
            return gr.update(choices=[], value=None)
        labels, _ = stage_choices(jobs.open(rid, engine.owner(request)))
        return gr.update(choices=[""] + labels, value="")

    with gr.Row():
        run = gr.Dropdown([], label="Run", allow_custom_value=True, scale=4, elem_id="results-run")
        reload = gr.Button("Refresh", scale=1)
    header = gr.Markdown()
    summary = gr.Dataframe(headers=SUMMARY_HEADERS, value=[], interactive=False, label="Summary per method",
                           elem_id="results-summary")
    with gr.Row():
        loss_plot, ppl_plot = gr.Plot(label="Loss"), gr.Plot(label="Perplexity and KL to base")
    heatmap = gr.Plot(label="Accuracy")
    forget_plot = gr.Plot(label="Forgetting")
    with gr.Accordion("Accuracy matrices as text (also the Markdown export)", open=False):
        text = gr.Textbox(lines=14, show_label=False, elem_id="results-text")
    with gr.Row():
        files = gr.File(label="Export", scale=2, height=90)
        with gr.Column(scale=3):
            with gr.Row():
                buttons = {what: gr.Button(label, size="sm") for what, label in
                           [("metrics.csv", "Metrics CSV"), ("metrics.json", "Metrics JSON"),
                            ("results.md", "Markdown table"), ("adapters.zip", "Adapters (zip)"),
                            ("merged.zip", "Merged models (zip)")]}
            gr.Markdown("Merged models: each method's last finished stage folded into a copy of the base model "
                        "(full model size; loads with `AutoModelForCausalLM.from_pretrained`).")
    with gr.Accordion("Export a stage to serve it (PEFT LoRA, GGUF)", open=False, elem_id="results-serve"):
        gr.Markdown("**PEFT LoRA**: a zip of `adapter_config.json` + `adapter_model.safetensors` that "
                    "`PeftModel.from_pretrained(base, folder)` and vLLM (`--enable-lora --lora-modules name=folder`) "
                    "load without this app; a CURLoRA stage is converted exactly (B = α·C·U, A = R). **GGUF**: the "
                    "stage merged into the base as one file for llama.cpp (`llama-cli -m file.gguf`), Ollama "
                    "(`FROM ./file.gguf` in a Modelfile) and LM Studio; Llama-family bases only. Q8_0 is about half "
                    "of F16's size, with a slightly larger rounding error.")
        with gr.Row():
            sx_method = gr.Dropdown([], label="Method", scale=1, allow_custom_value=True, elem_id="serve-method")
            sx_stage = gr.Slider(1, 3, value=1, step=1, label="After task k", scale=2, elem_id="serve-stage")
            sx_format = gr.Radio([(label, fmt) for fmt, label in STAGE_FORMATS.items()], value="lora",
                                 label="Format", scale=2, elem_id="serve-format")
        sx_button = gr.Button("Export stage", elem_id="serve-export")
        sx_file = gr.File(label="Stage export", height=90, elem_id="serve-file")
    with gr.Accordion("Evaluate a stage on new data", open=False, elem_id="results-evaluate"):
        with gr.Row():
            ev_method = gr.Dropdown([], label="Method", scale=1, allow_custom_value=True, elem_id="eval-method")
            ev_stage = gr.Slider(0, 3, value=0, step=1, label="After task k (0 = the base model)", scale=2,
                                 elem_id="eval-stage")
            ev_file = gr.File(label="A task CSV (accuracy) or a .txt file (perplexity)", scale=2, height=90,
                              file_types=[".csv", ".tsv", ".txt"], elem_id="eval-file")
        with gr.Row():
            ev_button = gr.Button("Evaluate", elem_id="eval-run", scale=3)
            ev_stop = gr.Button("Stop", elem_id="eval-stop", scale=1)
        ev_result = gr.Markdown(elem_id="eval-result")
    with gr.Accordion("Push to Hub", open=False, elem_id="results-push"):
        gr.Markdown("One hub repo for the run: `adapters/<method>/stage-<k>/` for each finished stage, a model card "
                    "written from the run (base model, tasks, settings, each accuracy with its n and interval, "
                    "perplexity and KL, the exact config), `metrics.json` and `config.yaml`. The token: your Hugging "
                    "Face login on a Space; locally HF_TOKEN or `hf auth login`. It is never stored or shown.")
        with gr.Row():
            push_repo = gr.Textbox(label="Repo (NAME or OWNER/NAME)", scale=3, elem_id="push-repo")
            push_method = gr.Dropdown([], label="Method (empty: every method with an adapter)", scale=2,
                                      allow_custom_value=True, elem_id="push-method")
            push_merged = gr.Checkbox(False, label="also merged models (full size)", scale=1)
            push_private = gr.Checkbox(True, label="private repo", scale=1)
        push_button = gr.Button("Push to Hub", elem_id="push-run")
        push_result = gr.Markdown(elem_id="push-result")
    outputs = [header, summary, text, loss_plot, heatmap, ppl_plot, forget_plot]
    run.change(show, run, outputs, api_name="results", concurrency_limit=None)
    run.change(pick, run, [ev_method, ev_stage], api_name=False, concurrency_limit=None, show_progress="hidden")
    run.change(pick_stage, run, [sx_method, sx_stage], api_name=False, concurrency_limit=None, show_progress="hidden")
    sx_button.click(export_stage, [run, sx_method, sx_stage, sx_format], sx_file, api_name="export_stage",
                    concurrency_id="gpu", concurrency_limit=1)
    ev_button.click(evaluate, [run, ev_method, ev_stage, ev_file], ev_result, api_name="evaluate",
                    concurrency_id="gpu", concurrency_limit=1)
    ev_stop.click(stop_evaluation, None, None, api_name="stop_evaluation", concurrency_limit=None)
    reload.click(refresh, run, run, api_name=False, concurrency_limit=None).then(
        show, run, outputs, api_name=False, concurrency_limit=None)
    run.change(push_choices, run, push_method, api_name=False, concurrency_limit=None, show_progress="hidden")
    push_button.click(push_run, [run, push_repo, push_method, push_merged, push_private], push_result,
                      api_name="push_to_hub", concurrency_limit=1, concurrency_id="push")
    for what, btn in buttons.items():
        btn.click(exporter(what), run, files, api_name=f"export_{what.replace('.', '_')}", concurrency_limit=None)
    return {"run": run, "show": show, "outputs": outputs, "refresh": refresh}
