"""curlora: the engine of CURLoRA Studio. Importable without gradio.

The adapter's public surface mirrors PEFT's:

    from curlora import CURLoRAConfig, get_curlora_model, CURLoRAModel

Names are imported on first use, so `python -m curlora check-data` doesn't pay for torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "CURLoRAConfig": "curlora.adapter.config",
    "CURLoRAModel": "curlora.adapter.model",
    "get_curlora_model": "curlora.adapter.model",
    "CurloraError": "curlora.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'curlora' has no attribute {name!r}")
