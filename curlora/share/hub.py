"""Push a run to the Hugging Face hub: `python -m curlora push RUN --repo NAME [--method M] [--merged]`, and the
Results tab's "Push to Hub".

One repo per run, with a folder per method and stage: the point of a run is the comparison, so its methods, their
card and its numbers travel together (one repo per method would split the accuracy matrices from each other).

    <repo>/README.md                      the model card (curlora/share/model_card.py)
    <repo>/adapters/<method>/stage-<k>/   each finished stage, PEFT layout (only stages metrics.json vouches for)
    <repo>/merged/<method>/               with --merged: the last stage folded into the base model
    <repo>/metrics.json, results.md, config.yaml

Loading one: `PeftModel.from_pretrained(base, REPO, subfolder="adapters/lora/stage-3")`. The token comes from the
caller (the visitor's Hugging Face login on a Space), else HF_TOKEN or `hf auth login`; it is never written into a run
folder or a staged file, never printed, and no error sentence carries what the hub answered (a hostile mirror may
echo the token back). Files are staged in a temporary folder outside the run store and removed afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from curlora.errors import CurloraError, clip
from curlora.measure.record import RunMetrics
from curlora.methods.registry import method as registered
from curlora.run.store import Run
from curlora.share.export import copy_finished_adapters, export_merged, table
from curlora.share.model_card import model_card

REPO = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _selected(run: Run, m: RunMetrics, only: str | None) -> RunMetrics:
    """The record with only the methods to push: `only`, or every method that keeps an adapter."""
    if only:
        if only not in m.methods:
            raise CurloraError(f"Run {run.id} has no method {clip(only)}; its methods: {', '.join(m.methods) or 'none'}.")
        if not registered(m.methods[only].kind).has_adapter:
            raise CurloraError(f"{only} keeps no adapter (it is a {m.methods[only].kind} baseline); push an adapter "
                               "method instead.")
    keep = {k: v for k, v in m.methods.items()
            if (k == only if only else registered(v.kind).has_adapter)}
    return dataclasses.replace(m, methods={k: m.methods[k] for k in keep})


def stage(run: Run, dest: Path, repo: str, only: str | None = None, merged: bool = False,
          config_yaml: str | None = None, progress=None, public_path=None) -> list[str]:
    """Write what would be pushed into `dest` (an empty folder); returns the paths in it. `config_yaml` is the config
    as the caller may see it and `public_path` turns a server path into what they may see (hosted: no server
    paths; curlora/serve/hosting.py)."""
    report = progress or (lambda fraction, text: None)
    m = run.record()
    if not m:
        raise CurloraError(f"Run {run.id} has no finished stage to push yet.")
    picked = _selected(run, m, only)
    config_yaml = config_yaml if config_yaml is not None else run.config_yaml
    report(0.05, "copying the adapters")
    if not copy_finished_adapters(run, picked, dest / "adapters"):
        raise CurloraError(f"Run {run.id} has no saved adapter{f' of {only}' if only else ''} to push yet.")
    if merged:
        report(0.15, "merging each method's last stage into the base model")
        export_merged(run, picked, dest / "merged")
    report(0.4, "writing the model card")
    (dest / "README.md").write_text(model_card(run, m, config_yaml, repo, methods=list(picked.methods),
                                               merged=merged), encoding="utf-8")
    stored = run.metrics()
    if public_path is not None and (stored.get("probe") or {}).get("source"):
        stored["probe"]["source"] = public_path(stored["probe"]["source"])
    (dest / "metrics.json").write_text(json.dumps(stored, indent=1) + "\n", encoding="utf-8")
    (dest / "results.md").write_text(table(run) + "\n", encoding="utf-8")
    (dest / "config.yaml").write_text(config_yaml, encoding="utf-8")
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def _failure(err: BaseException, repo: str) -> CurloraError:
    """One sentence for what went wrong on the way to the hub, made from the status code or the kind of failure
    only: the hub's own message (which may quote the request) never reaches the user."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    where = endpoint()
    if isinstance(err, OfflineModeIsEnabled):
        return CurloraError("Pushing needs the network, and HF_HUB_OFFLINE=1 is set here; unset it and push again.")
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        code = err.response.status_code
        if code == 401:
            return CurloraError(f"The hub at {where} refused the token (401 Unauthorized): set a valid HF_TOKEN or "
                                "log in again with `hf auth login`, then push again.")
        if code == 403:
            return CurloraError(f"The token may not write to {repo} (403 Forbidden): use a token with write access "
                                "to that namespace, or push to your own.")
        if code == 404:
            return CurloraError(f"The hub at {where} has no namespace for {repo} (404); check the repo name.")
        return CurloraError(f"The hub at {where} answered {code} while pushing to {repo}; try again later.")
    text = f"{type(err).__name__} {err}".lower()
    why = "the connection was refused" if "refused" in text else "it timed out" if "timed out" in text or \
        "timeout" in text else "the network failed"
    return CurloraError(f"Could not reach the hub at {where} ({why}); check the network (and HF_ENDPOINT) and push "
                        "again.")


def push(run: Run, repo: str, only: str | None = None, merged: bool = False, token: str | None = None,
         private: bool = False, config_yaml: str | None = None, progress=None, public_path=None) -> str:
    """Create `repo` if needed and upload the run's adapters, card and numbers in one commit; returns its URL."""
    from huggingface_hub import HfApi, get_token

    repo = (repo or "").strip()
    if not REPO.match(repo) or ".." in repo:
        raise CurloraError(f"{clip(repo[:100])} is not a hub repo name: use NAME or OWNER/NAME (letters, digits, '-', "
                           "'_' and '.').")
    report = progress or (lambda fraction, text: None)
    token = token or get_token()
    if not token:
        raise CurloraError("No Hugging Face token: set HF_TOKEN or log in with `hf auth login` (on a Space: sign in "
                           "with Hugging Face), then push again.")
    folder = Path(tempfile.mkdtemp(prefix="curlora-push-"))
    try:
        files = stage(run, folder, repo, only, merged, config_yaml, progress, public_path)
        api = HfApi(endpoint=endpoint(), token=token)
        try:
            report(0.5, f"creating {repo}")
            created = api.create_repo(repo, private=private or None, exist_ok=True)
            report(0.6, f"uploading {len(files)} files")
            api.upload_folder(folder_path=str(folder), repo_id=created.repo_id or repo,
                              commit_message=f"CURLoRA Studio run {run.id}")
        except CurloraError:
            raise
        except Exception as err:  # any failure on the way: one sentence, never the hub's message
            raise _failure(err, repo) from None
        report(1.0, "pushed")
        return str(created)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
