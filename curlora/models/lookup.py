"""Where a model name may be looked up: hosted, never as a path on the server. Torch-free, so the server wing can
set the rule without importing the loader (the CLI's store commands must not import torch)."""

from __future__ import annotations

import contextlib
import contextvars

# Hosted, a model name is never looked up as a path on the server: 'app.py' or 'runs' would otherwise answer "is a
# file" / "has no config.json", an oracle for what the server holds. A context (not a global) so that a hosted
# request and a local caller in the same process each get their own rule.
_HUB_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("curlora_hub_only", default=False)


@contextlib.contextmanager
def hub_only(on: bool = True):
    """Within this block (and the calls it makes), a model name is a bundled name or a hub id, never a folder."""
    token = _HUB_ONLY.set(bool(on))
    try:
        yield
    finally:
        _HUB_ONLY.reset(token)


def hub_only_on() -> bool:
    """Whether the caller is inside a `hub_only` block (a model name is then never a folder)."""
    return _HUB_ONLY.get()
