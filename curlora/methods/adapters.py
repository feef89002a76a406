"""One small interface over the adapter methods, so the rest of the engine treats CURLoRA, LoRA and its peers alike.

CURLoRA is this package's layer; LoRA and its peers (MiCA, PiSSA, CorDA, DoRA, OSF) are PEFT's, untouched. All are
attached to a frozen base model, trained, saved at a stage boundary in PEFT's folder layout, and detached again to
hand the same base model to the next method — which is what lets a side-by-side run hold one copy of the base
weights.

Every stage folder applies to the original base. MiCA and DoRA are plain PEFT LoRA folders whose config says what
they are. PiSSA and CorDA trained on a rewritten base (the residual W − s·B0·A0) and are saved as the LoRA of rank 2r
that undoes it (`save_residual`); OSF's stage is its whole change as a full-rank LoRA (`save_delta`). Those carry a
`method.json` marker naming their kind, since their config reads as plain LoRA.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import peft
from torch import nn

from curlora.adapter.config import PEFT_TYPE, CURLoRAConfig
from curlora.adapter.model import CONFIG_NAME, WEIGHTS_NAME, CURLoRAModel, get_curlora_model
from curlora.errors import CurloraError, clip
from curlora.methods.kinds import kinds, stage_kind
from curlora.models.build_lock import BUILD_LOCK

METHODS = ("curlora", "lora")
MARKER = "method.json"  # {"kind": …} beside a stage whose PEFT config alone can't say which method saved it
KIND = "studio_kind"  # the attribute that says which method an attached or loaded PEFT model is


def kind_of(config: dict, note: dict | None = None) -> str:
    """The method a PEFT config (as a dict) and a stage's marker say it is: each registered kind recognises its own
    (Method.owns, curlora/methods/kinds.py stage_kind); a LoRA config no narrower kind claims is plain LoRA."""
    return stage_kind(config, note or {}) or "lora"


def attach(model: nn.Module, config: CURLoRAConfig | peft.LoraConfig | peft.OSFConfig, adapter_name: str = "default",
           kind: str | None = None) -> nn.Module:
    """Wrap `model` with a fresh adapter; the base weights are frozen, only the adapter trains. `kind`: the method,
    where the config doesn't say (a PiSSA stage rebuilt on a plain LoRA config)."""
    if isinstance(config, CURLoRAConfig):
        with BUILD_LOCK:
            return get_curlora_model(model, config, adapter_name)
    if isinstance(config, (peft.LoraConfig, peft.OSFConfig)):
        with BUILD_LOCK:  # PEFT initialises A and B through torch.nn.init, which a loading thread may patch
            adapted = peft.get_peft_model(model, config, adapter_name=adapter_name)
        setattr(adapted, KIND, kind or kind_of(config.to_dict()))
        return adapted
    raise TypeError(f"attach() takes a CURLoRAConfig, a peft.LoraConfig or a peft.OSFConfig, not "
                    f"{type(config).__name__}")


def method_of(adapted: nn.Module) -> str:
    if isinstance(adapted, CURLoRAModel):
        return "curlora"
    if isinstance(adapted, peft.PeftModel):
        return getattr(adapted, KIND, "lora")
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
    """The method kind of a saved adapter folder ("curlora", "lora", "pissa", …), with a clear error for anything
    else."""
    folder = Path(folder)
    cfg = folder / CONFIG_NAME
    if not cfg.is_file():
        raise CurloraError(f"{folder} is not an adapter folder: it has no {CONFIG_NAME}.")
    try:
        data = json.loads(cfg.read_text())
        peft_type = data.get("peft_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise CurloraError(f"{cfg} is not a valid adapter config (it must be a JSON object).") from None
    if peft_type == PEFT_TYPE:
        return "curlora"
    if peft_type == "LORA":
        if not (folder / WEIGHTS_NAME).is_file():
            raise CurloraError(f"{folder} has no {WEIGHTS_NAME}; adapters load from safetensors only.")
        return kind_of(data, marker(folder))
    raise CurloraError(f"{folder} holds a {peft_type} adapter; CURLoRA Studio loads CURLORA and LORA adapters.")


def load_adapter(model: nn.Module, folder: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Attach a saved adapter of any method to `model` (the base it was trained on)."""
    if adapter_kind(folder) == "curlora":
        with BUILD_LOCK:
            return CURLoRAModel.from_pretrained(model, folder, is_trainable=is_trainable)
    try:
        with BUILD_LOCK:
            adapted = peft.PeftModel.from_pretrained(model, str(folder), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CurloraError(f"The LoRA adapter in {folder} does not fit this base model ({err}).") from None
    setattr(adapted, KIND, adapter_kind(folder))
    return adapted


def detach(adapted: nn.Module) -> nn.Module:
    """The base model with the adapter removed and its original weights untouched (nothing merged)."""
    method_of(adapted)
    return adapted.unload()


def merge(adapted: nn.Module) -> nn.Module:
    """A plain transformers model with the adapter folded into its weights (for export or fast inference)."""
    method_of(adapted)
    return adapted.merge_and_unload()


# -- stages of the methods that change the base while they train ------------------------------------------------
def marker(folder: str | os.PathLike) -> dict:
    """A stage's method.json ({"kind": …} and what else its method noted); {} where it has none."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = data["kind"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise CurloraError(f"{path} is not a valid method marker (a JSON object with a kind).") from None
    if kind not in kinds():
        raise CurloraError(f"{path} names {clip(kind)}, which is not a method kind of this version.")
    return data


def _write(folder: Path, config: peft.LoraConfig, state: dict, note: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_NAME),
              metadata={"format": "pt"})
    (folder / MARKER).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
    return folder


def save_residual(adapted: nn.Module, folder: str | os.PathLike, initial: dict, note: dict) -> Path:
    """A LoRA trained on a rewritten base W − s·B0·A0 (PiSSA, CorDA) as the plain LoRA of rank 2r that applies to the
    original base: s·B·A − s·B0·A0 = s·[B | −B0]·[A ; A0], what PEFT's save_pretrained writes given
    path_initial_model_for_weight_conversion (here from the initial factors kept in memory: no second folder)."""
    import torch

    out = {}
    for key, value in peft.get_peft_model_state_dict(adapted).items():
        start = initial[key].to(value.device)
        out[key] = torch.cat([value, start], 0) if ".lora_A." in key else torch.cat([value, -start], 1)
    config = copy.deepcopy(adapted.peft_config["default"])
    config.init_lora_weights, config.corda_config, config.inference_mode = True, None, True
    config.r, config.lora_alpha = 2 * config.r, 2 * config.lora_alpha  # the same scale s
    return _write(Path(folder), config, out, note)


def load_residual(model: nn.Module, config: peft.LoraConfig, folder: str | os.PathLike, kind: str):
    """save_residual's folder back onto the original base, to train on: A and B are its first r rows and columns,
    and the base becomes the residual W − s·B0·A0 again, computed as PEFT's init computes it. Returns the model
    and the initial factors (for the next save)."""
    import torch
    from peft.utils.other import transpose
    from safetensors.torch import load_file

    r = config.r
    trained, initial = {}, {}
    for key, value in load_file(str(Path(folder) / WEIGHTS_NAME)).items():
        if ".lora_A." in key:
            trained[key], initial[key] = value[:r], value[r:].clone()
        else:
            trained[key], initial[key] = value[:, :r], -value[:, r:]
    adapted = attach(model, config, kind=kind)
    try:
        peft.set_peft_model_state_dict(adapted, trained)
    except RuntimeError as err:
        raise CurloraError(f"The {kind} stage in {folder} does not fit this base model at r {r} ({err}).") from None
    with torch.no_grad():
        for key, a0 in initial.items():
            if ".lora_A." not in key:
                continue
            layer = adapted.get_submodule(key.removesuffix(".lora_A.weight"))
            b0 = initial[key.replace(".lora_A.", ".lora_B.")]
            weight = layer.get_base_layer().weight
            delta = transpose(layer.scaling["default"] * b0.float() @ a0.float(), layer.fan_in_fan_out)
            weight.copy_((weight.float() - delta.to(weight.device)).to(weight.dtype))
    return adapted, initial


def save_delta(folder: str | os.PathLike, deltas: dict, note: dict) -> Path:
    """Whole changes ΔW of Linear layers (base layer name -> out × in) as a PEFT LoRA folder that applies to the
    original base exactly: ΔW = B·A with A the identity (in ≤ out) or else B, at rank min(in, out) and scale 1."""
    import torch

    state, ranks = {}, {}
    for name, delta in deltas.items():
        side = min(delta.shape)
        eye = torch.eye(side, dtype=delta.dtype, device=delta.device)
        a, b = (eye, delta) if delta.shape[1] <= delta.shape[0] else (delta, eye)
        state[f"base_model.model.{name}.lora_A.weight"] = a
        state[f"base_model.model.{name}.lora_B.weight"] = b
        ranks[re.escape(name)] = side
    top = max(ranks.values())
    config = peft.LoraConfig(r=top, lora_alpha=top, target_modules=list(deltas), rank_pattern=ranks,
                             alpha_pattern=ranks, task_type="CAUSAL_LM", inference_mode=True)
    return _write(Path(folder), config, state, note)
