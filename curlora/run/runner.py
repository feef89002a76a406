"""The continual-learning runner: every method through every task, measured after each stage, into the run store.

    run = start(cfg)          # validates tasks and model first: nothing is written if anything is wrong
    execute(run, ...)         # or resume(run_id)

The base model is loaded once. Each method attaches to it in turn and detaches again (full fine-tuning restores
a snapshot), so a side-by-side run holds about one copy of the base weights. After every stage, for every method:
accuracy on every task (trained or not: forward transfer), the perplexity probe and the drift probes of
curlora/measure/probes.py (self-sampled text: self_ppl and KL to base; weight drift); row 0 is the base model.
metrics.json's fields: curlora/measure/record.py (written there once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import peft
import torch
from torch import nn

from curlora.data.tasks import load_task
from curlora.errors import Cancelled, CurloraError, check_stop
from curlora.experiment import ExperimentConfig, MethodSettings
from curlora.measure import probes
from curlora.measure.metrics import majority_share, summarize
from curlora.measure.perplexity import tokenize_text
from curlora.measure.record import NO_DRIFT, MethodRecord, Row, RunMetrics, TrainRecord
from curlora.methods.registry import Context, Method, method, stage_steps
from curlora.paths import ASSETS, DEFAULT_PROBE, OWNERS_DIR
from curlora.run import events, trackers
from curlora.run.estimate import check_fits, check_positions
from curlora.run.measurer import Loaded, Measurer
from curlora.run.store import DiskFull, Run, is_disk_full, register_executor, resumable
from curlora.run.train import Diverged, Heads, Replay, fisher_diagonal, train_task

if TYPE_CHECKING:  # annotations only
    from curlora.models.loading import ModelInfo

MAIN = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes the store


def adapter_config(m: MethodSettings, model):
    """The PEFT config an adapter method attaches with (its registered class decides)."""
    return method(m.kind).peft_config(m, model)


def probe_missing(path: Path) -> CurloraError:
    """The sentence for a probe text that cannot be read as a file: missing, or a folder, device or pipe."""
    if path.exists():
        return CurloraError(f"evaluation.probe_text: {path} is not a regular text file (a folder, a device or a "
                            "pipe); give the path of a .txt file.")
    return CurloraError(f"evaluation.probe_text: {path} does not exist.")


def source_name(path: Path) -> str:
    """How metrics.json names the probe text: 'bundled:REL' under assets/, 'upload:NAME' for a visitor's upload (the
    names a config may use), else the path as given. A shared example's export then names no server path."""
    real = path.resolve()
    try:
        return f"bundled:{real.relative_to(ASSETS.resolve()).as_posix()}"
    except ValueError:
        pass
    if OWNERS_DIR in real.parts:
        return f"upload:{real.name}"
    return str(path)


def probe_file(cfg: ExperimentConfig) -> Path | None:
    """The config's probe text file (None: the model's own or the bundled one), refused unless it can be read."""
    if not cfg.evaluation.probe_text:
        return None
    path = Path(cfg.evaluation.probe_text)
    if not path.is_file():
        raise probe_missing(path)
    return path


def probe_text(cfg: ExperimentConfig, info: ModelInfo) -> tuple[str, str]:
    path = probe_file(cfg)
    if path is not None:
        return path.read_text(encoding="utf-8", errors="replace"), source_name(path)
    bundled = Path(getattr(info, "path", "") or "") / "probe.txt"
    for path in (bundled, DEFAULT_PROBE):
        if path.is_file():
            return path.read_text(encoding="utf-8"), source_name(path)
    raise CurloraError("No perplexity probe text: set evaluation.probe_text to a text file.")


def load_everything(cfg: ExperimentConfig, base_dir: str | None = None, limits=None, should_stop=None) -> Loaded:
    """Load an admitted config: tasks first (cheap, the usual mistakes), then the model. Writes nothing.

    Admission comes first and once (curlora/serve/hosting.py Policy.admit: sources resolved, remote code and
    server paths refused, the limits the config shows; the CLI's is Policy.local()). `limits` (the host's
    curlora/serve/limits.py Limits) caps the task files read at once and the rows read from each, and refuses what
    the loaded tasks show is over a limit, before the model loads; `should_stop` raises Cancelled between tasks and
    before the model loads (Stop while large files are read)."""
    from curlora.models.loading import load_model

    tasks = []
    with limits.reading() if limits is not None else contextlib.nullcontext():  # a host's cap on files read at once
        for t in cfg.tasks:
            check_stop(should_stop)
            tasks.append(load_task(t, base_dir=base_dir, max_rows=getattr(limits, "rows_per_file", None)))
    if limits is not None:
        limits.check_loaded(cfg, tasks)
    probe_file(cfg)  # before the model loads
    device = cfg.model.device
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    check_stop(should_stop)
    check_fits(cfg, device=device)  # weights, optimiser, activations, logits against the free memory: before loading
    model, tokenizer, info = load_model(cfg.model.name, dtype=cfg.model.dtype, device=device,
                                        revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code,
                                        quantization=cfg.model.quantization)
    check_positions(cfg, model)
    text, source = probe_text(cfg, info)
    ids = tokenize_text(tokenizer, text, cfg.evaluation.ppl_max_tokens)
    return Loaded(model, tokenizer, tasks, ids, source, info)


def start(cfg: ExperimentConfig, root: Path | None = None, loaded: Loaded | None = None) -> tuple[Run, Loaded]:
    """Validate and load, then create the run folder. Under torchrun / accelerate launch rank 0 creates it and
    the other ranks open the same one."""
    loaded = loaded or load_everything(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        from accelerate import PartialState

        PartialState()  # joins the process group that torchrun / accelerate launch set up
        box = [Run.create(cfg.to_yaml(), name=cfg.run.name, root=root).id if MAIN else None]
        dist.broadcast_object_list(box, src=0)
        return Run.open(box[0], root), loaded
    run = Run.create(cfg.to_yaml(), name=cfg.run.name, root=root)
    return run, loaded


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# What allocators say when they run out: CUDA / MPS "out of memory", the CPU allocator "DefaultCPUAllocator: can't
# allocate memory" or "not enough memory", the OS "Cannot allocate memory" (ENOMEM).
_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a failed allocation: torch.OutOfMemoryError only covers CUDA, the CPU allocator raises a
    plain RuntimeError, Python a MemoryError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(w in str(err).lower() for w in _OOM_WORDS)


def strip_adapters(base: torch.nn.Module) -> None:
    """Put the original layer back wherever a CURLoRA or LoRA wrapper is left in `base` (an attach that ran out of
    memory half way), so the next method starts from the clean base model."""
    for name, module in list(base.named_modules()):
        if isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, child, module.get_base_layer())


class Executor:
    """Runs (or resumes) the experiment stored in `run`, updating metrics.json after every stage. It orchestrates:
    the units, the stages, saving and logging; `measure` (curlora/run/measurer.py) measures every stage and a
    `Heads` (curlora/run/train.py) keeps each method's classification heads."""

    def __init__(self, run: Run, cfg: ExperimentConfig, loaded: Loaded, should_stop=None, on_event=None,
                 base: Row | None = None):
        """`base`: row 0 measured already (a study measures it once for all its runs, and puts the self-probe
        files in the run folder beforehand); the run then starts at its first method unit."""
        self.run, self.cfg, self.L = run, cfg, loaded
        self.external_stop = should_stop
        self.on_event = trackers.follow(run, cfg, on_event)  # run.log_with: curlora/run/trackers.py
        self.measure = Measurer(run.path, cfg, loaded, should_stop=self.should_stop, log=self.log, write=MAIN)
        self.snapshot = None  # the base weights while a full fine-tune runs, for its weight drift
        self.metrics = self._stored() or self._fresh_metrics()
        if self.metrics.base is None and base is not None:
            self.metrics.base = base

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _fresh_metrics(self) -> RunMetrics:
        ev = self.cfg.evaluation
        return RunMetrics(
            run_id=self.run.id, tasks=[t.name for t in self.L.tasks], scoring=ev.scoring,
            forgetting_definition="Chaudhry et al. 2018: max accuracy at an earlier stage minus final",
            probe={"source": self.L.probe_source, "tokens": int(self.L.probe_ids.numel()), "window": ev.ppl_window,
                   "stride": ev.ppl_stride},
            majority=[majority_share(list(self.measure.eval_rows(t)["label_id"])) for t in self.L.tasks],
            comparison=self.cfg.training.comparison)

    def _stored(self) -> RunMetrics | None:
        """metrics.json as stored, as the typed record: a run stored by an older version gains the fields it lacks
        (curlora/measure/record.py is the one place that knows them); None when there is none yet."""
        return self.run.record() or None

    def log(self, kind: str, **fields) -> None:
        event = events.make(kind, **fields)
        if MAIN:
            event = self.run.log(kind, **fields)
        if self.on_event:
            self.on_event(event)

    def save_metrics(self) -> None:
        base_ppl = self.metrics.base.ppl if self.metrics.base else None
        for rec in self.metrics.methods.values():
            rec.summary = summarize(rec.matrix)
            if base_ppl:
                rec.ppl_relative = [p / base_ppl for p in rec.ppl]  # 1.0 = the base model's perplexity
        kinds = {m.label: method(m.kind) for m in self.cfg.methods}
        control = next((label for label, k in kinds.items() if k.needs_head_scoring), None)
        self.metrics.learnability = probes.learnability(
            self.metrics, untrained={label for label, k in kinds.items() if not k.trains}, control=control)
        if MAIN:
            self.run.write_metrics(self.metrics.to_json())

    def should_stop(self) -> bool:
        return self.run.cancel_requested() or bool(self.external_stop and self.external_stop())

    # -- the run -----------------------------------------------------------------------------------------
    # The work comes in units: the base row, then one unit per method per task. A unit reads what it needs from
    # the run store (the previous stage's adapter, the self-probe texts) and writes what it made back (the stage
    # folder, metrics.json), so `device_call` may run each unit anywhere: under a lock shared with chat and
    # evaluation (the app), or in a separate process such as a ZeroGPU worker (`spaces.GPU`), whose changes to
    # this object are lost. The metrics are read back from the store after every unit in that case.
    def execute(self, device_call=None) -> str:
        # The run's lock first, held to the end: one trainer per run. A RunBusy here leaves status.json alone, it
        # belongs to the process that holds the lock. Under torchrun rank 0 holds it for every rank.
        with self.run.lock() if MAIN else contextlib.nullcontext():
            return self._execute(device_call)

    def _execute(self, device_call) -> str:
        self.run.clear_cancel()
        if MAIN:
            self.run.set_status("running", "; ".join(self.run.repaired))  # a repaired run says it restarted
        self.log(events.RUN_START, tasks=self.metrics.tasks, methods=[m.label for m in self.cfg.methods])
        try:
            if self.metrics.base is None:
                self._unit(device_call, self.base_unit)
            for m in self.cfg.methods:
                while self.pending(m):
                    before = self.progress(m)
                    self._unit(device_call, lambda m=m: self.method_unit(m))
                    if self.progress(m) == before:
                        raise CurloraError(f"A training unit of {m.label} finished without saving its stage; "
                                           "resume the run to try again.")
        except Cancelled as err:  # a Stop, or the queue taking the device back for another visitor (its own words)
            self.finish("cancelled", str(err) or "stopped on request; finished stages are kept — resume to continue")
            return "cancelled"
        except Exception as err:  # the status must say failed, whatever broke
            if is_disk_full(err):  # a write outside the store's own files (a stage, a probe file) found the disk full
                full = DiskFull(f"The disk is full: run {self.run.id} stopped; free some space and resume the run "
                                "(finished stages are kept).")
                self.finish("failed", str(full))
                raise full from err
            self.finish("failed", str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}")
            raise
        failed = [k for k, v in self.metrics.methods.items() if v.status == "failed"]
        if failed:
            self.finish("completed", f"finished; method(s) {', '.join(failed)} stopped with an error")
        else:
            self.finish("completed", "finished")
        return "completed"

    def _unit(self, device_call, fn) -> None:
        if device_call is None:
            fn()
            return
        try:
            device_call(fn)
        finally:
            stored = self._stored()
            if stored:
                self.metrics = stored  # what the unit wrote, wherever it ran

    def pending(self, m: MethodSettings) -> bool:
        rec = self.metrics.methods.get(m.label)
        return rec is None or (rec.status not in ("completed", "failed") and rec.stages_done < len(self.L.tasks))

    def progress(self, m: MethodSettings) -> tuple:
        rec = self.metrics.methods.get(m.label)
        return (len(rec.matrix), rec.status) if rec else (0, None)

    def finish(self, status: str, message: str) -> None:
        """Save the metrics, log run_end, store the status. Ending a failed run never raises: a second error here (the
        same full disk, most often) would hide the one that failed it, so each step is tried on its own. Any other
        ending that cannot be written ends the run failed with that error instead, and raises it."""
        steps = (self.save_metrics, lambda: self.log(events.RUN_END, status=status, message=message),
                 lambda: MAIN and self.run.set_status(status, message))
        if status == "failed":
            for step in steps:
                with contextlib.suppress(Exception):
                    step()
            return
        try:
            for step in steps:
                step()
        except Exception as err:
            self.finish("failed", str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}")
            raise

    def base_unit(self) -> None:
        """Row 0: the base model on every task and probe (and the self-probe texts sampled from it)."""
        self.measure.prepare(self.metrics)
        self.log(events.STAGE_START, method="base", stage=0)
        row0 = self.measure.evaluate(self.L.model, {})
        self.metrics.base = row0
        self.save_metrics()
        self.log(events.STAGE, method="base", stage=0, **row0.event())

    def method_unit(self, m: MethodSettings) -> None:
        """The next task of method m: attach its last saved stage, train, save, evaluate, detach."""
        self.measure.prepare(self.metrics)
        n = len(self.L.tasks)
        base = self.metrics.base
        kind = method(m.kind)  # looked up once: the unit hands it on
        rec = self.metrics.methods.get(m.label)
        if rec is None:
            rec = self.metrics.methods[m.label] = MethodRecord(
                kind=m.kind, setting=kind.setting(m, self.cfg.training.lr))
            rec.append(base, NO_DRIFT)
        done = rec.stages_done
        if rec.status in ("completed", "failed") or done >= n:
            return
        if not kind.trains:  # the base model: its own row at every stage
            for _ in range(done, n):
                rec.append(base, NO_DRIFT)
            rec.status = "completed"
            self.save_metrics()
            return
        cleanup = None  # how to give the base back, once attached
        try:
            model, heads, cleanup = self.attach(m, done, kind)  # inside: a rank too large fails here, out of memory
            rec.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            rec.status = "running"
            self.run_stage(m, rec, model, heads, done, kind)
            if done + 1 == n:
                rec.status = "completed"
        except Diverged as err:
            rec.status, rec.message = "failed", str(err)
            self.log(events.ERROR, method=m.label, message=str(err))
        except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(err):
                raise
            rank = f"lower r (now {m.r}), " if kind.ranked else ""
            msg = (f"{m.label} ran out of memory at stage {len(rec.matrix)}; lower training.batch_size (now "
                   f"{self.cfg.training.batch_size}) or max_length, raise grad_accum, {rank}or pick a smaller model.")
            rec.status, rec.message = "failed", msg
            self.log(events.ERROR, method=m.label, message=msg)
        except Cancelled:
            rec.status = "cancelled"
            raise
        finally:
            try:
                self.save_metrics()  # may fail (a full disk): the base must be given back all the same
            finally:
                if cleanup is None:
                    strip_adapters(self.L.model)  # an attach that failed half way
                else:
                    cleanup()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # give the next method (and the app) the memory back

    def attach(self, m: MethodSettings, done: int,
               kind: Method | None = None) -> tuple[nn.Module, Heads, Callable[[], None]]:
        """The model to train for method m (resumed at stage `done`), its heads, and how to give the base back.
        `kind`: m's registered method, where the caller has it."""
        base = self.L.model
        heads = Heads(base, [len(t.classes) for t in self.L.tasks])
        if self.cfg.evaluation.scoring == "head":
            heads.read(lambda stage: self.run.adapter_dir(m.label, stage), done)
        kind = kind or method(m.kind)
        context = Context(done, len(self.L.tasks), self.cfg.evaluation.ppl_window, self.calibration)
        attached = kind.attach(base, m, self.run.adapter_dir(m.label, done) if done else None, context)
        self.snapshot = attached.snapshot
        return attached.model, heads, attached.cleanup

    def calibration(self, tokens: int) -> tuple[torch.Tensor, str]:
        """General text for a data-driven init (CorDA's covariance), up to `tokens` ids: the probe text past the part
        perplexity scores, so that probe stays out of sample; the scored part where the text has no window more."""
        text, source = probe_text(self.cfg, self.L.info)
        scored = int(self.L.probe_ids.numel())
        rest = tokenize_text(self.L.tokenizer, text, scored + tokens)[scored:]
        if rest.numel() >= self.cfg.evaluation.ppl_window:
            return rest, f"{source}: tokens {scored}-{scored + rest.numel()}, past the scored probe"
        return self.L.probe_ids[:tokens], f"{source}: the scored probe itself (its perplexity is then in sample)"

    def run_stage(self, m: MethodSettings, rec: MethodRecord, model: nn.Module, heads: Heads, i: int,
                  kind: Method) -> None:
        task, tr, ev = self.L.tasks[i], self.cfg.training, self.cfg.evaluation
        head = heads.new(i, tr.seed + i) if ev.scoring == "head" else None
        self.log(events.STAGE_START, method=m.label, stage=i + 1, task=task.name)

        def on_step(info):
            self.log(events.STEP, method=m.label, stage=i + 1, task=task.name, **info)
            if ev.probe_every and i > 0 and info["step"] % ev.probe_every == 0:
                accs = self.measure.probe(model, heads.by_task, i)
                self.log(events.PROBE, method=m.label, stage=i + 1, step=info["step"], accuracy=accs)
                model.train()

        target, schedule = self.matched_target(m, i)
        own = kind.stage_tasks(i)  # joint: every task so far, max_steps for each
        if schedule.max_steps:
            schedule = dataclasses.replace(schedule, max_steps=stage_steps(m, schedule, i, schedule.max_steps, None))
        pooled = [self.L.tasks[j] for j in own if j != i]
        replay = Replay(self.L.tasks[:i], m.replay, i) if m.replay and i else None  # the first task replays nothing
        result = train_task(model, self.L.tokenizer, task, schedule, lr=m.lr or tr.lr, head=head, on_step=on_step,
                            should_stop=self.should_stop, stop_at_loss=target, pooled=pooled, replay=replay,
                            penalty=kind.penalty(model, m))
        if i + 1 < len(self.L.tasks):  # what a method keeps for later stages (EWC's Fisher): none after the last
            kind.consolidate(model, m, lambda: fisher_diagonal(
                model, self.L.tokenizer, task, tr, kind.consolidation_rows, should_stop=self.should_stop))
        if head is not None:
            rec.head_trainable = sum(p.numel() for p in head.parameters())  # per task, beside the adapter
            heads.keep(i, head)
        self.save_stage(m, model, heads, i + 1, kind)
        self.wait_for_save()
        row = self.measure.evaluate(model, heads.by_task, trained=i)
        drift = kind.drift(model, self.snapshot)
        rec.append(row, drift)
        rec.train.append(TrainRecord(task=task.name, steps=result.steps, final_loss=result.final_loss,
                                     seconds=round(result.seconds, 3), smoothed_loss=result.smoothed_loss,
                                     lr=m.lr or tr.lr, target_loss=target, reached=result.reached,
                                     trained_on=[self.L.tasks[j].name for j in own],
                                     replayed_per_batch=result.replayed_per_batch))
        rec.peak_memory_bytes = _peak_memory()
        self.save_metrics()
        self.log(events.STAGE, method=m.label, stage=i + 1, task=task.name, **row.event(), steps=result.steps,
                 final_loss=result.final_loss, seconds=result.seconds, drift=drift["total"])

    # -- the matched-loss comparison and the stage folders ------------------------------------------------------
    def matched_target(self, m: MethodSettings, i: int):
        """(loss to stop at or None, training schedule) for method m on task i under the chosen comparison."""
        tr = self.cfg.training
        if tr.comparison != "matched_loss" or m.label == tr.matched_loss_reference:
            return None, tr
        target = tr.target_loss
        if target is None:
            ref = self.metrics.methods.get(tr.matched_loss_reference)
            ref = ref.train if ref else []
            target = ref[i].smoothed_loss if len(ref) > i else None  # None: the reference failed before task i
        if target is None:
            return None, tr
        return target, dataclasses.replace(tr, max_steps=tr.matched_loss_max_steps or tr.max_steps)

    def save_stage(self, m: MethodSettings, model: nn.Module, heads: Heads, stage: int, kind: Method) -> None:
        if not MAIN:
            return

        def write(folder: Path) -> None:
            kind.save(model, folder)
            heads.save(folder)

        self.run.write_stage(m.label, stage, write)

    @staticmethod
    def wait_for_save() -> None:
        """Under torchrun the next stage of every rank loads what rank 0 saved: wait until it is there."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def execute(run: Run, cfg: ExperimentConfig, loaded: Loaded, should_stop=None, on_event=None, device_call=None,
            base: Row | None = None) -> str:
    """Run or resume `run`. device_call(fn) runs one unit of work (see Executor.execute); None runs it here."""
    return Executor(run, cfg, loaded, should_stop, on_event, base=base).execute(device_call)


def _execute_entry(run: Run, loaded: Loaded, **kw) -> str:
    return execute(run, run.config(), loaded, **kw)


register_executor("run", _execute_entry)  # Run.execute: the store sits below the runner and does not import it


def run_experiment(cfg: ExperimentConfig, root: Path | None = None, should_stop=None, on_event=None) -> Run:
    run, loaded = start(cfg, root)
    execute(run, cfg, loaded, should_stop, on_event)
    return run


def resume(run_id: str, root: Path | None = None, should_stop=None, on_event=None) -> Run:
    """Resume a run — or a study, when the id is one (its points go on where they stopped)."""
    run, cfg = resumable(run_id, root)
    run.execute(load_everything(cfg), should_stop=should_stop, on_event=on_event)
    return run

