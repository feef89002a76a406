"""`CURLoRAModel`: a transformers model with CURLoRA adapters injected, with PEFT's surface.

    model = get_curlora_model(base, CURLoRAConfig(r=8, target_modules=["q_proj", "v_proj"]))
    model.print_trainable_parameters()
    model.save_pretrained(folder)            # adapter_config.json + adapter_model.safetensors
    merged = model.merge_and_unload()
    again = CURLoRAModel.from_pretrained(base, folder)

The saved adapter holds U, the sampled indices I and J, each matrix's shape and a fingerprint of C and R; C and R
themselves are cut again from the base weights on load, after checking that those weights are the ones the
adapter was trained on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from curlora import __version__
from curlora.adapter.config import PEFT_TYPE, CURLoRAConfig
from curlora.adapter.layer import CURLoRALayer, dispatch, math_weight
from curlora.adapter.sampling import sample_cur_indices
from curlora.errors import CurloraError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# Relative tolerance on the C/R fingerprint: loose enough for the same base in another dtype (bf16 keeps ~3
# digits), far tighter than what a different checkpoint gives.
FINGERPRINT_RTOL = 2e-2


def _output_embedding_names(model: nn.Module) -> set[str]:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return {name for name, m in model.named_modules() if head is not None and m is head}


def find_target_modules(model: nn.Module, targets: list[str] | str) -> list[str]:
    """Names of the modules `targets` selects (PEFT's matching rules), wrapped or not."""
    names = []
    heads = _output_embedding_names(model)
    for name, module in model.named_modules():
        if not name or ".curlora." in f".{name}." or name.endswith(".base_layer"):
            continue
        if targets == "all-linear":
            hit = name not in heads and (isinstance(module, CURLoRALayer) or dispatch(module) is not None)
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


class CURLoRAModel(nn.Module):
    """A causal LM with CURLoRA adapters. Calls, `.generate`, `.config` etc. pass through to the wrapped model."""

    def __init__(self, model: nn.Module, config: CURLoRAConfig, adapter_name: str = "default"):
        super().__init__()
        self.model = model
        self.peft_config: dict[str, CURLoRAConfig] = {}
        self.active_adapter: str | None = None
        for p in model.parameters():
            p.requires_grad_(False)
        self.add_adapter(adapter_name, config)

    # -- plumbing ----------------------------------------------------------------------------------------
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)

    def curlora_layers(self) -> dict[str, CURLoRALayer]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, CURLoRALayer)}

    # -- adapters ----------------------------------------------------------------------------------------
    def add_adapter(
        self, adapter_name: str, config: CURLoRAConfig, indices: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> None:
        """Inject adapter `adapter_name`. `indices` (module name → (I, J)) skips sampling, for loading."""
        if adapter_name in self.peft_config:
            raise CurloraError(f"An adapter named {adapter_name!r} already exists; choose another name.")
        targets = find_target_modules(self.model, config.target_modules)
        if not targets:
            raise CurloraError(
                f"No module matches target_modules={config.target_modules!r}; this model's adaptable layers are: "
                f"{', '.join(_adaptable_names(self.model)) or 'none'}."
            )
        for name in targets:
            module = self.model.get_submodule(name)
            if not isinstance(module, CURLoRALayer):
                wrapper_cls = dispatch(module)
                if wrapper_cls is None:
                    raise CurloraError(
                        f"Module {name!r} is a {type(module).__name__}; CURLoRA adapts torch.nn.Linear and GPT-2's "
                        "Conv1D layers only — pick other target_modules."
                    )
                module = wrapper_cls(module)
                self._put_back(name, module)
            w = module.weight_math()
            if indices is not None:
                rows, cols = indices[name]
            else:
                if not config.replace and config.r > min(w.shape):
                    raise CurloraError(
                        f"Rank r={config.r} is larger than {name!r} ({w.shape[0]} x {w.shape[1]}) allows without "
                        "replacement; lower r or set replace=True."
                    )
                rows, cols = sample_cur_indices(w, config.r, config.sampling, config.replace, config.seed, name)
            module.add_adapter(adapter_name, rows, cols, config.alpha)
        self.peft_config[adapter_name] = config
        self.set_adapter(adapter_name)

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the one that runs and trains (others stay in memory, inactive and frozen)."""
        if adapter_name not in self.peft_config:
            raise CurloraError(f"No adapter named {adapter_name!r}; adapters: {', '.join(self.peft_config)}.")
        for layer in self.curlora_layers().values():
            if any(layer.merged_adapters):
                raise CurloraError("Unmerge the adapters before switching to another one.")
            layer.active_adapters = [adapter_name] if adapter_name in layer.curlora else []
            for name, factors in layer.curlora.items():
                factors.U.requires_grad_(name == adapter_name)
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise CurloraError(f"No adapter named {adapter_name!r}; adapters: {', '.join(self.peft_config)}.")
        for name, layer in self.curlora_layers().items():
            if adapter_name in layer.curlora:
                layer.delete_adapter(adapter_name)
            if not len(layer.curlora):  # nothing left to wrap: put the original module back
                self._put_back(name, layer.base_layer)
        del self.peft_config[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None
            if self.peft_config:
                self.set_adapter(next(iter(self.peft_config)))

    @contextlib.contextmanager
    def disable_adapter(self):
        """Run as the bare base model inside the block (e.g. to score the base beside the adapted model)."""
        layers = self.curlora_layers().values()
        for layer in layers:
            layer.disabled = True
        try:
            yield
        finally:
            for layer in layers:
                layer.disabled = False

    # -- counting ----------------------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    # -- merging -----------------------------------------------------------------------------------------
    def merge_adapter(self, keep_original: bool = True) -> None:
        """Fold the active adapter into the base weights (fast inference); `unmerge_adapter` undoes it exactly."""
        for layer in self.curlora_layers().values():
            layer.merge(keep_original=keep_original)

    def unmerge_adapter(self) -> None:
        for layer in self.curlora_layers().values():
            layer.unmerge()

    def _replace_wrappers(self, merge: bool) -> nn.Module:
        for name, layer in self.curlora_layers().items():
            if merge:
                layer.merge(keep_original=False)
            else:
                layer.unmerge()
            self._put_back(name, layer.base_layer)
        self.peft_config.clear()
        return self.model

    def _put_back(self, name: str, module: nn.Module) -> None:
        parent, _, child = name.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, child, module)

    def merge_and_unload(self) -> nn.Module:
        """The plain transformers model with W + alpha·C U R folded in; this wrapper is spent afterwards."""
        return self._replace_wrappers(merge=True)

    def unload(self) -> nn.Module:
        """The plain base model with every adapter removed and its original modules (and weights) back."""
        return self._replace_wrappers(merge=False)

    # -- saving and loading ------------------------------------------------------------------------------
    def adapter_state_dict(self, adapter_name: str) -> dict[str, torch.Tensor]:
        state = {}
        for name, layer in self.curlora_layers().items():
            if adapter_name not in layer.curlora:
                continue
            f = layer.curlora[adapter_name]
            state[f"{name}.curlora_U"] = f.U.detach().cpu().contiguous()
            state[f"{name}.curlora_I"] = f.I.cpu().contiguous()
            state[f"{name}.curlora_J"] = f.J.cpu().contiguous()
            state[f"{name}.curlora_shape"] = torch.tensor(list(layer.weight_math().shape), dtype=torch.int64)
            state[f"{name}.curlora_fingerprint"] = f.fingerprint()
        return state

    def save_pretrained(self, save_directory: str | os.PathLike, selected_adapters: list[str] | None = None) -> None:
        """PEFT's layout: the default adapter in the folder itself, any other in a subfolder named after it.

        Each file is written to a temporary name and renamed, so a crash never leaves a half-written adapter.
        """
        root = Path(save_directory)
        for adapter_name in selected_adapters or list(self.peft_config):
            folder = root if adapter_name == "default" else root / adapter_name
            folder.mkdir(parents=True, exist_ok=True)
            cfg = self.peft_config[adapter_name].to_dict()
            if cfg.get("base_model_name_or_path") is None:
                cfg["base_model_name_or_path"] = getattr(getattr(self.model, "config", None), "_name_or_path", None)
            cfg.update(curlora_version=__version__, task_type="CAUSAL_LM")
            state = self.adapter_state_dict(adapter_name)
            _atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
            _atomic_write(folder / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(cfg, indent=2) + "\n"))

    def load_adapter(self, path: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False) -> None:
        config, state = read_adapter(path)
        layer_names = sorted({k.rsplit(".", 1)[0] for k in state})
        indices = {}
        for name in layer_names:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                raise CurloraError(
                    f"The adapter in {path} adapts {name!r}, which this base model does not have: it was trained on "
                    "a different architecture."
                ) from None
            want = tuple(state[f"{name}.curlora_shape"].tolist())
            got = tuple(math_weight(module).shape) if hasattr(module, "weight") else None
            if got != want:
                here = f"{got[0]} x {got[1]}" if got and len(got) == 2 else "not a weight matrix"
                raise CurloraError(
                    f"The adapter in {path} was trained on a different base model: {name!r} is {here} here but "
                    f"{want[0]} x {want[1]} in the adapter."
                )
            indices[name] = (state[f"{name}.curlora_I"], state[f"{name}.curlora_J"])
        config.target_modules = layer_names  # exactly the saved layers, whatever pattern made them
        self.add_adapter(adapter_name, config, indices=indices)
        try:
            for name, layer in self.curlora_layers().items():
                if adapter_name not in layer.curlora:
                    continue
                f = layer.curlora[adapter_name]
                saved = state[f"{name}.curlora_fingerprint"].float()
                if not torch.allclose(f.fingerprint(), saved, rtol=FINGERPRINT_RTOL, atol=1e-6):
                    raise CurloraError(
                        f"The adapter in {path} was trained on different base weights: the rows and columns it "
                        f"samples from {name!r} don't match. Load it on the model it was trained on "
                        f"({config.base_model_name_or_path or 'see adapter_config.json'})."
                    )
                with torch.no_grad():
                    f.U.copy_(state[f"{name}.curlora_U"].to(f.U.dtype))
                f.U.requires_grad_(is_trainable)
        except Exception:
            self.delete_adapter(adapter_name)
            raise

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, path: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False
    ) -> "CURLoRAModel":
        """Attach the adapter saved in `path` to `model` (the same base it was trained on)."""
        config, _ = read_adapter(path)
        wrapper = cls.__new__(cls)
        nn.Module.__init__(wrapper)
        wrapper.model = model
        wrapper.peft_config = {}
        wrapper.active_adapter = None
        for p in model.parameters():
            p.requires_grad_(False)
        wrapper.load_adapter(path, adapter_name, is_trainable=is_trainable)
        return wrapper


def get_curlora_model(model: nn.Module, config: CURLoRAConfig, adapter_name: str = "default") -> CURLoRAModel:
    """Wrap `model` with a fresh CURLoRA adapter (like `peft.get_peft_model`). The base weights are frozen."""
    return CURLoRAModel(model, config, adapter_name)


def read_adapter(path: str | os.PathLike) -> tuple[CURLoRAConfig, dict[str, torch.Tensor]]:
    """Config and tensors of a saved CURLoRA adapter folder, with a clear error for anything else."""
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
    if data.get("peft_type") != PEFT_TYPE:
        raise CurloraError(
            f"{folder} holds a {data.get('peft_type', 'unknown')} adapter, not a CURLoRA one; load it with PEFT."
        )
    config = CURLoRAConfig.from_dict(data)
    try:
        state = load_file(str(weights_file))
    except Exception as err:  # safetensors raises its own error types for truncated or corrupt files
        raise CurloraError(f"{weights_file} is unreadable or truncated ({err}).") from None
    return config, state


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
