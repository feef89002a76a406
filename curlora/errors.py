"""The one exception type for mistakes a user can make.

Anything a user can cause (a bad CSV, a model path that isn't a model, an adapter saved for another base
model) raises `CurloraError` with one sentence they can act on. The CLI prints it to stderr and exits 2; the UI
shows it as it is. Programming errors stay ordinary exceptions with tracebacks.
"""


import reprlib
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


# A value a user sent, as it may appear in a sentence: reprlib stops walking a nested value after a few items and
# levels, so even a YAML whose aliases expand to millions of nodes costs a few hundred characters of work here
# (a plain repr of an 8-level alias tree was 254 million characters).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple, _SHORT.maxset = 2, 4, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40
CLIP = 80  # characters of a rejected value shown in a sentence


def clip(value: object, width: int = CLIP) -> str:
    """repr(value) for an error sentence, bounded in work and cut to `width` characters (then '…')."""
    text = _SHORT.repr(value)
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: width * 2])
    return text if len(text) <= width else text[: width - 1] + "…"
