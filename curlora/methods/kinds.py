"""The table of registered method kinds: `register` (a class decorator), `method(kind)`, `kinds()`, and
`stage_kind`, which asks every kind whether a stage is its own (Method.owns).

It sits below registry.py (which defines the Method base class and the built-in kinds, and re-exports these names) so
that adapters.py, which registry.py calls to attach and save, can check a stage's kind without importing it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curlora.errors import CurloraError, clip

if TYPE_CHECKING:
    from curlora.methods.registry import Method

REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` a method kind (its `kind` must be new)."""
    if not cls.kind or cls.kind in REGISTRY:
        raise ValueError(f"method kind {clip(cls.kind)} is empty or registered twice")
    REGISTRY[cls.kind] = cls()
    return cls


def unregister(kind: str) -> None:
    REGISTRY.pop(kind, None)


def kinds() -> tuple[str, ...]:
    return tuple(REGISTRY)


def method(kind: str) -> Method:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise CurloraError(f"{clip(kind)} is not a method kind; the kinds are {', '.join(REGISTRY)}.") from None


def stage_kind(config: dict, note: dict) -> str | None:
    """The kind whose stage this is, from its PEFT config (a dict: adapter_config.json, or an attached config's
    to_dict()) and its method.json marker ({} where it has none): every registered kind is asked (`Method.owns`),
    and where a kind and one that `refines` it both answer (LoRA and MiCA for a LoRA config with MiCA's init), the
    refining one is meant. None: no kind recognises it."""
    owners = [k for k, m in REGISTRY.items() if m.owns(config, note)]
    narrow = [k for k in owners if not any(REGISTRY[o].refines == k for o in owners)]
    if len(narrow) > 1:
        raise CurloraError(f"An adapter config that reads as {' and as '.join(narrow)} at once is not a stage this "
                           "version saved.")
    return narrow[0] if narrow else None
