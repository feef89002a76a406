"""The one exception type for mistakes a user can make.

Anything a user can cause (a bad CSV, a model path that isn't a model, an adapter saved for another base
model) raises `CurloraError` with one sentence they can act on. The CLI prints it to stderr and exits 2; the UI
shows it as it is. Programming errors stay ordinary exceptions with tracebacks.
"""


class CurloraError(Exception):
    """A problem the user can fix; `str(err)` is a complete, actionable sentence."""
