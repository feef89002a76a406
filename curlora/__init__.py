"""curlora: the engine of CURLoRA Studio. Importable without gradio.

The adapter's public surface mirrors PEFT's:

    from curlora import CURLoRAConfig, get_curlora_model, CURLoRAModel
"""

__version__ = "0.1.0"

from curlora.adapter_config import CURLoRAConfig  # noqa: E402
from curlora.errors import CurloraError  # noqa: E402
from curlora.model import CURLoRAModel, get_curlora_model  # noqa: E402

__all__ = ["CURLoRAConfig", "CURLoRAModel", "CurloraError", "get_curlora_model", "__version__"]
