"""Whether this process may run a model repository's own Python code (`trust_remote_code`).

Only the `--trust-remote-code` flag of the app or the CLI turns it on; a config or a visitor never can. Kept apart
from curlora/models/loading.py so the hosting policy and the run store can ask without importing torch.
"""

from __future__ import annotations

from curlora.errors import CurloraError

_remote_code = {"allowed": False}


def allow_remote_code(allowed: bool = True) -> None:
    """Set by the `--trust-remote-code` command-line flag of the app or the CLI (and by nothing else): a config
    alone can never make this process run a model's own Python code."""
    _remote_code["allowed"] = bool(allowed)


def remote_code_allowed() -> bool:
    return _remote_code["allowed"]


def refuse_remote_code() -> CurloraError:
    return CurloraError("model.trust_remote_code would run the model's own Python code, and this process was not "
                        "started with --trust-remote-code; start it with that flag if you trust the code.")
