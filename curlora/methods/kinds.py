"""The table of registered method kinds: `register` (a class decorator), `method(kind)`, `kinds()`.

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
