"""Who may do what when the app is hosted: owners, where a visitor's files may come from, and what errors may say.

    policy = Policy.detect()                 # hosted when SPACE_ID or CURLORA_MULTI_USER=1 is set (or launch() says so)
    owner = owner_key("user", "alice")      # a login, else the browser's workspace token; stored hashed, never shown
    policy.admit(cfg, root, owner)           # before anything is read: sources resolved; no server path, no remote
                                             # code, within limits (Policy.local() admits the CLI's runs)
    policy.keep_upload(path, owner)          # validated, content-addressed, in the owner's own area

Hosted, the app serves visitors who do not trust each other. A visitor then
- never runs code on the server: `trust_remote_code` is refused (locally it needs `--trust-remote-code` on the command
  line of the process, never a YAML or UI field alone), and a model is a preset, the bundled model or a hub id — a
  folder on the server is refused, so uploaded files can never be loaded as a model;
- never reads a server file: task and probe files are the visitor's own uploads or the bundled assets;
- sees only their own runs (JobManager filters by owner; another's run id reads exactly as an unknown one);
- gets error sentences without absolute paths (`public_message`): no data directory, no upload path.
Locally on loopback with no login, the one user owns everything, as before.

No gradio here: the app, the CLI and the tests share this policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar
from glob import escape as glob_escape
from pathlib import Path

from curlora.errors import CurloraError, clip
from curlora.models.remote_code import refuse_remote_code, remote_code_allowed
from curlora.paths import ASSETS, BUNDLED, OWNERS_DIR, UPLOAD, bundled_path, resolve_bundled, sources, within
from curlora.serve.limits import Limits

MULTI_USER_ENV = "CURLORA_MULTI_USER"
LOCAL = "local"  # the owner of everything when the app is not hosted
EXAMPLES = "examples"  # runs anyone may read and nobody may change (curated by the host with the CLI)
OWNER_KEY = re.compile(r"^[0-9a-f]{32}$")


def hosted_from_env() -> bool:
    """On a Hugging Face Space (SPACE_ID is set there) or when asked (CURLORA_MULTI_USER=1, as tests do)."""
    flag = os.environ.get(MULTI_USER_ENV, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    return bool(os.environ.get("SPACE_ID")) or flag in ("1", "true", "yes", "on")


def owner_key(kind: str, value: str) -> str:
    """The stored form of an identity: 32 hex digits of sha256, so a run folder never holds a token or a name."""
    if not value:
        raise CurloraError("An owner needs an identity (a login, a workspace token or a session).")
    return hashlib.sha256(f"curlora-owner\0{kind}\0{value}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Upload:
    """One kept upload of a visitor: its name, its size in bytes, its content digest (the handle to delete it by)
    and the runs of theirs that name it."""

    name: str
    size: int
    digest: str
    used_by: list[str]


ANONYMOUS = "anonymous"  # the pool every caller who is not signed in draws from
PROXY_HOPS_ENV = "CURLORA_PROXY_HOPS"  # trusted proxies in front of the app that append to X-Forwarded-For


@dataclass(frozen=True)
class Client:
    """Who pays for a request: the key its allowances (runs queued, chat replies, device actions, turns of the
    device) are counted under. It is not who owns a run (that is the owner key, per browser): a visitor who opens
    four sessions owns four task lists but still has one allowance. `pooled`: not signed in, so it also draws from
    the one pool all such callers share (Limits.runs_anonymous, chat_per_minute_anonymous,
    device_actions_per_hour_anonymous)."""

    key: str
    pooled: bool = False

    @classmethod
    def of(cls, who: "Client | str | None") -> "Client":
        """A Client from an owner key (the CLI, tests, a server that is not hosted: the owner pays for itself)."""
        return who if isinstance(who, Client) else cls(who or LOCAL)


def client_of(user_key: str | None, forwarded_for: str | None, behind_proxy: bool) -> Client:
    """The paying identity of a request. A signed-in user (their owner key) has an allowance of their own. Anyone
    else is pooled: behind the Space's proxy (SPACE_ID set) by the address the proxy forwards, the entry it appended
    to X-Forwarded-For (CURLORA_PROXY_HOPS from the right, default 1: earlier entries are whatever the caller sent);
    elsewhere the header is the caller's own word, so all of them are one key. A new gradio session, workspace
    token or MCP connection changes none of these."""
    if user_key:
        return Client(user_key)
    if behind_proxy and forwarded_for:
        hops = os.environ.get(PROXY_HOPS_ENV, "").strip()
        hops = int(hops) if hops.isdigit() and int(hops) > 0 else 1
        entries = [e.strip() for e in str(forwarded_for)[:1000].split(",")]
        address = entries[-hops] if len(entries) >= hops else ""
        if address:
            return Client(owner_key("address", address), pooled=True)
    return Client(ANONYMOUS, pooled=True)


def behind_space_proxy() -> bool:
    """A Hugging Face Space (SPACE_ID set) is reached only through its proxy, which sets X-Forwarded-For."""
    return bool(os.environ.get("SPACE_ID"))


@dataclass
class Policy:
    """What the server allows. `hosted` decides; `limits` are the host's numbers (curlora/serve/limits.py)."""

    hosted: bool = False
    limits: object = None
    _uses: dict = field(default_factory=dict, repr=False)  # (kind, client key) -> times of recent uses
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _serving: ClassVar[Policy | None] = None  # the policy of the app this process serves (one app a process)

    def __post_init__(self):
        if self.limits is None:
            self.limits = Limits.load(self.hosted)

    @classmethod
    def detect(cls) -> "Policy":
        return cls(hosted=hosted_from_env())

    def serve(self) -> Policy:
        """Make this the policy of the app this process serves (build_app calls it; one app a process): what an
        error sentence may say to a visitor follows it (`Policy.serving()`, `public`), hosted from the start or once
        launch() makes it so."""
        Policy._serving = self
        return self

    @staticmethod
    def serving() -> Policy | None:
        return Policy._serving

    def public(self, text: str) -> str:
        """A sentence as a visitor may read it: hosted, without absolute paths (public_message); locally as it is."""
        return public_message(text) if self.hosted else text

    @classmethod
    def local(cls) -> "Policy":
        """The CLI's: one user on their own machine, who owns everything; no host limits; remote code only in a
        process started with --trust-remote-code."""
        return cls(hosted=False, limits=Limits())

    def become_hosted(self) -> None:
        """launch() found the app reachable beyond this machine: hosted rules and the hosted default limits."""
        if not self.hosted:
            self.hosted, self.limits = True, Limits.load(True)

    # -- owners ---------------------------------------------------------------------------------------------
    def visible(self, run_owner: str | None, owner: str | None) -> bool:
        """May `owner` read a run owned by `run_owner`? Locally everyone reads everything."""
        if not self.hosted:
            return True
        return run_owner == EXAMPLES or (owner is not None and run_owner == owner)

    def may_change(self, run_owner: str | None, owner: str | None) -> bool:
        """May `owner` stop, resume, re-run or delete it? Shared examples are read-only when hosted."""
        if not self.hosted:
            return True
        return owner is not None and run_owner == owner

    # -- files ----------------------------------------------------------------------------------------------
    @staticmethod
    def owner_dir(root: Path, owner: str | None) -> Path:
        key = owner or LOCAL
        if key != LOCAL and not OWNER_KEY.match(key):
            raise CurloraError("Not a valid owner.")
        return root / OWNERS_DIR / key

    def upload_dir(self, root: Path, owner: str | None) -> Path:
        return self.owner_dir(root, owner) / "uploads"

    def keep_upload(self, src: str | os.PathLike, root: Path, owner: str | None, validate=None,
                    stored: int | None = None) -> Path:
        """Keep an upload for runs to use (and resume after a restart): checked by `validate(path)` first (a
        refused file is never kept), then stored once per content per owner, under the name it first came with.
        `stored`: the bytes the owner stores already (runs and uploads); a kept upload counts against their share."""
        src = Path(src)
        limit = getattr(self.limits, "upload_mb", None)
        size = src.stat().st_size
        if limit is not None and size > limit * 1e6:
            raise CurloraError(f"Upload size: '{src.name}' is {size / 1e6:.1f} MB, the limit here is {limit:g} MB; "
                               "upload a smaller file (fewer rows).")
        if validate is not None:
            validate(src)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        folder = self.upload_dir(root, owner) / digest
        existing = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()] if folder.is_dir() else []
        if existing:
            return existing[0]
        share = getattr(self.limits, "store_mb_per_visitor", None)
        if share is not None and stored is not None and stored + size > share * 1e6:
            raise CurloraError(f"Stored runs per visitor: yours would take {(stored + size) / 1e6:.1f} MB with "
                               f"'{src.name}', the limit here is {share:g} MB; delete some of your runs or uploads "
                               "(Tasks tab, Your uploads) first.")
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name).strip("._") or "upload.csv"
        dest = folder / name
        tmp = folder / f".{name}.partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return dest

    def uploads_used(self, config: str | dict) -> set[Path]:
        """The kept uploads a config names (task and probe files under some owner's uploads folder); `config` is a
        stored config.yaml or a config's `to_dict()` (the same mapping, unparsed)."""
        import yaml

        try:
            data = (yaml.safe_load(config) if isinstance(config, str) else config) or {}
        except yaml.YAMLError:
            return set()
        files = [t.get(k) for t in data.get("tasks") or [] if isinstance(t, dict) for k in ("train_file", "eval_file")]
        files.append((data.get("evaluation") or {}).get("probe_text"))
        return {Path(f).resolve() for f in files if isinstance(f, str) and f"/{OWNERS_DIR}/" in f}

    PAYER_FILE = "payer"  # <owner dir>/payer: the client that last paid for this owner's runs or uploads

    def note_payer(self, root: Path, owner: str | None, client: Client | None) -> None:
        """Remember which client pays for `owner` (hosted), so that a client's share counts all its owners."""
        if not self.hosted or client is None or owner is None:
            return
        folder = self.owner_dir(root, owner)
        path = folder / self.PAYER_FILE
        with contextlib.suppress(OSError):
            if path.is_file() and path.read_text(encoding="utf-8").strip() == client.key:
                return
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(client.key + "\n", encoding="utf-8")

    def owners_paid_by(self, root: Path, client: Client) -> set[str]:
        """The owners whose last paying client is `client`."""
        found = set()
        base = root / OWNERS_DIR
        if not base.is_dir():
            return found
        for folder in base.iterdir():
            path = folder / self.PAYER_FILE
            with contextlib.suppress(OSError):
                if not path.is_symlink() and path.read_text(encoding="utf-8").strip() == client.key:
                    found.add(folder.name)
        return found

    def list_uploads(self, root: Path, owner: str | None, runs=()) -> list[Upload]:
        """The owner's kept uploads, newest first, each with its size and the runs (of `runs`) that name it."""
        folder = self.upload_dir(root, owner)
        if not folder.is_dir():
            return []
        users: dict[Path, list[str]] = {}
        for run in runs:
            for path in self.uploads_used(run.config_yaml):
                users.setdefault(path, []).append(run.id)
        found = []
        for path in folder.glob("*/*"):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                st = path.stat()
                found.append((st.st_mtime, Upload(path.name, st.st_size, path.parent.name,
                                                  sorted(users.get(path.resolve(), [])))))
        return [u for _, u in sorted(found, key=lambda t: t[0], reverse=True)]

    def delete_upload(self, root: Path, owner: str | None, digest: str, runs=(), busy=()) -> Upload:
        """Delete one kept upload (by the digest `list_uploads` gives); refused while a run in `busy` (queued or
        training) names it. Finished runs that named it keep their numbers but can no longer be resumed."""
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{16}", digest)):
            raise CurloraError("Pick one of your uploads to delete (the Tasks tab lists them).")
        match = next((u for u in self.list_uploads(root, owner, runs) if u.digest == digest), None)
        if match is None:
            raise CurloraError("You have no such upload; the Tasks tab lists yours.")
        waiting = [r for r in match.used_by if r in set(busy)]
        if waiting:
            raise CurloraError(f"Upload '{match.name}' is used by run {waiting[0]}, which is queued or training; "
                               "stop it first, then delete the upload.")
        path = self.upload_dir(root, owner) / digest / match.name
        path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        return match

    def forget_uploads(self, paths: set[Path], root: Path, owner: str | None) -> None:
        """Delete kept uploads no run uses any more (only inside the owner's own uploads folder)."""
        folder = self.upload_dir(root, owner).resolve()
        for path in paths:
            if within(path, folder) and path.is_file() and not path.is_symlink():
                path.unlink()
                with contextlib.suppress(OSError):
                    path.parent.rmdir()

    # A hosted visitor never sees a server path, so a config shown to them names its files by kind instead:
    # 'upload:sent.csv' (their own upload of that name) and 'bundled:tasks/reviews/train.csv' (under assets/).
    def public_path(self, value: str | None, root: Path) -> str | None:
        if not value or not Path(value).is_absolute():
            return value
        real = Path(value).resolve()
        if within(real, ASSETS.resolve()):
            return f"{BUNDLED}{real.relative_to(ASSETS.resolve()).as_posix()}"
        if within(real, (root / OWNERS_DIR).resolve()):
            return f"{UPLOAD}{real.name}"
        return real.name

    def resolve_path(self, value: str | None, root: Path, owner: str | None) -> str | None:
        """'upload:NAME' → the owner's newest upload of that name; 'bundled:REL' → assets/REL; else unchanged."""
        if not value:
            return value
        if value.startswith(BUNDLED):  # hosted, check_source then insists it stays inside assets/
            return str(bundled_path(value)) if self.hosted else resolve_bundled(value)
        if value.startswith(UPLOAD):
            name = value[len(UPLOAD):]
            folder = self.upload_dir(root, owner)
            found = sorted((p for p in folder.glob(f"*/{glob_escape(name)}") if p.is_file() and not p.is_symlink()),
                           key=lambda p: p.stat().st_mtime) if folder.is_dir() and "/" not in name else []
            if not found:
                raise CurloraError(f"There is no upload named '{name[:100]}' of yours; upload it on the Tasks tab "
                                   "first.")
            return str(found[-1])
        return value

    def resolve_sources(self, cfg, root: Path, owner: str | None) -> None:
        for obj, key, _ in sources(cfg):
            setattr(obj, key, self.resolve_path(getattr(obj, key), root, owner))

    def public_yaml(self, cfg, root: Path) -> str:
        """The config as a visitor may see it (hosted: no server path in it)."""
        if not self.hosted:
            return cfg.to_yaml()
        import copy

        shown = copy.deepcopy(cfg)
        for obj, key, _ in sources(shown):
            setattr(obj, key, self.public_path(getattr(obj, key), root))
        return shown.to_yaml()

    def check_source(self, value: str | None, what: str, root: Path, owner: str | None) -> None:
        """Hosted: a task or probe file must be the visitor's own upload or a bundled asset, never a server path.
        The sentence is the same whether or not the path exists, so it tells nothing about the server."""
        if not self.hosted or not value:
            return
        path = Path(value)
        real = path.resolve() if path.is_absolute() else None
        allowed = [self.upload_dir(root, owner).resolve(), ASSETS.resolve()]
        if real is None or not any(within(real, a) for a in allowed) or not real.is_file():
            raise CurloraError(f"{what}: only your own uploads and the bundled demo files can be used here; upload "
                               f"'{path.name}' on the Tasks tab instead.")

    def check_model(self, name: str, trust_remote_code: bool = False) -> None:
        """Hosted: the bundled model, a preset or a hub id, never a folder on the server; remote code never runs.
        Locally: remote code only in a process started with --trust-remote-code."""
        if trust_remote_code and (self.hosted or not remote_code_allowed()):
            if self.hosted:
                raise CurloraError("model.trust_remote_code is not allowed on this server: it would run the "
                                   "model's own Python code; pick a model that transformers supports natively.")
            raise refuse_remote_code()
        if not self.hosted:
            return
        from curlora.models.loading import BUNDLED_ALIASES, HUB_ID, bundled_models, looks_like_path
        from curlora.models.presets import load_model_presets

        name = (name or "").strip()
        if name in bundled_models() or name in BUNDLED_ALIASES or name in load_model_presets():
            return
        if name.lower().endswith(".gguf"):
            raise CurloraError("model.name: a .gguf file on the server cannot be used here; pick a preset (SmolLM2 "
                               "is one) or a hub id.")
        if looks_like_path(name) or not HUB_ID.match(name):
            raise CurloraError(f"model.name: {clip(name)} is not a preset, the bundled model or a hub id (owner/name); "
                               "folders on the server cannot be used here.")

    def admit(self, cfg, root: Path, owner: str | None) -> None:
        """The one admission of a new run's config, before any file is read or anything is written: its sources
        resolved in place ('upload:NAME' to the owner's newest upload, 'bundled:REL' to assets/REL), then all this
        server refuses (check_config). The loader (curlora/run/runner.py load_everything) then only loads."""
        self.resolve_sources(cfg, root, owner)
        self.check_config(cfg, root, owner)

    def check_config(self, cfg, root: Path, owner: str | None) -> None:
        """Everything about a config this server refuses, before any file is read or anything is written."""
        if cfg.run.log_with:
            if self.hosted:
                raise CurloraError("run.log_with: experiment trackers are off on this server (they would log to "
                                   "the host's accounts); remove run.log_with, or run it on your own machine.")
            from curlora.run.trackers import check_installed

            check_installed(cfg.run.log_with)
        self.check_model(cfg.model.name, cfg.model.trust_remote_code)
        for obj, key, what in sources(cfg):
            self.check_source(getattr(obj, key), what, root, owner)
        if self.limits is not None:
            self.limits.check_experiment(cfg)

    # -- allowances in time: chat replies, device actions ---------------------------------------------------------
    def allow_chat(self, client: Client | str | None, now: float | None = None) -> None:
        """At most `limits.chat_per_minute` replies per client in any 60 s, and for callers who are not signed
        in at most `chat_per_minute_anonymous` together (a fresh session or MCP connection is the same client)."""
        self._allow("chat", client, 60.0, "Chat replies per minute", "chat_per_minute", "chat_per_minute_anonymous",
                    now)

    def allow_device(self, client: Client | str | None, now: float | None = None) -> None:
        """At most `limits.device_actions_per_hour` actions that hold the device outside the run queue (a time
        estimate, an evaluation, a stage or merged export, a push with merged models, a sampling inspection) per
        client in any hour, and for callers who are not signed in `device_actions_per_hour_anonymous` together."""
        self._allow("device", client, 3600.0, "Time estimates, evaluations and exports per hour",
                    "device_actions_per_hour", "device_actions_per_hour_anonymous", now)

    def _allow(self, kind: str, client: Client | str | None, window: float, what: str, limit_field: str,
               pooled_field: str, now: float | None) -> None:
        """Count one use of `kind` for `client` in a sliding window of `window` seconds, against its own limit
        and, not signed in, the pool's; refused (nothing counted) where either is full, with the wait."""
        client = Client.of(client)
        checks = [(client.key, getattr(self.limits, limit_field, None), what, "")]
        if client.pooled and self.hosted:
            checks.append((ANONYMOUS + "\0pool", getattr(self.limits, pooled_field, None),
                           f"{what} of visitors who are not signed in", " (or sign in for an allowance of your own)"))
        now = time.monotonic() if now is None else now
        with self._lock:
            queues = []
            for key, limit, said, hint in checks:
                if limit is None:
                    continue
                recent = self._uses.setdefault((kind, key), deque())
                while recent and now - recent[0] >= window:
                    recent.popleft()
                if len(recent) >= limit:
                    wait = window - (now - recent[0])
                    raise CurloraError(f"{said}: the limit here is {limit:g}; try again in {_wait_text(wait)}{hint}.")
                queues.append(recent)
            for recent in queues:
                recent.append(now)


def _wait_text(seconds: float) -> str:
    """'50 s' under two minutes, else whole minutes: '12 min'."""
    return f"{max(1, round(seconds))} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"


_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`,;()<>]+/)*([^\s'\"`,;()<>/]*)")


def public_message(text: str) -> str:
    """An error sentence fit for a visitor: every absolute path becomes its last part ('/data/runs/.owners/…/x.csv'
    → 'x.csv'), so no sentence names the data directory, an upload folder or the install path."""
    return _ABSOLUTE.sub(lambda m: m.group(1) or "(server path)", text)


# -- the owner of a run: one file in its folder, the hashed key -------------------------------------------------
def write_owner(run_path: Path, owner: str | None) -> None:
    (Path(run_path) / "owner").write_text((owner or LOCAL) + "\n", encoding="utf-8")


def read_owner(run_path: Path) -> str | None:
    """The run's owner key; None for a run stored before owners existed (nobody's when hosted, the user's locally)."""
    try:
        text = (Path(run_path) / "owner").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if text in (LOCAL, EXAMPLES) or OWNER_KEY.match(text) else None


SHARED_FROM = "owner.before-shared"  # who owned a run before the host made it a shared example


def share(run_path: Path) -> None:
    """Make a run a shared example, remembering its owner so that `unshare` gives it back to them."""
    run_path = Path(run_path)
    before = read_owner(run_path)
    if before != EXAMPLES:
        (run_path / SHARED_FROM).write_text((before or LOCAL) + "\n", encoding="utf-8")
    write_owner(run_path, EXAMPLES)


def unshare(run_path: Path) -> str:
    """Give a shared example back to the owner it had before `share` (the local user if none was recorded)."""
    run_path = Path(run_path)
    before = read_owner_file(run_path / SHARED_FROM) or LOCAL
    write_owner(run_path, before)
    with contextlib.suppress(OSError):
        (run_path / SHARED_FROM).unlink()
    return before


def read_owner_file(path: Path) -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text if text in (LOCAL, EXAMPLES) or OWNER_KEY.match(text) else None


class LoginGuard:
    """Backoff for wrong logins, per paying client (the forwarded address on a Space): the first FREE wrong tries
    cost nothing, then each one locks that client out for twice as long as the one before (1 s, 2 s, 4 s, … up to
    MAX_WAIT), so guessing a password over MCP goes from a hundred tries in 8 s to about a dozen a minute at best.
    A right login clears the count."""

    FREE = 5
    MAX_WAIT = 300.0

    def __init__(self):
        self._tries: dict[str, tuple[int, float]] = {}  # client key -> (wrong tries, locked until)
        self._lock = threading.Lock()

    def check(self, client: Client | str | None, now: float | None = None) -> None:
        key = Client.of(client).key
        now = time.monotonic() if now is None else now
        with self._lock:
            _, until = self._tries.get(key, (0, 0.0))
        if now < until:
            raise CurloraError(f"Too many wrong logins from here: try again in {max(1, round(until - now))} s.")

    def failed(self, client: Client | str | None, now: float | None = None) -> None:
        key = Client.of(client).key
        now = time.monotonic() if now is None else now
        with self._lock:
            count, _ = self._tries.get(key, (0, 0.0))
            count += 1
            wait = 0.0 if count <= self.FREE else min(self.MAX_WAIT, 2.0 ** (count - self.FREE - 1))
            if len(self._tries) > 100_000:
                self._tries.clear()
            self._tries[key] = (count, now + wait)

    def passed(self, client: Client | str | None) -> None:
        with self._lock:
            self._tries.pop(Client.of(client).key, None)
