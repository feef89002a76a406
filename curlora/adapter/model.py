"""CURLoRA as a PEFT tuner, and the package's own thin API over it.

After `import curlora` PEFT's own calls work:

    model = peft.get_peft_model(base, CURLoRAConfig(r=8, target_modules=["q_proj", "v_proj"]))
    model.print_trainable_parameters()                 # r² per adapted matrix
    model.save_pretrained(folder)                      # PEFT's layout: adapter_config.json + adapter_model.safetensors
    again = peft.PeftModel.from_pretrained(fresh_base, folder)
    merged = again.merge_and_unload()

`get_curlora_model(base, config)` and `CURLoRAModel.from_pretrained(base, folder)` are the same thing, kept for the
code written against the first version; the latter also reads adapters saved by version 0.1.0 of this package
(keys `<module>.curlora_U` …, a norms-only fingerprint).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from peft import PeftModelForCausalLM
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from curlora.adapter.config import PEFT_TYPE, CURLoRAConfig
from curlora.adapter.layer import CURLoRALayer, dispatch, math_weight
from curlora.adapter.peft_method import PREFIX
from curlora.adapter.sampling import sample_cur_indices
from curlora.errors import CurloraError, clip

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."
_OLD_SUFFIXES = {"curlora_U": "U", "curlora_I": "I", "curlora_J": "J", "curlora_shape": "shape",
                 "curlora_fingerprint": "sketch"}


def _output_embedding_names(model: nn.Module) -> set[str]:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return {name for name, m in model.named_modules() if head is not None and m is head}


def find_target_modules(model: nn.Module, targets: list[str] | str) -> list[str]:
    """Names of the modules `targets` selects (PEFT's matching rules), wrapped or not."""
    names = []
    heads = _output_embedding_names(model)
    for name, module in model.named_modules():
        if not name or PREFIX in name or name.endswith(".base_layer"):
            continue
        if targets == "all-linear":
            hit = name not in heads and dispatch(module) is not None
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            names.append(name)
    return names


def _adaptable_names(model: nn.Module) -> list[str]:
    leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and dispatch(m) is not None}
    return sorted(leaves)


class CURLoRATuner(BaseTuner):
    """PEFT's tuner for CURLoRA: finds the targeted Linear / Conv1D layers, samples C and R, wraps each one."""

    prefix: str = PREFIX
    tuner_layer_cls = CURLoRALayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    def _pre_injection_hook(self, model: nn.Module, config: CURLoRAConfig, adapter_name: str) -> None:
        """Refuse, in one sentence, targets that match nothing or something CURLoRA can't adapt."""
        targets = config.target_modules
        if targets is None:
            return  # PEFT fills the architecture's default
        names = find_target_modules(model, sorted(targets) if isinstance(targets, set) else targets)
        if not names:
            raise CurloraError(
                f"No module matches target_modules={clip(targets)}; this model's adaptable layers are: "
                f"{', '.join(_adaptable_names(model)) or 'none'}."
            )
        for name in names:
            module = model.get_submodule(name)
            if dispatch(module) is None:
                raise CurloraError(
                    f"Module {clip(name)} is a {type(module).__name__}; CURLoRA adapts torch.nn.Linear and GPT-2's "
                    "Conv1D layers only — pick other target_modules."
                )

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        layer = target if isinstance(target, CURLoRALayer) else dispatch(target)(target)
        w = layer.weight_math()
        if not config.replace and config.r > min(w.shape):
            raise CurloraError(
                f"Rank r={config.r} is larger than {clip(current_key)} ({w.shape[0]} x {w.shape[1]}) allows without "
                "replacement; lower r or set replace=True."
            )
        rows, cols = sample_cur_indices(w, config.r, config.sampling, config.replace, config.seed, current_key)
        layer.update_layer(adapter_name, rows, cols, config.alpha, inference_mode=config.inference_mode)
        if layer is not target:
            self._replace_module(parent, target_name, layer, target)


def curlora_layers(model: nn.Module) -> dict[str, CURLoRALayer]:
    """The CURLoRA layers of a (PEFT-wrapped) model, named as in the bare base model."""
    return {n.removeprefix(PEFT_KEY_PREFIX): m for n, m in model.named_modules() if isinstance(m, CURLoRALayer)}


class CURLoRAModel(PeftModelForCausalLM):
    """A `PeftModelForCausalLM` whose adapters are CURLoRA: everything PEFT's model does, plus reading 0.1.0
    adapters and saving without ever leaving a half-written file."""

    def __init__(self, model: nn.Module, config: CURLoRAConfig, adapter_name: str = "default", **kwargs):
        super().__init__(model, config, adapter_name, **kwargs)

    def curlora_layers(self) -> dict[str, CURLoRALayer]:
        return curlora_layers(self)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """PEFT's save into a temporary folder, then each file renamed into place (the config last)."""
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("safe_serialization", True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".saving-") as tmp:
            super().save_pretrained(tmp, **kwargs)
            files = sorted((p for p in Path(tmp).rglob("*") if p.is_file()), key=lambda p: p.name == CONFIG_NAME)
            for f in files:
                target = root / f.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)

    def load_adapter(self, path: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False,
                     **kwargs) -> None:
        """Add the adapter saved in `path` (this version's layout or 0.1.0's) under `adapter_name`."""
        config, state = read_adapter(path, self.get_base_model())
        config.inference_mode = not is_trainable
        self.add_adapter(adapter_name, config)
        try:
            _set_state(self, state, adapter_name, path)
        except Exception:
            self.delete_adapter(adapter_name)
            raise
        if not is_trainable:
            self.eval()

    @classmethod
    def from_pretrained(cls, model: nn.Module, path: str | os.PathLike, adapter_name: str = "default",
                        is_trainable: bool = False, **kwargs) -> CURLoRAModel:
        """Attach the adapter saved in `path` to `model` (the same base it was trained on). On any refusal the
        base model is handed back as it was."""
        config, state = read_adapter(path, model)
        config.inference_mode = not is_trainable
        wrapper = cls(model, config, adapter_name)
        try:
            _set_state(wrapper, state, adapter_name, path)
        except Exception:
            wrapper.base_model.unload()
            raise
        if not is_trainable:
            wrapper.eval()
        return wrapper


def get_curlora_model(model: nn.Module, config: CURLoRAConfig, adapter_name: str = "default") -> CURLoRAModel:
    """Wrap `model` with a fresh CURLoRA adapter (like `peft.get_peft_model`). The base weights are frozen."""
    return CURLoRAModel(model, config, adapter_name)


def _set_state(model: nn.Module, state: dict[str, torch.Tensor], adapter_name: str, path) -> None:
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    stray = [k for k in result.unexpected_keys if PREFIX in k]
    missing = [k for k in result.missing_keys if PREFIX in k and f".{adapter_name}." in k]
    if stray or missing:
        name = (stray or missing)[0].removeprefix(PEFT_KEY_PREFIX).split(f".{PREFIX}")[0]
        raise CurloraError(f"The adapter in {path} does not fit this base model: its layer {clip(name)} has no match "
                           "here (it was trained on a different architecture).")


def read_adapter(path: str | os.PathLike, model: nn.Module | None = None) -> tuple[CURLoRAConfig, dict[str, torch.Tensor]]:
    """Config and tensors (in PEFT's key layout) of a saved CURLoRA adapter folder, with a clear error for anything
    else. A 0.1.0 adapter's keys are converted; given `model`, its layers are checked to exist there."""
    folder = Path(path)
    cfg_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not folder.is_dir():
        raise CurloraError(f"Adapter folder {folder} does not exist.")
    if not cfg_file.is_file() or not weights_file.is_file():
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        if pickles:
            raise CurloraError(
                f"{folder} holds pickle files ({', '.join(pickles)}); adapters load from safetensors only."
            )
        raise CurloraError(f"{folder} is not an adapter folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}.")
    try:
        data = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CurloraError(f"{cfg_file} is not valid JSON ({err}).") from None
    if not isinstance(data, dict) or data.get("peft_type") != PEFT_TYPE:
        kind = data.get("peft_type", "unknown") if isinstance(data, dict) else "unknown"
        raise CurloraError(f"{folder} holds a {kind} adapter, not a CURLoRA one; load it with PEFT.")
    try:
        state = load_file(str(weights_file))
    except Exception as err:  # safetensors raises its own error types for truncated or corrupt files
        raise CurloraError(f"{weights_file} is unreadable or truncated ({err}).") from None
    old = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in _OLD_SUFFIXES}
    if old:
        state = {}
        for key, value in old.items():
            layer, suffix = key.rsplit(".", 1)
            state[f"{PEFT_KEY_PREFIX}{layer}.{PREFIX}factors.{_OLD_SUFFIXES[suffix]}"] = value
    layers = sorted({k.removeprefix(PEFT_KEY_PREFIX).split(f".{PREFIX}")[0] for k in state})
    if old:
        data["target_modules"] = layers  # exactly the saved layers, whatever pattern made them
    if model is not None:
        _check_fits(folder, model, layers, state)
    config = CURLoRAConfig.from_dict(data)
    return config, state


def _check_fits(folder: Path, model: nn.Module, layers: list[str], state: dict[str, torch.Tensor]) -> None:
    """Refuse, naming the layer, an adapter whose layers the model lacks or has in another shape."""
    for layer in layers:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise CurloraError(
                f"The adapter in {folder} adapts {clip(layer)}, which this base model does not have: it was trained "
                "on a different architecture."
            ) from None
        shape = state.get(f"{PEFT_KEY_PREFIX}{layer}.{PREFIX}factors.shape")
        got = tuple(math_weight(module).shape) if hasattr(module, "weight") else None
        if shape is not None and got != tuple(shape.tolist()):
            want = tuple(shape.tolist())
            here = f"{got[0]} x {got[1]}" if got and len(got) == 2 else "not a weight matrix"
            raise CurloraError(
                f"The adapter in {folder} was trained on a different base model: {clip(layer)} is {here} here but "
                f"{want[0]} x {want[1]} in the adapter."
            )


def is_curlora(model: nn.Module) -> bool:
    """Whether `model` carries CURLoRA layers (made by PEFT's calls or this package's)."""
    return any(isinstance(m, CURLoRALayer) for m in model.modules())
