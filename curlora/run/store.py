"""The run store: one folder per run under the data directory; the UI and the CLI read only this.

    <data dir>/<run id>/
        config.yaml                      the exact experiment config, as run
        events.jsonl                     append-only: steps, losses, probes, stage boundaries, errors
        metrics.json                     everything finished so far, replaced atomically after every stage
        status.json                      queued | running | completed | cancelled | failed | interrupted (+ message;
                                         pid, host and process start time while running)
        lock                             flock'ed by the one process training the run (its pid and host, for display)
        adapters/<method>/stage-<k>/     PEFT layout, one per finished stage
        cancel                           present = please stop (written by whoever asks, read by the runner)
        study.yaml, study.json           a study's folder (curlora/run/study.py): its settings and its record

An entry is a Run, or a Study when its folder holds study.yaml: `Run.open` and `list_runs` give the entry's own
kind, and each kind knows how to execute (`execute`) and whether it may resume (`check_resumable`). The code that
executes each kind registers itself here (curlora/run/runner.py, curlora/run/study.py): the store sits below both.

Run ids are generated here and validated on every use: they can never name a path outside the data dir, and a run
folder that is a symbolic link is not a run. Several processes may share one data dir (the app, the CLI, a second
app after a restart): the lock says who trains a run, and a file damaged by a crash or a full disk is reported
(`Run.problems`, status `damaged`) and repaired on resume (`Run.repair`) instead of breaking every listing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import psutil

from curlora.errors import CurloraError, clip
from curlora.experiment import METHOD_NAME, ExperimentConfig
from curlora.run import events as ev

if TYPE_CHECKING:  # annotations only: the store sits below the runner
    from curlora.run.measurer import Loaded

DATA_DIR_ENV = "CURLORA_DATA_DIR"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATUSES = ("queued", "running", "completed", "cancelled", "failed", "interrupted")  # what set_status stores
REPORTED_STATUSES = (*STATUSES, "damaged")  # what status() may say: `damaged` is read, never stored
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
CREATE_TRIES = 5  # new ids drawn when a run folder of the same name already exists
LOCK_TRIES = 25  # is_locked() holds a shared lock for microseconds: retry that long before calling the run busy
LOCK_RETRY_S = 0.01
STUDY_SETTINGS, STUDY_FILE = "study.yaml", "study.json"


@dataclass
class Outline:
    """What a listing shows of an entry (the Runs tab, `curlora list`): its tasks, its methods and how far it has
    got — a run's stages done per method, a study's runs finished of its plan."""
    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    progress: str = "0"

# kind -> execute(entry, loaded, should_stop, on_event, device_call) -> status, registered by the module that runs it
_EXECUTORS: dict[str, Callable] = {}


def register_executor(kind: str, execute: Callable) -> None:
    """How entries of `kind` ("run", "study") execute: called once by the module that runs them."""
    _EXECUTORS[kind] = execute


class RunBusy(CurloraError):
    """Another process (or another handle in this one) holds the run's lock: it is training the run."""


class DiskFull(CurloraError):
    """A write into the run store failed because the disk (or the quota) is full."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_FULL


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or "runs").resolve()


def new_run_id(name: str = "run") -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or ".." in run_id:
        raise CurloraError(
            f"{clip(run_id)} is not a valid run id: use letters, digits, '.', '_' and '-' only (as `list` shows them)."
        )
    return run_id


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, rename: readers see the old or the new file, never half.
    A full disk raises DiskFull and leaves no temporary file behind."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if is_disk_full(err):
            raise DiskFull(f"The disk is full: {path} could not be written; free some space and try again.") from None
        raise


def _pid_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether process `pid` still runs — and is the same process, when its start time was recorded (a pid is
    reused: in a container the app is pid 1 after every restart)."""
    if not pid:
        return False
    try:
        since = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # it exists, but may not be looked at
    return started is None or abs(since - started) < 1.0


def _queue_alive(by: dict | None) -> bool:
    """Whether the process whose queue a run waits in still runs (another host's queue: assumed so)."""
    if not isinstance(by, dict):
        return False
    if by.get("host") != socket.gethostname():
        return True
    return _pid_alive(by.get("pid"), by.get("started"))


def _process_started() -> float | None:
    with contextlib.suppress(psutil.Error):
        return round(psutil.Process().create_time(), 3)
    return None


def _parse_event(line: bytes) -> dict | None:
    """One event line, or None for a torn or corrupted one."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class RunLock:
    """The exclusive hold on one run: an flock on <run>/lock. The kernel drops it when the process dies (kill -9,
    a container restart), so it is never stale, unlike a pid in a file. Release it, or use it as a context manager."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Run:
    """One run folder. Create with `Run.create`, open with `Run.open` (which gives a Study for a study's folder)."""

    kind: ClassVar[str] = "run"

    def __init__(self, root: Path, run_id: str):
        self.id = check_run_id(run_id)
        self.root = root
        # Not resolved: a validated id is one plain name directly under root, and resolving would follow a link.
        self.path = root.resolve() / run_id
        self.repaired: list[str] = []  # what repair() did in this process: the runner says so when it restarts

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, config_yaml: str, name: str = "run", root: Path | None = None) -> "Run":
        root = (root or data_dir()).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(CREATE_TRIES):  # ids have a random part, but two runs may start in the same second
            run = cls(root, new_run_id(name))
            try:
                run.path.mkdir()
            except FileExistsError:
                continue
            run.set_status("running")  # before config.yaml: whatever list_runs shows has a status
            atomic_write_text(run.path / "config.yaml", config_yaml)
            return run
        raise CurloraError(f"Could not find a free run id in {root} after {CREATE_TRIES} tries; start the run again.")

    @classmethod
    def open(cls, run_id: str, root: Path | None = None) -> "Run":
        run = Run((root or data_dir()).resolve(), run_id)
        if run.path.is_symlink() or not (run.path / "config.yaml").is_file():
            raise CurloraError(f"No run {clip(run_id)} in {run.root}; `python -m curlora list` shows the runs there.")
        return run.entry()

    def entry(self) -> "Run":
        """This folder as the kind of entry it holds: a Study where study.yaml is, else a Run."""
        kind = Study if (self.path / STUDY_SETTINGS).is_file() else Run
        return self if type(self) is kind else kind(self.root, self.id)

    # -- executing -----------------------------------------------------------------------------------------
    def execute(self, loaded: Loaded, should_stop=None, on_event=None, device_call=None) -> str:
        """Run or resume this entry with what `loaded` holds (curlora/run/runner.py load_everything); returns its
        status. device_call(fn) runs one unit of work (None: here)."""
        try:
            run = _EXECUTORS[self.kind]
        except KeyError:
            raise RuntimeError(f"no executor registered for a {self.kind}: import the module that runs it") from None
        return run(self, loaded, should_stop=should_stop, on_event=on_event, device_call=device_call)

    def check_resumable(self):
        """(this run, its config as run) if it can be resumed (interrupted, cancelled, failed or damaged); else one
        sentence why not. What a crash or a full disk damaged is repaired here (Run.repair), under the run's lock."""
        self.check_free()  # RunBusy: another process trains it
        status = self.status()
        if status["status"] == "completed":
            raise CurloraError(f"Run {self.id} is already completed; start a new run to train again.")
        if status["status"] == "running":
            raise CurloraError(f"Run {self.id} is still running (pid {status.get('pid')}); stop it before resuming.")
        if status["status"] == "queued":
            raise CurloraError(f"Run {self.id} is already queued (in another app process on this run store); it runs "
                               "there when its turn comes.")
        cfg = self.config()
        with self.lock():
            self.repair()
        return self, cfg

    def remove(self) -> None:
        """Delete the run folder for good. A run folder that is itself a link is refused (that would delete what it
        points at); links inside are removed, never followed. Refused (RunBusy) while a process trains the run."""
        if self.path.is_symlink():
            raise CurloraError(f"{self.path} is a symbolic link, not a run folder; remove it by hand.")
        with self.lock():
            shutil.rmtree(self.path)

    # -- files -------------------------------------------------------------------------------------------
    @property
    def config_yaml(self) -> str:
        return (self.path / "config.yaml").read_text(encoding="utf-8")

    def config(self):
        """The experiment config as run (config.yaml parsed and checked; one sentence naming the file if bad)."""
        return ExperimentConfig.from_yaml(self.config_yaml, source=f"{self.id}/config.yaml")

    def write_stage(self, method: str, stage: int, write) -> Path:
        """The stage folder of `method` after task `stage`, written by `write(folder)` into `stage-k.partial` and
        renamed when complete: it appears whole or not at all (a kill mid-save leaves only the .partial, which
        exports and chat ignore and the next save replaces). A full disk is one sentence; the old stage stays."""
        final = self.adapter_dir(method, stage)
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            write(tmp)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(err):
                raise DiskFull(f"The disk is full: stage {stage} of {method} could not be saved in {self.path}; "
                               "free some space and resume the run (finished stages are intact).") from None
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final

    def adapter_dir(self, method: str, stage: int) -> Path:
        if not METHOD_NAME.match(method):
            raise CurloraError(f"{clip(method)} is not a valid method name.")
        return self.path / "adapters" / method / f"stage-{int(stage)}"

    def _read_json(self, name: str) -> tuple[dict | None, str | None]:
        """(the file's object or None, what is wrong with it or None); a missing file is not a problem here."""
        try:
            value = json.loads((self.path / name).read_bytes())
        except FileNotFoundError:
            return None, None
        except OSError as err:
            return None, f"{name} is unreadable ({err.strerror})"
        except ValueError:
            return None, f"{name} is not valid JSON (truncated or corrupted)"
        if not isinstance(value, dict):
            return None, f"{name} does not hold a JSON object"
        return value, None

    def log(self, kind: str, **fields) -> dict:
        """Append one event as one JSON line, in one write, and return it. A write that fails (a full disk) is undone
        by cutting the file back to its size before, so the log never keeps a torn line of its own making."""
        ev.check_kind(kind)
        event = {"t": round(time.time(), 3), "kind": kind, **fields}
        data = memoryview((json.dumps(event, default=float) + "\n").encode("utf-8"))
        try:
            fd = os.open(self.path / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    while data:  # one write, unless the kernel takes only part of it
                        data = data[os.write(fd, data):]
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(f"The disk is full: run {self.id} could not write its event log; free some space and "
                               "resume the run (finished stages are kept).") from None
            raise
        return event

    def events(self, since: int = 0) -> list[dict]:
        """Events from line `since` on (lines as in the file, torn ones counted). A torn or corrupted line (a crash
        mid-write) is skipped and reading goes on: the events logged after it are still there."""
        path = self.path / "events.jsonl"
        if not path.is_file():
            return []
        out = []
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if i >= since and (event := _parse_event(line)) is not None:
                    out.append(event)
        return out

    def read_events(self, offset: int = 0) -> tuple[list[dict], int]:
        """(events from byte `offset` on, the offset to pass next time), for polling: each call reads only what was
        appended since. Only complete lines are consumed: a last line still being written (no newline yet) is read
        by the next call, once whole. A file cut shorter than `offset` (a repair) is read on from its end."""
        try:
            f = open(self.path / "events.jsonl", "rb")
        except FileNotFoundError:
            return [], 0
        with f:
            offset = min(offset, os.fstat(f.fileno()).st_size)
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        events = [e for e in map(_parse_event, data[:end].splitlines()) if e is not None]
        return events, offset + end

    def write_metrics(self, metrics: dict) -> None:
        try:
            atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=1, default=float) + "\n")
        except DiskFull:
            raise DiskFull(f"The disk is full: run {self.id} could not save its metrics; free some space and resume "
                           "the run (finished stages are kept).") from None

    def record(self):
        """metrics.json as the typed record (curlora/measure/record.py); empty for a run with none (or a damaged one).
        The one place a stored metrics dict becomes a RunMetrics: readers take a Run or a RunMetrics."""
        from curlora.measure.record import RunMetrics

        return RunMetrics.from_json(self.metrics())

    def outline(self) -> Outline:
        """Tasks, methods and stages done per method, from metrics.json; before the first stage from its config."""
        m = self.record()
        done = {k: v.stages_done for k, v in m.methods.items()}
        tasks, methods = list(m.tasks), list(done)
        if not tasks:
            with contextlib.suppress(OSError, CurloraError, ValueError):
                cfg = self.config()
                tasks, methods = [t.name for t in cfg.tasks], [x.label for x in cfg.methods]
        return Outline(tasks=tasks, methods=methods,
                       progress=", ".join(f"{k} {v}" for k, v in done.items()) or "0")

    def metrics(self) -> dict:
        """metrics.json; {} before the first stage — and when it is damaged, so that one bad file never stops a
        listing or the app: problems() and status() say what is wrong, and resume repairs it."""
        return self._read_json("metrics.json")[0] or {}

    # -- damage ------------------------------------------------------------------------------------------
    def _read_status(self) -> tuple[dict, str | None]:
        body, problem = self._read_json("status.json")
        if problem:
            return {}, problem
        if body is None:
            return {}, "status.json is missing"
        if body.get("status") not in STATUSES:
            return {}, "status.json does not hold a known status"
        return body, None

    def _torn_event_lines(self, live: bool) -> list[int]:
        """Line numbers (from 1) of the torn or corrupted lines of events.jsonl. A last line without its newline is
        torn too, unless the run is `live` (a process trains it): then it is being written."""
        path = self.path / "events.jsonl"
        if not path.is_file():
            return []
        bad = []
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    if not live:
                        bad.append(n)
                elif _parse_event(line) is None:
                    bad.append(n)
        return bad

    def problems(self) -> list[str]:
        """What is damaged in this run folder, one short sentence per file; [] when nothing is."""
        out = [p for p in (self._read_status()[1], self._read_json("metrics.json")[1]) if p]
        try:
            bad = self._torn_event_lines(live=self.is_locked())
        except OSError as err:
            return [*out, f"events.jsonl is unreadable ({err.strerror})"]
        if len(bad) == 1:
            out.append(f"events.jsonl has a torn line at line {bad[0]}")
        elif bad:
            out.append(f"events.jsonl has {len(bad)} torn lines (the first at line {bad[0]})")
        return out

    def repair(self) -> list[str]:
        """Rebuild what can be rebuilt, before a resume (hold the lock): a damaged metrics.json is kept aside as
        metrics.json.damaged and the run restarts from the beginning (stage folders are overwritten as training
        saves them again); a torn event line is cut off; a damaged status.json is rewritten. Returns what was done."""
        done = []
        if self._read_json("metrics.json")[1]:
            os.replace(self.path / "metrics.json", self.path / "metrics.json.damaged")
            done.append("metrics.json was damaged (kept as metrics.json.damaged), so the run restarts from the "
                        "beginning")
        if self._torn_event_lines(live=False):
            done.append(self._cut_torn_events())
        if self._read_status()[1]:
            done.append("status.json was damaged and has been rewritten")
        if done:
            self.set_status("interrupted", "repaired: " + "; ".join(done))
            self.log(ev.REPAIR, message="; ".join(done))
        self.repaired = done
        return done

    def _cut_torn_events(self) -> str:
        path = self.path / "events.jsonl"
        data = path.read_bytes()
        *lines, tail = data.split(b"\n")  # tail: what follows the last newline (b"" when the file ends whole)
        good = [line for line in lines if _parse_event(line) is not None]
        if len(good) == len(lines):  # only the last line is torn: cut the file at the last complete line
            os.truncate(path, len(data) - len(tail))
            return "the torn last line of events.jsonl was cut off"
        atomic_write_text(path, b"".join(line + b"\n" for line in good).decode("utf-8"))
        return f"{len(lines) + bool(tail) - len(good)} torn line(s) were cut from events.jsonl"

    # -- who trains it -------------------------------------------------------------------------------------
    def lock(self) -> RunLock:
        """Take the run for training: one process at a time, held until released or the process dies. Raises
        RunBusy if another process (or another handle in this process) holds it."""
        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull(f"The disk is full: run {self.id} could not take its lock file; free some space and "
                               "resume the run.") from None
            raise
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 == LOCK_TRIES:
                    os.close(fd)
                    raise self._busy() from None
                time.sleep(LOCK_RETRY_S)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}
        with contextlib.suppress(OSError):  # for display only: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return RunLock(fd)

    def _lock_state(self) -> bool | None:
        """True if someone holds the lock, False if not, None if the run was never locked (no lock file)."""
        try:
            fd = os.open(self.path / "lock", os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two probes never see each other as a trainer
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # releases it at once if this probe got it
        return False

    def is_locked(self) -> bool:
        """Whether a process trains the run now. Tests without keeping the lock."""
        return bool(self._lock_state())

    def lock_holder(self) -> dict:
        """{pid, host, started} of the process that last took the lock (meaningful while is_locked())."""
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads((self.path / "lock").read_bytes())
            if isinstance(holder, dict):
                return holder
        return {}

    def _busy(self) -> RunBusy:
        h = self.lock_holder()
        return RunBusy(f"Run {self.id} is being trained by another process (pid {h.get('pid', '?')} on host "
                       f"{h.get('host', '?')}); stop it there first.")

    def check_free(self) -> None:
        """Raise RunBusy if a process trains the run now."""
        if self.is_locked():
            raise self._busy()

    # -- status ------------------------------------------------------------------------------------------
    def set_status(self, status: str, message: str = "", **extra) -> None:
        """Store the status. `running` records who runs it (pid, host, process start time); the lock is what says
        it still runs. `queued` records whose queue it waits in (`queued_by`: that process's pid, host and start
        time), so it reads `interrupted` once that process is gone. `extra` fields are stored beside (the job queue
        keeps its order in them across a shutdown). On a full disk one more try with only what status() needs,
        then DiskFull."""
        assert status in STATUSES, status
        body = {"status": status, "pid": os.getpid() if status == "running" else None,
                "updated": round(time.time(), 3), "message": message, **extra}
        if status == "running":
            body.update(host=socket.gethostname(), started=_process_started())
        elif status == "queued":
            body["queued_by"] = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_started()}
        path = self.path / "status.json"
        try:
            atomic_write_text(path, json.dumps(body) + "\n")
        except DiskFull:
            minimal = {k: body[k] for k in ("status", "pid", "message")}
            try:
                atomic_write_text(path, json.dumps(minimal) + "\n")
            except DiskFull:
                raise DiskFull(f"The disk is full: run {self.id} could not store its status ({status}); free some "
                               "space and resume the run (finished stages are kept).") from None

    def _trainer_alive(self, body: dict) -> bool:
        locked = self._lock_state()
        if locked is not None:
            return locked
        return _pid_alive(body.get("pid"), body.get("started"))  # a run from before the lock file, or not yet locked

    def status(self) -> dict:
        """The stored status, as it stands now: a `running` run that no process trains any more (its lock is free)
        reads `interrupted`; a damaged metrics.json or status.json reads `damaged`, saying what is wrong."""
        body, problem = self._read_status()
        if (problem or body["status"] == "running") and self._trainer_alive(body):
            return {"message": "", **body, "status": "running"}  # a damaged status.json is rewritten by its trainer
        problems = [p for p in (self._read_json("metrics.json")[1], problem) if p]
        if problems:
            return {"status": "damaged", "message": f"{'; '.join(problems)}; resume the run to repair it"}
        if body["status"] == "running":
            ended = self._last_end()
            if ended is not None and ended.get("status") == "failed" and ended.get("message"):
                # it ended failed but could not store that (a full disk): its log has the sentence
                return {**body, "status": "failed", "message": str(ended["message"])}
            return {**body, "status": "interrupted", "message": "the process running it stopped"}
        if body["status"] == "queued" and not _queue_alive(body.get("queued_by")):
            return {**body, "status": "interrupted",
                    "message": "it waited in the queue of an app that stopped; resume it to run it"}
        return body

    def _last_end(self, tail: int = 16384) -> dict | None:
        """The run_end event among the last `tail` bytes of the log, if the log ends with one (read from the end: a
        status check must not read a long log)."""
        try:
            fd = os.open(self.path / "events.jsonl", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            os.lseek(fd, max(0, size - tail), os.SEEK_SET)
            data = os.read(fd, tail)
        finally:
            os.close(fd)
        for line in reversed(data.decode("utf-8", errors="replace").splitlines()):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            return event if isinstance(event, dict) and event.get("kind") == "run_end" else None
        return None

    def request_cancel(self) -> None:
        (self.path / "cancel").touch()

    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()

    def clear_cancel(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "cancel").unlink()


# -- what leaves the machine ------------------------------------------------------------------------------------------
LIVE_FILES = ("lock", "cancel")  # the state of a process on this machine: never exported, packed or pushed
PARTIAL = ".partial"  # a stage folder being written (Run.save_stage): not a stage yet


def outgoing_files(folder: Path, within: Path | None = None, skip=(), max_bytes: int | None = None,
                   recursive: bool = True) -> list[Path]:
    """The files of a run folder (or of a folder inside one) that may leave the machine: an export, a download, a
    push or a study pack — every one of them copies through this (`copy_outgoing`). Sorted; never a symbolic link
    (followed or listed: a link would carry a file of the server's, not of the run), nor a LIVE_FILES or `.partial`
    entry, nor a name in `skip`, nor a file over `max_bytes`. `folder` itself, and every folder between `within`
    and it, must be no link, else nothing leaves. `recursive=False`: only the files directly in `folder`."""
    folder = Path(folder)
    chain = [folder] if within is None else [folder, *[p for p in folder.parents if within in (p, *p.parents)]]
    if any(p.is_symlink() for p in chain) or not folder.is_dir():
        return []
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_symlink() or entry.name in LIVE_FILES or entry.name in skip or entry.name.endswith(PARTIAL):
            continue
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                out += outgoing_files(Path(entry.path), skip=skip, max_bytes=max_bytes)
        elif entry.is_file(follow_symlinks=False) and (max_bytes is None or
                                                       entry.stat(follow_symlinks=False).st_size <= max_bytes):
            out.append(Path(entry.path))
    return out


def copy_outgoing(folder: Path, dest: Path, **which) -> list[Path]:
    """Copy `outgoing_files(folder, **which)` to `dest` (made, even when nothing is copied), keeping their paths
    under `folder` and their times; returns the copies."""
    folder, dest = Path(folder), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for f in outgoing_files(folder, **which):
        target = dest / f.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target, follow_symlinks=False)
        copies.append(target)
    return copies


def list_runs(root: Path | None = None) -> list[Run]:
    """The runs under root, newest first. Never raises for one bad folder: a link, a folder that cannot be read or
    holds no config.yaml is left out (a damaged one is listed; its status says what is wrong)."""
    root = (root or data_dir()).resolve()
    if not root.is_dir():
        return []
    runs = []
    for child in sorted(root.iterdir(), reverse=True):
        with contextlib.suppress(OSError, CurloraError):
            if not child.is_symlink() and child.is_dir() and (child / "config.yaml").is_file():
                runs.append(Run(root, child.name).entry())
    return runs


def runs_named(name: str, root: Path | None = None) -> list[Run]:
    """The runs (and studies) under root whose config names them `name` (run.name), newest first; one whose config
    cannot be read is not that run."""
    out = []
    for run in list_runs(root):
        with contextlib.suppress(OSError, CurloraError, ValueError):
            if run.config().run.name == name:
                out.append(run)
    return out


class EventCache:
    """The events of recently polled runs, kept in memory and topped up from where the last read ended, so a
    page polling every second costs the same at event 100 as at event 300,000 (re-reading the whole file took
    0.8 s at 100k events). A file that was replaced or cut shorter (a repair) is read again from the start."""

    def __init__(self, runs: int = 64):
        self._items: dict[str, tuple[tuple, int, list[dict]]] = {}
        self._lock = threading.Lock()
        self._runs = runs

    def events(self, run: Run) -> list[dict]:
        try:
            st = os.stat(run.path / "events.jsonl")
            ident = (st.st_ino, st.st_dev)
        except FileNotFoundError:
            return []
        with self._lock:
            known, offset, events = self._items.pop(str(run.path), ((), 0, []))
            if known != ident or st.st_size < offset:
                offset, events = 0, []
            new, offset = run.read_events(offset)
            events.extend(new)  # readers only read this list; it only grows
            self._items[str(run.path)] = (ident, offset, events)
            while len(self._items) > self._runs:
                self._items.pop(next(iter(self._items)))
            return events


class Study(Run):
    """A study's folder (curlora/run/study.py): the experiment in config.yaml, its grid in study.yaml, its record in
    study.json, and one ordinary run per point elsewhere in the store. It executes its points one after another."""

    kind: ClassVar[str] = "study"

    def study_json(self) -> dict:
        """study.json as stored; {} before it is written, and when it is damaged (a listing never breaks on it)."""
        return self._read_json(STUDY_FILE)[0] or {}

    def study_record(self):
        """study.json as the typed record (curlora/measure/study_record.py); empty before it is written."""
        from curlora.measure.study_record import StudyRecord

        return StudyRecord.of(self.study_json())

    def point_run_ids(self) -> list[str]:
        """The ids of the runs of this study's points made so far, in plan order."""
        return self.study_record().point_run_ids()

    def outline(self) -> Outline:
        """A study has no metrics.json of its own: its tasks from study.json (else its experiment), its methods from
        its grid, and its runs finished of its plan."""
        rec = self.study_record()
        tasks = list(rec.tasks)
        if not tasks:
            with contextlib.suppress(OSError, CurloraError, ValueError):
                tasks = [t.name for t in self.config().tasks]
        return Outline(tasks=tasks, methods=list(rec.settings.lrs),
                       progress=f"{rec.done} of {len(rec.plan)} runs" if rec.plan else "0")

    def check_resumable(self):
        """(this study, its experiment) if it can go on; its points check their own resume when their turn comes."""
        self.check_free()
        if self.status()["status"] == "completed":
            raise CurloraError(f"Study {self.id} is already completed; start a new study to run it again.")
        return self, self.config()


def resumable(run_id: str, root: Path | None = None) -> tuple[Run, ExperimentConfig]:
    """The entry (a Run or a Study) and its config as run, if it can be resumed; else one sentence why not."""
    return Run.open(run_id, root).check_resumable()
