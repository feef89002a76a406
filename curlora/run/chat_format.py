"""Chat messages for a model with a chat template: the conversation, the prompt text, where a reply ends.

    if has_template(tok):
        messages = conversation(history, "And then?", system="Answer briefly.")
        text = chat_prompt(tok, messages)          # tok.apply_chat_template(..., add_generation_prompt=True)
        ids, texts = stop_tokens(tok, model)        # eos and the template's end-of-turn marker

A model without a template is completed as plain text (curlora/run/chat.py); history and system prompt are then not
sent. The prompt is the template applied exactly as the tokenizer defines it, so a chat model sees the same layout
it was trained on; its text is tokenized without adding special tokens again (the template writes its own).
"""

from __future__ import annotations

from collections.abc import Iterable

from curlora.errors import CurloraError

ROLES = ("system", "user", "assistant")
_PROBE = "\u2063curlora-reply\u2063"  # an assistant reply no template changes, to find what follows a reply


def has_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def text_of(content) -> str:
    """A message's text: a string, or gradio's list of parts ({"type": "text", "text": ...}); files are skipped."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(text_of(part) for part in content)
    return str(content)


def conversation(history: Iterable[dict] | None, message: str, system: str | None = None) -> list[dict]:
    """[system?] + earlier turns (user / assistant, in order) + the new user message, as {"role", "content"} with
    plain-text content. Turns with another role or no text are left out."""
    out = []
    if system and system.strip():
        out.append({"role": "system", "content": system.strip()})
    for turn in history or []:
        role = turn.get("role") if isinstance(turn, dict) else None
        text = text_of(turn.get("content")) if role in ("user", "assistant") else ""
        if text.strip():
            out.append({"role": role, "content": text})
    out.append({"role": "user", "content": message})
    return out


def chat_prompt(tok, messages: list[dict]) -> str:
    """The template applied to `messages`, ending where the assistant's reply begins."""
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja's TemplateError (e.g. "System role not supported") or a template bug
        said = str(err).strip().rstrip(".")[:160] or type(err).__name__
        hint = " leave the system prompt empty," if any(m["role"] == "system" for m in messages) else ""
        raise CurloraError(f"This model's chat template refused the conversation ({said});{hint} press Clear to "
                           "start a new one.") from None
    if not isinstance(text, str):  # a tokenizer that ignores tokenize=False
        text = tok.decode(text)
    return text


_SYSTEM = "\u2063curlora-system\u2063"
_USER = "\u2063curlora-user\u2063"


def default_system(tok) -> str | None:
    """The system prompt the template writes when the conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM, trained by Hugging Face"), or None. Found by rendering with a marker system prompt,
    taking what surrounds it, and reading what stands there without one."""
    if not has_template(tok):
        return None
    user = [{"role": "user", "content": _USER}]
    try:
        plain = tok.apply_chat_template(user, tokenize=False)
        marked = tok.apply_chat_template([{"role": "system", "content": _SYSTEM}] + user, tokenize=False)
    except Exception:  # a template that refuses a system turn, or cannot render: nothing it injects to show
        return None
    if not isinstance(plain, str) or not isinstance(marked, str) or _SYSTEM not in marked:
        return None
    head, rest = marked.split(_SYSTEM, 1)
    tail = rest.split(_USER, 1)[0]
    # `tail` runs from the system text's end to the user text: the end-of-system marker plus the user header.
    # The shortest non-empty prefix of it that `plain` contains after `head` ends the injected prompt.
    if not plain.startswith(head) or not tail:
        return None
    body = plain[len(head):]
    cut = body.find(tail)
    injected = body[:cut].strip() if cut > 0 else ""
    return injected or None


def end_of_turn(tok) -> str | None:
    """The marker the template writes after an assistant reply ('<|im_end|>', '<|eot_id|>', '</s>'…), read by
    rendering a reply and looking at what follows it; None where nothing does (then eos alone ends a reply)."""
    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tok.apply_chat_template(turn, tokenize=False)
    except Exception:  # a template that cannot render this: no marker
        return None
    if not isinstance(text, str) or _PROBE not in text:
        return None
    after = text.split(_PROBE, 1)[1].split()
    return after[0] if after else None


def stop_tokens(tok, model=None, templated: bool = True) -> tuple[set[int], tuple[str, ...]]:
    """(token ids that end a reply, texts that end it). Plain completion: the tokenizer's eos only. With a template:
    eos, the model's generation config eos ids, and the end-of-turn marker (as its token id when it is one token,
    always as text: a marker the tokenizer splits into pieces still ends the reply)."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    if not templated:
        return ids, ()
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple, set)) else [] if extra is None else [extra])
    marker = end_of_turn(tok)
    if not marker:
        return ids, ()
    pieces = tok(marker, add_special_tokens=False).input_ids
    if len(pieces) == 1:
        ids.add(pieces[0])
    return ids, (marker,)


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of a stop text (not shown until it is known
    whether the reply ends there)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest
