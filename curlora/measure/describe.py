"""How a method's setting is written wherever it is shown: a learning rate as people write it, 'lr 2e-2, r 8',
'curlora (lr 2e-2, r 8)'. Plain text from plain values, so the analysis below the run wing writes its sentences
with the same words as the app (curlora/methods/registry.py re-exports these)."""

from __future__ import annotations


def lr_text(lr: float) -> str:
    """A learning rate as people write it: 2e-2, 3.5e-4, 1e-1."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def setting_text(setting: dict | None) -> str:
    """A method's setting as shown: 'lr 2e-2, r 8'; '' when nothing was set (the base model, an older run)."""
    parts = []
    if setting and setting.get("lr") is not None:
        parts.append(f"lr {lr_text(setting['lr'])}")
    if setting and setting.get("r") is not None:
        parts.append(f"r {setting['r']}")
    if setting and setting.get("ewc_lambda") is not None:
        parts.append(f"λ {setting['ewc_lambda']:g}")
    if setting and setting.get("replay"):
        parts.append(f"replay {setting['replay']:g}")
    return ", ".join(parts)


def described(label: str, setting: dict | None) -> str:
    """A method's label with its setting, as every heading, legend, table and export shows it:
    'curlora (lr 2e-2, r 8)'; the bare label when nothing was set (the base model)."""
    text = setting_text(setting)
    return f"{label} ({text})" if text else label
