"""The run store: one folder per run under the data directory; the UI and the CLI read only this.

    <data dir>/<run id>/
        config.yaml                      the exact experiment config, as run
        events.jsonl                     append-only: steps, losses, probes, stage boundaries, errors
        metrics.json                     everything finished so far, replaced atomically after every stage
        status.json                      running | completed | cancelled | failed | interrupted (+ pid, message)
        adapters/<method>/stage-<k>/     PEFT layout, one per finished stage
        cancel                           present = please stop (written by whoever asks, read by the runner)

Run ids are generated here and validated on every use: they can never name a path outside the data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from curlora.errors import CurloraError

DATA_DIR_ENV = "CURLORA_DATA_DIR"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a folder under adapters/: no dots, no separators
STATUSES = ("running", "completed", "cancelled", "failed", "interrupted")


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or "runs").resolve()


def new_run_id(name: str = "run") -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or ".." in run_id:
        raise CurloraError(
            f"{run_id!r} is not a valid run id: use letters, digits, '.', '_' and '-' only (as `list` shows them)."
        )
    return run_id


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, rename: readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """One run folder. Create with `Run.create`, open with `Run.open`."""

    def __init__(self, root: Path, run_id: str):
        self.id = check_run_id(run_id)
        self.root = root
        self.path = (root / run_id).resolve()
        if self.path.parent != root.resolve():
            raise CurloraError(f"Run id {run_id!r} points outside the data directory {root}.")

    # -- opening -----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, config_yaml: str, name: str = "run", root: Path | None = None) -> "Run":
        root = (root or data_dir()).resolve()
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root, new_run_id(name))
        run.path.mkdir()
        atomic_write_text(run.path / "config.yaml", config_yaml)
        run.set_status("running")
        return run

    @classmethod
    def open(cls, run_id: str, root: Path | None = None) -> "Run":
        run = cls((root or data_dir()).resolve(), run_id)
        if not (run.path / "config.yaml").is_file():
            raise CurloraError(f"No run {run_id!r} in {run.root}; `python -m curlora list` shows the runs there.")
        return run

    # -- files -------------------------------------------------------------------------------------------
    @property
    def config_yaml(self) -> str:
        return (self.path / "config.yaml").read_text(encoding="utf-8")

    def adapter_dir(self, method: str, stage: int) -> Path:
        if not METHOD_NAME.match(method):
            raise CurloraError(f"{method!r} is not a valid method name.")
        return self.path / "adapters" / method / f"stage-{int(stage)}"

    def log(self, kind: str, **fields) -> dict:
        """Append one event (one JSON line, flushed) and return it."""
        event = {"t": round(time.time(), 3), "kind": kind, **fields}
        with open(self.path / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=float) + "\n")
            f.flush()
        return event

    def events(self, since: int = 0) -> list[dict]:
        """Events from line `since` on; a torn last line (a crash mid-write) is skipped, not an error."""
        path = self.path / "events.jsonl"
        if not path.is_file():
            return []
        out = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i < since:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    break
        return out

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=1, default=float) + "\n")

    def metrics(self) -> dict:
        path = self.path / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    # -- status ------------------------------------------------------------------------------------------
    def set_status(self, status: str, message: str = "") -> None:
        assert status in STATUSES, status
        body = {"status": status, "pid": os.getpid() if status == "running" else None,
                "updated": round(time.time(), 3), "message": message}
        atomic_write_text(self.path / "status.json", json.dumps(body) + "\n")

    def status(self) -> dict:
        """The stored status; a `running` run whose process is gone is reported `interrupted`."""
        try:
            body = json.loads((self.path / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            body = {"status": "interrupted", "message": "status file missing or unreadable"}
        if body.get("status") == "running" and not _pid_alive(body.get("pid")):
            body = {**body, "status": "interrupted", "message": "the process running it stopped"}
        return body

    def request_cancel(self) -> None:
        (self.path / "cancel").touch()

    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()

    def clear_cancel(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "cancel").unlink()


def list_runs(root: Path | None = None) -> list[Run]:
    root = (root or data_dir()).resolve()
    if not root.is_dir():
        return []
    runs = []
    for child in sorted(root.iterdir(), reverse=True):
        if child.is_dir() and RUN_ID.match(child.name) and (child / "config.yaml").is_file():
            runs.append(Run(root, child.name))
    return runs
