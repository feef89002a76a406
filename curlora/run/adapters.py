"""One small interface over the adapter methods, so the rest of the engine treats CURLoRA and LoRA alike.

CURLoRA is this package's layer; LoRA is PEFT's, untouched. Both are attached to a frozen base model, trained,
saved at a stage boundary in PEFT's folder layout, and detached again to hand the same base model to the next
method — which is what lets a side-by-side run hold one copy of the base weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import peft
from torch import nn

from curlora.adapter.config import PEFT_TYPE, CURLoRAConfig
from curlora.adapter.model import CONFIG_NAME, WEIGHTS_NAME, CURLoRAModel, get_curlora_model
from curlora.errors import CurloraError
from curlora.models.build_lock import BUILD_LOCK

METHODS = ("curlora", "lora")


def attach(model: nn.Module, config: CURLoRAConfig | peft.LoraConfig, adapter_name: str = "default") -> nn.Module:
    """Wrap `model` with a fresh adapter; the base weights are frozen, only the adapter trains."""
    if isinstance(config, CURLoRAConfig):
        with BUILD_LOCK:
            return get_curlora_model(model, config, adapter_name)
    if isinstance(config, peft.LoraConfig):
        with BUILD_LOCK:  # PEFT initialises A and B through torch.nn.init, which a loading thread may patch
            return peft.get_peft_model(model, config, adapter_name=adapter_name)
    raise TypeError(f"attach() takes a CURLoRAConfig or a peft.LoraConfig, not {type(config).__name__}")


def method_of(adapted: nn.Module) -> str:
    if isinstance(adapted, CURLoRAModel):
        return "curlora"
    if isinstance(adapted, peft.PeftModel):
        return "lora"
    raise TypeError(f"{type(adapted).__name__} carries no adapter of a known method")


def count_trainable(adapted: nn.Module) -> int:
    return sum(p.numel() for p in adapted.parameters() if p.requires_grad)


def save_adapter(adapted: nn.Module, folder: str | os.PathLike) -> Path:
    """adapter_config.json + adapter_model.safetensors (safetensors only, for either method)."""
    folder = Path(folder)
    method_of(adapted)
    if isinstance(adapted, CURLoRAModel):
        adapted.save_pretrained(folder)
    else:
        adapted.save_pretrained(str(folder), safe_serialization=True)
    return folder


def adapter_kind(folder: str | os.PathLike) -> str:
    """"curlora" or "lora" for a saved adapter folder, with a clear error for anything else."""
    folder = Path(folder)
    cfg = folder / CONFIG_NAME
    if not cfg.is_file():
        raise CurloraError(f"{folder} is not an adapter folder: it has no {CONFIG_NAME}.")
    try:
        peft_type = json.loads(cfg.read_text()).get("peft_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise CurloraError(f"{cfg} is not a valid adapter config (it must be a JSON object).") from None
    if peft_type == PEFT_TYPE:
        return "curlora"
    if peft_type == "LORA":
        if not (folder / WEIGHTS_NAME).is_file():
            raise CurloraError(f"{folder} has no {WEIGHTS_NAME}; adapters load from safetensors only.")
        return "lora"
    raise CurloraError(f"{folder} holds a {peft_type} adapter; CURLoRA Studio loads CURLORA and LORA adapters.")


def load_adapter(model: nn.Module, folder: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Attach a saved adapter of either method to `model` (the base it was trained on)."""
    if adapter_kind(folder) == "curlora":
        with BUILD_LOCK:
            return CURLoRAModel.from_pretrained(model, folder, is_trainable=is_trainable)
    try:
        with BUILD_LOCK:
            return peft.PeftModel.from_pretrained(model, str(folder), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CurloraError(f"The LoRA adapter in {folder} does not fit this base model ({err}).") from None


def detach(adapted: nn.Module) -> nn.Module:
    """The base model with the adapter removed and its original weights untouched (nothing merged)."""
    method_of(adapted)
    return adapted.unload()


def merge(adapted: nn.Module) -> nn.Module:
    """A plain transformers model with the adapter folded into its weights (for export or fast inference)."""
    method_of(adapted)
    return adapted.merge_and_unload()
