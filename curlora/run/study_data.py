"""A study's data without its weights, to commit as it grows and to resume from on another machine.

    python -m curlora study --pack STUDY_ID DIR      # DIR/study/ and DIR/runs/<id>/ for every finished point
    python -m curlora study --unpack DIR             # into the run store; then: python -m curlora study --resume ID

A study of real models takes hours: its data must outlive the machine it ran on. `pack` copies the study folder's
small files (study.json, study.yaml, config.yaml, status, events, the self-probe texts and the base's reference
distribution) and, for each point whose run completed, that run's config, metrics, status and events — never a
stage's adapter or head, so the pack is small enough for git. A point that had not finished goes into the pack as
pending (its run id dropped), so the resumed study runs it again from the start; finished points are never rerun.
`unpack` writes the same folders into a run store, refusing to overwrite anything there, and leaves the study
stopped, ready for `--resume` (completed, where every run had finished). The files the study reads travel by
record, not by copy: pack.json's `files` holds each task CSV's and probe text's path, its path under the project
folder and its sha256, and unpack points the configs at this machine's copies with the same bytes
(curlora/data/portable.py), so a study started in one checkout resumes in another. Packing twice into the same DIR
replaces the older pack (it is written beside and renamed into place), so a committed pack is always whole.
pack.json names the machine each finished run was packed from (`runs`: run id → machine), kept across unpack,
resume elsewhere and pack again, so a document can say which machine each number came from.

Several studies of one experiment, analysed as one (a study run in phases: a rate past the edge of a grid, more
methods, more seeds):

    rec = together([study, other, …])   # a StudyRecord over the union of their grids, plans and points
    mismatch(study, other)              # why two cannot be analysed together, in one sentence; None where they can

They must share the model, the tasks (by content), training and evaluation; a method both name must be set up alike
but for its learning rate; no (method, lr, seed, order) may run in both.

How far a study has got, from the same data:

    p = progress(study)            # a StudyProgress (study: a Study from the store)
    p.sentence()                   # "12 of 153 runs finished; 141 left: about 9.6 h run one after another …"
    p.to_json()                    # what the MCP tool and `curlora study --progress` give

A study of 150 runs takes hours to days on a CPU, so "when does it finish?" is the question a user asks of it
while it runs. The answer is read from what this study's runs cost on this machine, not from a model of the
hardware: each finished run's minutes are the sum of its finished stages (training and the evaluation after
each), from its events (`run_times`), and each method's runs left are priced at the median of its own finished runs.
A method with none finished yet is priced at its base method's median (`curlora-uniform` at `curlora`'s,
`lora-replay25` at `lora`'s), else at the median of every finished run, and the sentence says so. Besides the
median figure, the range from every method's fastest to its slowest run so far: a range of what was seen, not a
confidence interval. A run in flight counts as left, less its stages already finished. The runs are priced one
after another, as the local executor runs them; a study on Ray with several workers takes less.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from curlora.data import portable
from curlora.errors import CurloraError
from curlora.measure.study_record import StudyRecord
from curlora.measure.task_kl import REF_FILE as TASK_KL_REF
from curlora.run.store import STUDY_FILE, Run, Study, atomic_write_text, data_dir, outgoing_files

STUDY_DIR, RUNS_DIR, PACK_FILE = "study", "runs", "pack.json"
MAX_FILE = 8 * 1024 * 1024  # a file bigger than this is not data of a study (a stage's weights, a cache)
# folders that hold weights (live state never leaves: store.LIVE_FILES), and the new-task KL's base reference: it is
# measured again per seed (rows_per_seed) on fixed prompts, deterministically, so a pack would commit megabytes that
# change at every seed; a resumed study measures it again from task_kl.json's prompts
SKIP = {"adapters", "heads", "stages", TASK_KL_REF}


def _small_files(folder: Path) -> list[Path]:
    """The folder's own files that go into a pack: what leaves the machine (store.outgoing_files), small ones."""
    return outgoing_files(folder, skip=SKIP, max_bytes=MAX_FILE, recursive=False)


def machine() -> str:
    """This machine in words: architecture, CPUs, torch, and the GPU where one is visible."""
    import torch

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}{gpu}"


def _previous(study: Study, dest: Path) -> dict:
    """run id → machine from an earlier pack of this study (in DIR, or the one it was unpacked from)."""
    for f in (dest / PACK_FILE, study.path / PACK_FILE):
        if f.is_file():
            meta = json.loads(f.read_text(encoding="utf-8"))
            if meta.get("study") == study.id:
                return dict(meta.get("runs") or {})
    return {}


def pack(study_id: str, dest: Path, root: Path | None = None) -> dict:
    """Copy the study's data (no weights) into `dest`; returns {"points": finished, "pending": not finished}."""
    study = Run.open(study_id, root)
    if not isinstance(study, Study):
        raise CurloraError(f"{study_id} is a run, not a study; `python -m curlora list` shows the studies.")
    rec = study.study_record()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        (work / STUDY_DIR).mkdir()
        before, here, runs = _previous(study, dest), machine(), {}
        for f in _small_files(study.path):
            if f.name not in (STUDY_FILE, PACK_FILE):
                shutil.copy2(f, work / STUDY_DIR / f.name)
        done = 0
        for e in rec.plan:
            run = Run.open(e.run_id, study.root) if e.run_id else None
            if run is not None and run.status()["status"] == "completed":
                target = work / RUNS_DIR / run.id
                target.mkdir(parents=True)
                for f in _small_files(run.path):
                    shutil.copy2(f, target / f.name)
                e.status, done = "completed", done + 1
                runs[run.id] = before.get(run.id, here)
            else:  # rerun from the start where the pack is resumed: its stages' weights are not in the pack
                e.run_id, e.status = None, "pending"
        rec.points = [p for p in rec.points if any(e.run_id == p.run_id for e in rec.plan)]
        atomic_write_text(work / STUDY_DIR / STUDY_FILE, json.dumps(rec.to_json(), indent=1, default=float) + "\n")
        meta = {"study": study.id, "points": done, "pending": len(rec.plan) - done, "runs": runs,
                "files": [portable.describe(f).to_json() for f in portable.config_paths(study.config())]}
        atomic_write_text(work / PACK_FILE, json.dumps(meta, indent=1) + "\n")
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            dest.rename(old)
        work.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Unpacked:
    """What unpack wrote: the study, stopped (completed where every run had finished), and the files its configs
    now point elsewhere for or could not find (`moved`, portable.Relocation each; empty where every recorded path
    exists here)."""
    study: Study
    moved: list[portable.Relocation]

    @property
    def finished(self) -> bool:
        return self.study.status()["status"] == "completed"

    def sentence(self) -> str:
        then = ("every run had finished, nothing to resume" if self.finished
                else f"go on with `python -m curlora study --resume {self.study.id}`")
        return f"study {self.study.id}: unpacked into {self.study.root}; {then}"


def unpack(src: Path, root: Path | None = None) -> Unpacked:
    """Write a pack into the run store (`root`, else the default store); the stopped study and where its files
    were found."""
    src = Path(src)
    meta_file = src / PACK_FILE
    if not meta_file.is_file():
        raise CurloraError(f"{src} is not a study pack (no pack.json); make one with "
                           "`python -m curlora study --pack STUDY_ID DIR`.")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    root = (root or data_dir()).resolve()
    folders = [(src / STUDY_DIR, root / meta["study"])]
    if (src / RUNS_DIR).is_dir():
        folders += [(p, root / p.name) for p in sorted((src / RUNS_DIR).iterdir()) if p.is_dir()]
    taken = [d.name for _, d in folders if d.exists()]
    if taken:
        raise CurloraError(f"The run store {root} already holds {taken[0]}" + (f" and {len(taken) - 1} more" if
                           len(taken) > 1 else "") + "; unpack into another store (CURLORA_DATA_DIR) or resume there.")
    root.mkdir(parents=True, exist_ok=True)
    for s, d in folders:
        Run(root, d.name)  # the id check: a pack cannot write outside the store
        shutil.copytree(s, d)
    shutil.copyfile(meta_file, root / meta["study"] / PACK_FILE)  # which machine ran the runs packed so far
    study = Run.open(meta["study"], root)
    moved = _relocate(study, [Run.open(d.name, root) for _, d in folders[1:]], meta)
    rec = StudyRecord.of(study.study_json())
    where = "".join(f"; {m.sentence()}" for m in moved)
    if rec.done == len(rec.plan):  # nothing left to run: the study is as finished here as where it was packed
        study.set_status("completed", f"unpacked from {src.name}: all {rec.done} runs completed{where}")
    else:
        study.set_status("cancelled", f"unpacked from {src.name}: {rec.done} of {len(rec.plan)} runs completed — "
                                      f"resume the study to go on{where}")
    return Unpacked(study, moved)


def _relocate(study: Study, runs: list[Run], meta: dict) -> list[portable.Relocation]:
    """Point the study's and its runs' configs at this machine's copies of the files they read (portable.relocate);
    returns what moved or was not found (a path that exists as recorded is left out)."""
    packed = {f["recorded"]: portable.PackedFile.of(f) for f in meta.get("files") or []}
    found = [portable.relocate(packed.get(p) or portable.PackedFile(p)) for p in portable.config_paths(study.config())]
    moved = {m.recorded: m.found for m in found if m.found}
    for run in (study, *runs):
        cfg = run.config()
        if portable.rewrite(cfg, moved):
            atomic_write_text(run.path / "config.yaml", cfg.to_yaml())
    return [m for m in found if m.found != m.recorded]


# -- how far a study has got -----------------------------------------------------------------------------------
@dataclass
class RunTimes:
    """What one run's finished stages cost: training seconds and steps (the stage events' own counts), the
    evaluation after each stage (from its last step to its stage event, saving included), and the run's seconds
    (the sum of its finished stages, so a stage cut short by a stop and run again counts once)."""
    train_s: float = 0.0
    steps: int = 0
    eval_s: list[float] = field(default_factory=list)
    stage_s: float = 0.0

    @property
    def minutes(self) -> float:
        return self.stage_s / 60


def run_times(events: list[dict]) -> RunTimes | None:
    """A run's RunTimes from its events (events.jsonl, in order); None where no stage (past the base row) finished."""
    out = RunTimes()
    start = last_step = None
    for e in events:
        kind = e.get("kind")
        if kind == "stage_start":
            start = last_step = e["t"]
        elif kind == "step":
            last_step = e["t"]
        elif kind == "stage" and e.get("stage", 0) > 0 and start is not None:
            out.train_s += e.get("seconds") or 0.0
            out.steps += e.get("steps") or 0
            out.eval_s.append(e["t"] - last_step)
            out.stage_s += e["t"] - start
            start = None
    return out if out.eval_s else None


def base_method(method: str) -> str:
    """The method a variant label is built on: `curlora-uniform` → `curlora`, `lora-replay25` → `lora`."""
    return method.split("-")[0]


def _pricing(method: str, minutes: dict[str, list[float]]) -> tuple[list[float], str]:
    """(the finished runs' minutes that price `method`, how it was priced): its own; else its base method's ("at
    curlora's median"); else every finished run's ("never run: at the median of all runs"); ([], "") when none."""
    for name in (method, base_method(method)):
        if minutes.get(name):
            return minutes[name], "" if name == method else f"at {name}'s median"
    every = [x for xs in minutes.values() for x in xs]
    return every, "never run: at the median of all runs" if every else ""


def minutes_per_run(method: str, minutes: dict[str, list[float]]) -> tuple[float | None, str]:
    """(median minutes of one run of `method`, how it was priced: `_pricing`); (None, "") when nothing has
    finished."""
    pool, priced = _pricing(method, minutes)
    return (statistics.median(pool), priced) if pool else (None, "")


@dataclass
class MethodPace:
    """One method of a study: its runs finished and left, and the minutes one run takes (median, fastest and
    slowest of the runs that priced it; `priced` says which runs those were when not its own)."""
    method: str
    done: int = 0
    left: int = 0
    minutes: float | None = None
    fastest: float | None = None
    slowest: float | None = None
    priced: str = ""


@dataclass
class StudyProgress:
    """A study's progress: runs done of total, the ones left (a run in flight among them, less its finished
    stages), each method's pace, and the hours left at the median pace (with the fastest-to-slowest range);
    hours None while no run has finished."""
    study_id: str
    status: str
    done: int
    total: int
    in_flight: int = 0
    paces: list[MethodPace] = field(default_factory=list)
    hours: float | None = None
    hours_fastest: float | None = None
    hours_slowest: float | None = None
    measured_runs: int = 0  # finished runs whose events priced the rest

    @property
    def left(self) -> int:
        return self.total - self.done

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "left": self.left}

    def sentence(self) -> str:
        head = f"{self.done} of {self.total} runs finished"
        if self.left == 0:
            return head + "."
        head += f"; {self.left} left" + (f" ({self.in_flight} in flight)" if self.in_flight else "")
        if self.hours is None:
            return head + ": no run has finished yet, so no time estimate."
        by = ", ".join(f"{p.left} {p.method} × {p.minutes:.0f} min" + (f" ({p.priced})" if p.priced else "")
                       for p in self.paces if p.left and p.minutes is not None)
        return (f"{head}: about {_hours(self.hours)} run one after another ({by}; each method's median minutes "
                f"per run over this study's {self.measured_runs} finished run{'s' * (self.measured_runs != 1)})"
                + (f", between {lo} and {hi} at each method's fastest and slowest run so far."
                   if (lo := _hours(self.hours_fastest)) != (hi := _hours(self.hours_slowest)) else
                   "; no range yet: one finished run per method."))


_CACHE: dict[str, tuple[tuple[int, int], RunTimes | None]] = {}  # events file -> (its mtime and size, its times)


def _times_of(run: Run) -> RunTimes | None:
    """run_times of a run's events, read again only when its events file changed: the Compare tab asks every few
    seconds while a study runs, and a finished run's events never change."""
    path = run.path / "events.jsonl"
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(str(path))
    if hit is None or hit[0] != stamp:
        hit = _CACHE[str(path)] = (stamp, run_times(run.events()))
    return hit[1]


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def progress(study: Run) -> StudyProgress:
    """The progress of `study` (a Study in the store) from its plan and its runs' events."""
    rec = study.study_record()
    status = study.status().get("status", "?")
    minutes: dict[str, list[float]] = {}  # each method's finished runs
    spent: dict[str, list[float]] = {}  # each method's runs left: the minutes of their stages already done
    done_n: dict[str, int] = {}
    in_flight = 0
    for e in rec.plan:
        done = e.status == "completed"
        done_n[e.method] = done_n.get(e.method, 0) + done
        left = spent.setdefault(e.method, [])
        if not done:
            left.append(0.0)
        if not e.run_id:
            continue
        try:
            run = Run.open(e.run_id, study.root)
        except CurloraError:  # a point run deleted (or its id damaged): priced like a run not yet started
            continue
        # in flight: a process trains it now (a killed study's last run reads `interrupted`, curlora/run/store.py)
        in_flight += not done and run.status().get("status") == "running"
        t = _times_of(run)
        if t is None:
            continue
        if done:
            minutes.setdefault(e.method, []).append(t.minutes)
        else:
            left[-1] = t.minutes
    out = StudyProgress(study_id=study.id, status=status, done=rec.done, total=len(rec.plan), in_flight=in_flight,
                        measured_runs=sum(len(xs) for xs in minutes.values()))
    if not minutes:
        out.paces = [MethodPace(m, done=done_n[m], left=len(xs)) for m, xs in spent.items()]
        return out
    total = fastest = slowest = 0.0
    for method, xs in spent.items():
        pool, priced = _pricing(method, minutes)
        median = statistics.median(pool)
        pace = MethodPace(method, done=done_n[method], left=len(xs), minutes=median, fastest=min(pool),
                          slowest=max(pool), priced=priced)
        out.paces.append(pace)
        # a run in flight is left less what it has already run (never below nothing)
        total += sum(max(0.0, median - x) for x in xs)
        fastest += sum(max(0.0, pace.fastest - x) for x in xs)
        slowest += sum(max(0.0, pace.slowest - x) for x in xs)
    out.hours, out.hours_fastest, out.hours_slowest = total / 60, fastest / 60, slowest / 60
    return out


# -- several studies as one --------------------------------------------------------------------------------------
# what two studies analysed together must share: the experiment but its run name, each method's lr and the training
# lr (a study sets every point's own); task files are compared by their bytes (a study unpacked elsewhere names them
# by other paths)
SHARED = ("model", "tasks", "training", "evaluation")


def _comparable_config(cfg) -> dict:
    """The parts of an experiment that decide what a point measures, task files by their sha256."""
    d = cfg.to_dict()
    out = {k: d.get(k) for k in SHARED}
    out["training"] = {k: v for k, v in (out["training"] or {}).items() if k != "lr"}
    tasks = []
    for t in out["tasks"] or []:
        t = dict(t)
        for k in ("train_file", "eval_file"):
            if t.get(k) and Path(t[k]).is_file():
                t[k] = f"sha256:{portable.sha256(Path(t[k]))}"
        tasks.append(t)
    out["tasks"] = tasks
    out["methods"] = {m["name"] or m["kind"]: {k: v for k, v in m.items() if k != "lr"} for m in d.get("methods") or []}
    return out


def _first_difference(a, b, where: str = "") -> tuple[str, object, object] | None:
    """The first dotted field where two plain values differ: (field, a's, b's); None where they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(dict.fromkeys([*a, *b])):
            found = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (where, a, b)


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "…"


def mismatch(a: Study, b: Study) -> str | None:
    """Why `b` cannot be analysed with `a` as one study, in one sentence; None where it can: the same model, tasks
    (by content), training and evaluation; a method both name set up alike (but its lr); the same task order at each
    order index both use and the same row drawing (rows_per_seed); and no (method, lr, seed, order) run in both."""
    ca, cb = _comparable_config(a.config()), _comparable_config(b.config())
    head = f"Studies {a.id} and {b.id} cannot be analysed together"
    for part in SHARED:
        found = _first_difference(ca[part], cb[part], part)
        if found:
            what, x, y = found
            return (f"{head}: they differ in {what} ({_short(x)} against {_short(y)}); only studies of the same model, "
                    "tasks, training and evaluation can.")
    for label in set(ca["methods"]) & set(cb["methods"]):
        found = _first_difference(ca["methods"][label], cb["methods"][label], label)
        if found:
            what, x, y = found
            return f"{head}: both name {label}, set up differently ({what}: {_short(x)} against {_short(y)})."
    ra, rb = a.study_record(), b.study_record()
    if ra.settings.rows_per_seed != rb.settings.rows_per_seed:
        return f"{head}: one draws each seed's own rows (rows_per_seed) and the other does not."
    oa, ob = ra.settings.orders or [ra.tasks], rb.settings.orders or [rb.tasks]
    for i, (x, y) in enumerate(zip(oa, ob)):
        if list(x) != list(y):
            return f"{head}: their task order {i} differs ({', '.join(x)} against {', '.join(y)})."
    runs = {(e.method, e.lr, e.seed, e.order) for e in ra.plan}
    both = sorted(k for k in {(e.method, e.lr, e.seed, e.order) for e in rb.plan} if k in runs)
    if both:
        m, lr, seed, order = both[0]
        return (f"{head}: both run {m} at lr {lr:g}, seed {seed}, task order {order}"
                + (f" (and {len(both) - 1} more settings)" if len(both) > 1 else "")
                + "; analyse one of them with studies of other settings.")
    return None


# (each study's id and study.json's mtime and size, pairs, margin, kl_budget) -> the analysis, the most recently
# asked last: a few combinations kept, so visitors whose charts refresh every few seconds do not evict each other
_TOGETHER: OrderedDict[tuple, StudyRecord] = OrderedDict()
_KEPT_LOCK = threading.Lock()  # guards _TOGETHER (the app's handlers and the MCP read tools run in threads)
# one analysis at a time in the process, whoever asks (the Compare tab, the MCP read tool, the CLI): an analysis is
# seconds of CPU, and a read tool with no queue of its own must not let a caller start many at once
_ANALYSING = threading.Lock()
TOGETHER_KEPT = 8
TOGETHER_MOST = 8  # studies analysed with one: each adds its runs to an analysis of seconds


def together(studies: list[Study], pairs: list[tuple[str, str]] | None = None, margin: float | None = None,
             kl_budget: float | None = None) -> StudyRecord:
    """Several studies of one experiment analysed as one (study_analysis.together): each checked against the first
    (`mismatch`, refused with its sentence); every run's metrics read where its study is. The first study's
    settings decide margin and kl_budget unless given. The analysis is kept while no study.json changes (a chart
    that refreshes every few seconds asks again)."""
    if len(studies) == 1 and margin is None and kl_budget is None:
        return studies[0].study_record()
    if len(studies) - 1 > TOGETHER_MOST:
        raise CurloraError(f"{len(studies) - 1} studies to analyse with one; the limit is {TOGETHER_MOST}.")
    stamp = []
    for s in studies:
        st = (s.path / STUDY_FILE).stat() if (s.path / STUDY_FILE).is_file() else None
        stamp.append((s.id, st.st_mtime_ns if st else 0, st.st_size if st else 0))
    key = (tuple(stamp), tuple(pairs or ()), margin, kl_budget)
    kept = _kept(key)
    if kept is not None:
        return kept
    with _ANALYSING:
        kept = _kept(key)  # asked while another caller was analysing the same studies
        if kept is not None:
            return kept
        for other in studies[1:]:  # checked once per version of the studies (it reads every task file's bytes)
            why = mismatch(studies[0], other)
            if why:
                raise CurloraError(why)
        from curlora.measure.study_analysis import together as analyse_together

        roots = list(dict.fromkeys(s.root for s in studies))

        def metrics_of(run_id: str):
            for root in roots:
                try:
                    return Run.open(run_id, root).record()
                except (CurloraError, OSError, ValueError):
                    continue
            return None
        records = [s.study_record() for s in studies]
        if margin is not None:
            records[0].settings.margin = margin
        if kl_budget is not None:
            records[0].settings.kl_budget = kl_budget
        analysed = analyse_together(records, metrics_of, pairs)
        with _KEPT_LOCK:
            _TOGETHER[key] = analysed
            while len(_TOGETHER) > TOGETHER_KEPT:
                _TOGETHER.popitem(last=False)
        return analysed


def _kept(key: tuple) -> StudyRecord | None:
    """The kept analysis for `key`, now the most recently asked; None where there is none."""
    with _KEPT_LOCK:
        found = _TOGETHER.get(key)
        if found is not None:
            _TOGETHER.move_to_end(key)
        return found
