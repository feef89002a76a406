"""The one exception type for mistakes a user can make.

Anything a user can cause (a bad CSV, a model path that isn't a model, an adapter saved for another base
model) raises `CurloraError` with one sentence they can act on. The CLI prints it to stderr and exits 2; the UI
shows it as it is. Programming errors stay ordinary exceptions with tracebacks.
"""


from collections.abc import Callable


class CurloraError(Exception):
    """A problem the user can fix; `str(err)` is a complete, actionable sentence."""


class Cancelled(Exception):
    """Raised inside a loop when the run was asked to stop; finished stages are kept."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise Cancelled if `should_stop` says so: training, scoring, perplexity, the probes and loading call this
    between their batches, so Stop takes effect within one batch wherever a run is."""
    if should_stop is not None and should_stop():
        raise Cancelled()
