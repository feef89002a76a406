"""Prompt templates: how a row becomes the text the model reads before its label word.

A template is a Python format string whose only fields are `{text}` and, for pair tasks, `{text_pair}`; literal
braces are written `{{` and `}}`. Anything else (`{0}`, `{text.upper}`, `{text!r}`) is refused when the task is
loaded, so rendering a template can never reach into an object.
"""

from __future__ import annotations

import string

from curlora.data.csvfile import show
from curlora.errors import CurloraError

DEFAULT_TEMPLATE = "Text: {text}\nLabel:"
DEFAULT_PAIR_TEMPLATE = "Text 1: {text}\nText 2: {text_pair}\nLabel:"


def default_template(pair: bool) -> str:
    return DEFAULT_PAIR_TEMPLATE if pair else DEFAULT_TEMPLATE


def check_template(template: str, *, pair: bool, owner: str) -> str:
    """Return `template` if it is usable for a single-text (or pair) task, else raise with what to change.

    `owner` names where the template came from ("task 'sst2'", "preset 'mrpc'") for the message.
    """
    if not isinstance(template, str) or not template.strip():
        raise CurloraError(f"{owner}: the prompt template is empty; it needs at least the {{text}} placeholder.")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise CurloraError(f"{owner}: the prompt template has a stray brace ({err}); write literal braces as "
                           "{{ and }}.") from None
    fields = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in ("text", "text_pair") or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise CurloraError(f"{owner}: the prompt template has an unknown placeholder {show(shown)}; only {{text}} "
                               "and {text_pair} are filled in (write literal braces as {{ and }}).")
        fields.add(name)
    if "text" not in fields:
        raise CurloraError(f"{owner}: the prompt template has no {{text}} placeholder, so the model would never "
                           "see the row's text; add {text}.")
    if pair and "text_pair" not in fields:
        raise CurloraError(f"{owner}: this is a text-pair task but the prompt template has no {{text_pair}} "
                           "placeholder; add {text_pair} where the second text goes.")
    if not pair and "text_pair" in fields:
        raise CurloraError(f"{owner}: the prompt template uses {{text_pair}} but the task has no text pair "
                           "column; map one or remove the placeholder.")
    return template


def render_prompt(template: str, text: str, text_pair: str | None = None) -> str:
    """The prompt for one row; `template` must have passed `check_template` (the texts are data, never format)."""
    return template.format(text=text, text_pair=text_pair if text_pair is not None else "")
