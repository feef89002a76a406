"""curlora: the engine of CURLoRA Studio. Importable without gradio.

CURLoRA is a PEFT method: after `import curlora`, `peft.get_peft_model(base, CURLoRAConfig(...))` and
`peft.PeftModel.from_pretrained(base, folder)` know it. This package's own names mirror PEFT's:

    from curlora import CURLoRAConfig, get_curlora_model, CURLoRAModel

Names are imported on first use, so `python -m curlora check-data` doesn't pay for torch; CURLoRA is registered
with PEFT as soon as PEFT itself is imported (now, if it already is).
"""

import importlib
import importlib.abc
import importlib.util
import logging
import sys

# bitsandbytes (an optional extra) warns at import, on CPUs with AVX512-BF16, that an optional kernel package is
# missing; nothing here uses that kernel (curlora/models/loading.py turns its CPU repacking off), and the warning
# would be a second line under every one-sentence error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.2.0"

_EXPORTS = {
    "CURLoRAConfig": "curlora.adapter.config",
    "CURLoRAModel": "curlora.adapter.model",
    "get_curlora_model": "curlora.adapter.model",
    "CurloraError": "curlora.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'curlora' has no attribute {name!r}")


class _RegisterAfterPeft(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `peft` is first imported, lets the normal finders load it, then registers CURLoRA
    (so `PeftModel.from_pretrained` reads a CURLoRA folder after a bare `import curlora`)."""

    def find_spec(self, name, path=None, target=None):
        if name != "peft":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            importlib.import_module("curlora.adapter")

        spec.loader.exec_module = exec_module
        return spec


if "peft" in sys.modules:
    importlib.import_module("curlora.adapter")
elif not any(isinstance(f, _RegisterAfterPeft) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterPeft())
