"""What the app's MCP server offers an assistant (curlora/ui/mcp.py registers these; no gradio here): read any run
of the store by its id, and generate with one method at one stage. Every number is read from the run store
(metrics.json, study.json) as stored, never recomputed; every tool returns JSON text.

    tools = Tools(jobs, chat)
    tools.list_runs()                                  # what there is
    tools.get_run_summary(run_id)                      # status, methods and settings, ACC/BWT/forgetting, ppl, KL
    tools.get_accuracy_matrix(run_id, "lora")          # stage × task, each cell with n and its 95 % interval
    tools.compare_methods(run_id)                      # a study's matched-learning comparison (or the run's methods)
    tools.generate(run_id, "curlora", 2, "prompt")      # one reply of one method after task 2
    tools.start_run(experiment_yaml, owner)            # only where the app has a login (curlora/ui/mcp.py)

`owner` is what the app's policy checks a run id against (curlora/serve/hosting.py): None locally, where the one
user owns everything; hosted, a caller without a login reads only the shared examples.
"""

from __future__ import annotations

import json

from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.measure.record import RunMetrics
from curlora.methods.registry import described
from curlora.methods.registry import method as registered
from curlora.run import study_data
from curlora.run.chat import Chat, check_prompt
from curlora.run.store import Run, Study
from curlora.serve.jobs import JobManager

MAX_NEW_TOKENS = 256


def as_json(value) -> str:
    return json.dumps(value, indent=1, default=float)


def _cells(metrics: RunMetrics, rec, stage: int) -> dict:
    """{task: {accuracy, n, ci95}} of one stored row."""
    out = {}
    for j, task in enumerate(metrics.tasks):
        c = rec.cell(stage, j)
        out[task] = {"accuracy": c["accuracy"], "n": c["n"], "ci95": c["ci95"]}
    return out


def _base_cells(metrics: RunMetrics) -> dict:
    if metrics.base is None:
        return {}
    return {task: {k: v for k, v in metrics.base.cell(j).items() if k in ("accuracy", "n", "ci95")}
            for j, task in enumerate(metrics.tasks)}


class Tools:
    """The MCP tools over one app's run store, its job queue (for the owner checks and `start_run`) and its chat."""

    def __init__(self, jobs: JobManager, chat: Chat | None = None):
        self.jobs = jobs
        self.chat = chat or Chat()

    def _open(self, run_id: str, owner: str | None) -> Run:
        if not isinstance(run_id, str) or not run_id.strip():
            raise CurloraError("Give a run id (list_runs shows them).")
        return self.jobs.open(run_id.strip(), owner)

    def list_runs(self, owner: str | None = None) -> str:
        """List the runs and studies in the run store, newest first.

        Returns:
            JSON: a list of {run_id, kind ("run" or "study"), status, name, base_model, tasks, methods, progress (a
            run's stages done per method, e.g. "lora 2"; a study's runs finished of its plan, e.g. "6 of 9 runs")}.
        """
        out = []
        for run in self.jobs.runs(owner):
            try:
                cfg = run.config()
            except CurloraError:
                continue  # a folder whose config cannot be read is no run to describe
            out.append({"run_id": run.id, "kind": "study" if isinstance(run, Study) else "run",
                        "status": self.jobs.status(run.id, owner)["status"], "name": cfg.run.name,
                        "base_model": cfg.model.name, "tasks": [t.name for t in cfg.tasks],
                        "methods": [m.label for m in cfg.methods], "progress": run.outline().progress})
        return as_json(out)

    def get_run_summary(self, run_id: str, owner: str | None = None) -> str:
        """Summarise one run: its status, base model, tasks, each method's settings and its continual-learning
        numbers as stored (ACC, BWT, FWT, forgetting, plasticity; the final accuracy per task with n and the 95 %
        Wilson interval; perplexity, self-perplexity, KL to the base model and weight drift after every stage).

        Args:
            run_id: the run's id, as list_runs gives it.

        Returns:
            JSON with run_id, status, message, base_model, tasks, scoring, comparison, majority, base, methods
            ({label: {kind, setting, described, status, summary, final_accuracy, perplexity, self_perplexity,
            kl_to_base, weight_drift, final_loss, trainable}}) and learnability (one verdict per task).
        """
        run = self._open(run_id, owner)
        cfg, m, st = run.config(), run.record(), self.jobs.status(run.id, owner)
        methods = {}
        for label, rec in m.methods.items():
            methods[label] = {
                "kind": rec.kind, "setting": rec.setting, "described": described(label, rec.setting),
                "status": rec.status, "stages_done": rec.stages_done, "trainable": rec.trainable,
                "summary": {k: rec.summary.get(k) for k in ("acc", "bwt", "fwt", "forgetting", "plasticity")},
                "final_accuracy": _cells(m, rec, rec.stages_done) if rec.matrix else {},
                "perplexity": rec.ppl, "perplexity_relative": rec.ppl_relative, "self_perplexity": rec.self_ppl,
                "kl_to_base": rec.kl_to_base,
                "weight_drift": [d.get("total") if isinstance(d, dict) else None for d in rec.drift],
                "final_loss": {t.task: t.final_loss for t in rec.train}}
        return as_json({
            "run_id": run.id, "kind": "study" if isinstance(run, Study) else "run", "status": st["status"],
            "message": st.get("message", ""), "base_model": cfg.model.name, "tasks": m.tasks or [t.name for t in
                                                                                                cfg.tasks],
            "scoring": m.scoring, "comparison": m.comparison,
            "intervals": "each accuracy cell: Wilson 95 % over its n rows; intervals of ACC/BWT/forgetting over "
                         "seeds come from a study (compare_methods)",
            "majority": dict(zip(m.tasks, m.majority)),
            "base": {"accuracy": _base_cells(m), "perplexity": m.base.ppl if m.base else None,
                     "self_perplexity": m.base.self_ppl if m.base else None},
            "methods": methods, "learnability": [v.get("verdict") for v in m.learnability if v.get("verdict")]})

    def get_accuracy_matrix(self, run_id: str, method: str, owner: str | None = None) -> str:
        """The accuracy matrix of one method of a run: accuracy on every task (columns) after every stage (rows;
        row 0 is the base model before training), each cell with its n and 95 % Wilson interval, as stored.

        Args:
            run_id: the run's id, as list_runs gives it.
            method: the method's label in that run (e.g. curlora or lora; get_run_summary lists them).

        Returns:
            JSON: {run_id, method, described, scoring, tasks, rows: [{after, cells: {task: {accuracy, n, ci95}}}]}.
        """
        run = self._open(run_id, owner)
        m = run.record()
        rec = m.methods.get(method)
        if rec is None:
            known = ", ".join(m.methods) or "none finished yet"
            raise CurloraError(f"Run {run.id} has no method {clip(method)}; its methods: {known}.")
        rows = [{"after": "base" if i == 0 else m.tasks[i - 1], "stage": i, "cells": _cells(m, rec, i)}
                for i in range(len(rec.matrix))]
        return as_json({"run_id": run.id, "method": method, "described": described(method, rec.setting),
                        "scoring": m.scoring, "tasks": m.tasks, "rows": rows})

    def compare_methods(self, run_id: str, owner: str | None = None, with_studies: str = "") -> str:
        """Compare the methods of a study at matched learning (the learning-forgetting frontier, each method's best
        learning rate, and the paired test with its sentence), read from study.json. Give a study's id, or the id of
        one of its runs; for a run outside any study, its methods' stored summaries side by side.

        Args:
            run_id: a study's id, or a run's id, as list_runs gives it.
            with_studies: other studies' ids, comma-separated, to analyse together with this one as one study (the
                same experiment run in phases: more learning rates, methods or seeds); empty: this study alone.

        Returns:
            JSON: for a study {study_id, together (the other studies analysed with it), groups, frontier, best,
            comparison (each with its sentence), and the other families: comparison_top (at the most learning both
            reach), comparison_known (forgetting of what each run knew), comparison_chat (the base's abilities: chat KL, facts, perplexity), against_base (each
            setting against the base model: keeps / loses / gains / inconclusive), at_chosen (each pair, each
            method at its own chosen learning rate, on learning, forgetting and the base's abilities), progress
            (runs done of total, each method's minutes per run, hours left at that pace)}; for a lone run
            {run_id, study: null, note, methods: {label: {described, summary, final_accuracy}}}.
        """
        run = self._open(run_id, owner)
        study = run if isinstance(run, Study) else None
        group = run.config().run.group
        if study is None and group:
            try:
                study = self._open(group, owner)
            except CurloraError:
                study = None
            if study is not None and not isinstance(study, Study):
                study = None
        ids = [i.strip() for i in (with_studies or "").split(",") if i.strip()]
        others = [self._open(i, owner) for i in ids[:study_data.TOGETHER_MOST + 1]]
        if others and study is None:
            raise CurloraError(f"{run_id} is not part of a study: with_studies analyses studies together.")
        if any(not isinstance(o, Study) for o in others):
            raise CurloraError("with_studies: give studies' ids (list_runs marks them kind 'study').")
        if study is not None:
            others = [o for o in others if o.id != study.id]
            rec = study_data.together([study, *others]) if others else study.study_record()
            return as_json({"study_id": study.id, "status": self.jobs.status(study.id, owner)["status"],
                            "together": [o.id for o in others],
                            "settings": {**rec.settings.to_dict(), **rec.notes},
                            "groups": {k: g.to_json() for k, g in rec.groups.items()}, "frontier": rec.frontier,
                            "best": {m: b.to_json() if b else None for m, b in rec.best.items()},
                            "comparison": [c.to_json() for c in rec.comparison],
                            "comparison_top": [c.to_json() for c in rec.comparison_top],
                            "comparison_known": [c.to_json() for c in rec.comparison_known],
                            "comparison_chat": [c.to_json() for c in rec.comparison_chat],
                            "against_base": [t.to_json() for t in rec.against_base],
                            "at_chosen": [t.to_json() for t in rec.at_chosen],
                            "progress": study_data.progress(study).to_json()})
        m = run.record()
        return as_json({
            "run_id": run.id, "study": None,
            "note": "This run is not part of a study: the methods are compared at their own settings (one learning "
                    "rate each); a study compares them at matched learning.",
            "methods": {label: {"described": described(label, rec.setting), "summary": rec.summary,
                                "final_accuracy": _cells(m, rec, rec.stages_done) if rec.matrix else {},
                                "kl_to_base": rec.last("kl_to_base")}
                        for label, rec in m.methods.items()}})

    def generate(self, run_id: str, method: str, stage: int, prompt: str, owner: str | None = None,
                 max_new_tokens: int = 48, gate=None, client=None) -> str:
        """Generate a reply to a prompt with one method of a run after one stage (greedy decoding): the base model is
        "base" (or stage 0); "lora" at stage 2 is the LoRA adapter saved after the second task.

        Args:
            run_id: the run's id, as list_runs gives it.
            method: the method's label (e.g. curlora or lora), or base for the untrained base model.
            stage: 0 for the base model, k for the adapter saved after task k.
            prompt: the text to continue.

        Returns:
            JSON: {run_id, method, stage, prompt, reply}.
        """
        check_prompt(prompt)  # before anything is read: the reply echoes the prompt
        run = self._open(run_id, owner)
        stage = int(stage)
        if method == "base" or stage == 0:
            pane = "base"
        else:
            kinds = {m.label: m.kind for m in run.config().methods}
            if method not in kinds:
                raise CurloraError(f"Run {run.id} has no method {clip(method)}; its methods: {', '.join(kinds)}.")
            if not registered(kinds[method]).loads_stage:
                raise CurloraError(f"{method} keeps no adapter to generate with; use base (stage 0) or an adapter "
                                   "method.")
            pane = f"{method}@{stage}"
        self.jobs.policy.allow_chat(client or owner)

        def reply() -> str:
            text = ""
            for text in self.chat.stream(run.id, pane, prompt, max_new_tokens=min(int(max_new_tokens),
                                                                                  MAX_NEW_TOKENS),
                                         root=self.jobs.root):
                pass
            return text

        if gate is None:
            text = reply()
        else:
            with gate.hold("a reply over MCP"):
                text = gate.on_device(reply)
        return as_json({"run_id": run.id, "method": "base" if pane == "base" else method,
                        "stage": 0 if pane == "base" else stage, "prompt": prompt, "reply": text})

    def start_run(self, experiment_yaml: str, owner: str | None = None, client=None) -> str:
        """Start a run from an experiment YAML (the same file `python -m curlora run` reads, with the same checks and
        limits as the app's Train tab); it queues behind any run in progress.

        Args:
            experiment_yaml: the experiment as YAML text (model, tasks, methods, training, evaluation, run).

        Returns:
            JSON: {run_id, status}.
        """
        cfg = ExperimentConfig.from_yaml(experiment_yaml or "", source="experiment_yaml",
                                         aliases=not self.jobs.policy.hosted)
        run_id = self.jobs.submit(cfg, owner, client=client)
        return as_json({"run_id": run_id, "status": self.jobs.status(run_id, owner)["status"]})
