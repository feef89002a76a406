"""A finished stage as a plain PEFT LoRA adapter, for the tools that serve LoRA (PEFT, vLLM, TGI, LoRAX).

    folder = finished_stage(run, "curlora", 2)      # the stage folder, or one sentence why it can't be exported
    config, state = curlora_as_lora(adapted)        # an attached CURLoRA model as LoRA factors
    export_lora(run, "curlora", 2, dest)            # `curlora export RUN --method M --stage K --lora DIR`

CURLoRA is a rank-r LoRA in disguise: W + α·C·U·R = W + B·A with B = α·C·U (out × r) and A = R (r × in). The
folder written has lora_alpha = r, so PEFT's scale α/r is 1 and α lives in B. A and B are computed in float32 from
the stage's own C, U and R (cut from the run's base weights), in the math orientation (out × in) whatever the layer
stores: PEFT's LoRA keeps A as r × in and B as out × r for GPT-2's Conv1D too, and `fan_in_fan_out` only tells it
how to merge. The forward PEFT then runs, (x·Aᵀ)·Bᵀ, is the very product CURLoRA's frozen-U forward runs,
(x·Rᵀ)·(α·C·U)ᵀ, so the logits agree to float rounding (tests/test_export_formats.py: ≤ 1e-5, in a process that
never imports curlora).

LoRA, MiCA and DoRA stages are PEFT LoRA folders already, and PiSSA's, CorDA's and OSF's are saved as LoRA folders
that apply to the original base (curlora/methods/adapters.py: save_residual, save_delta), so all of those are copied
as they are (without the studio's method.json marker). What a server accepts varies: DoRA needs use_dora support
(vLLM has none), and OSF's folder is a full-rank LoRA (rank = each matrix's smaller side).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from curlora.errors import CurloraError
from curlora.methods.registry import method as registered
from curlora.run.store import Run

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."


# -- which stage -------------------------------------------------------------------------------------------------
def method_kind(run: Run, label: str) -> str:
    """The kind of the method labelled `label` in the run's config (one sentence naming the labels if none)."""
    kinds = {m.label: m.kind for m in run.config().methods}
    if label not in kinds:
        raise CurloraError(f"Run {run.id} has no method {label!r}; its methods are {', '.join(kinds)}.")
    return kinds[label]


def finished_stage(run: Run, label: str, stage: int, *, weights: str = "adapter") -> Path:
    """The folder of `label`'s stage `stage`, when metrics.json vouches for it (a stage saved but not yet evaluated,
    or a half-written .partial, is not finished). `weights`: "adapter" (a PEFT-layout folder is needed) or "model"
    (a full fine-tune's saved model also does)."""
    kind = method_kind(run, label)
    m = registered(kind)
    if not (m.has_adapter or (weights == "model" and m.trains_all_weights)):
        wanted = "adapter methods (e.g. curlora, lora)" if weights == "adapter" else \
            "adapter methods and full fine-tunes"
        raise CurloraError(f"{label!r} ({kind}) saves no stage that can be exported this way; pick one of the "
                           f"{wanted}.")
    tasks = len(run.config().tasks)
    if not 1 <= stage <= tasks:
        raise CurloraError(f"Stage must be between 1 and {tasks} (the task after which the stage was saved); "
                           f"got {stage}.")
    rec = run.record().methods.get(label)
    done = rec.stages_done if rec else 0
    folder = run.adapter_dir(label, stage)
    if stage > done or not folder.is_dir() or folder.is_symlink():
        finished = f"finished: 1–{done}" if done > 1 else ("finished: 1" if done == 1 else "none finished yet")
        raise CurloraError(f"Stage {stage} of {label!r} in run {run.id} is not finished ({finished}); export a "
                           "finished stage or wait for the run.")
    return folder


# -- where it goes -----------------------------------------------------------------------------------------------
def check_destination(dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        raise CurloraError(f"{dest} already exists; choose a new path for the export.")


def publish(dest: Path, write: Callable[[Path], None], folder: bool) -> Path:
    """Write through `write(tmp)` into a temporary path beside `dest`, then rename it into place: the export appears
    whole or not at all (an error, a kill or a full disk leaves no half-written file under the user's name)."""
    dest = Path(dest)
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, made the ordinary way (not mkstemp's private 0600): the export gets the user's usual permissions
    tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    try:
        if folder:
            tmp.mkdir()
        write(tmp)
        check_destination(dest)  # someone else may have taken the name while this one wrote
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    return dest


# -- CURLoRA as LoRA ---------------------------------------------------------------------------------------------
def curlora_as_lora(adapted, adapter_name: str = "default", base_name: str | None = None):
    """(peft.LoraConfig, state dict in PEFT's keys) equal to the CURLoRA adapter on `adapted` (a CURLoRA-wrapped
    model): per layer lora_A = R (r × in) and lora_B = α·C·U (out × r), scale 1."""
    import peft
    import torch

    from curlora.adapter.layer import Conv1DCURLoRA
    from curlora.adapter.model import curlora_layers

    layers = curlora_layers(adapted)
    if not layers:
        raise CurloraError("This model carries no CURLoRA adapter to export as LoRA.")
    state, names, conv1d, rank = {}, [], False, None
    for name, layer in layers.items():
        f = layer.curlora_factors[adapter_name]
        with torch.no_grad():
            # float32 or better, whatever the base dtype: r × r and m × r numbers cost nothing, and B keeps U's
            # small trained values that a bf16 copy would round
            dt = torch.promote_types(f.U.dtype, torch.float32)
            b = f.alpha * (f.C.to(dt) @ f.U.detach().to(dt))
            a = f.R.to(dt)
        state[f"{PEFT_KEY_PREFIX}{name}.lora_A.weight"] = a.cpu().contiguous()
        state[f"{PEFT_KEY_PREFIX}{name}.lora_B.weight"] = b.cpu().contiguous()
        names.append(name)
        conv1d = conv1d or isinstance(layer, Conv1DCURLoRA)
        rank = f.U.shape[0]
    config = peft.LoraConfig(
        r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", inference_mode=True,
        # the exact layer names: a suffix list could match a layer CURLoRA did not adapt in another checkout
        target_modules=names,
        # GPT-2's Conv1D stores W transposed; PEFT fixes the flag per layer, but a correct config warns nothing
        fan_in_fan_out=conv1d,
        base_model_name_or_path=base_name)
    return config, state


def write_lora(config, state: dict, dest: Path) -> Path:
    """adapter_config.json + adapter_model.safetensors, as PEFT's save_pretrained writes them, at `dest` (new)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))

    return publish(Path(dest), write, folder=True)


def _copy_lora(stage: Path, dest: Path) -> Path:
    """A stage that already is a PEFT LoRA folder: its config and weights, nothing of the studio's. A named init
    ("mica") becomes PEFT's plain one: the saved weights replace whatever an init draws, and a loader that doesn't
    know the name (or runs its SVD on every layer first) gains nothing from it."""
    def write(tmp: Path) -> None:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (stage / name).is_file() or (stage / name).is_symlink():
                raise CurloraError(f"{stage} lacks {name}; the stage is incomplete and cannot be exported.")
            shutil.copyfile(stage / name, tmp / name)
        config = json.loads((tmp / CONFIG_NAME).read_text(encoding="utf-8"))
        if isinstance(config.get("init_lora_weights"), str):
            config["init_lora_weights"] = True
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    return publish(dest, write, folder=True)


def _peft_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("peft_type")
    except (OSError, ValueError, AttributeError):
        raise CurloraError(f"{folder / CONFIG_NAME} is missing or not a JSON object; the stage cannot be "
                           "exported.") from None


def export_lora(run: Run, label: str, stage: int, dest: Path) -> dict:
    """Stage `stage` of method `label` as a PEFT LoRA folder at `dest` (must not exist). Returns what was written:
    {"path", "kind", "r", "converted"} (converted: CURLoRA factors turned into LoRA's; else a copy)."""
    dest = Path(dest)
    check_destination(dest)
    folder = finished_stage(run, label, stage)
    kind = method_kind(run, label)
    if _peft_type(folder) == "LORA":  # decided by what the folder holds, not by the method's name
        _copy_lora(folder, dest)
        config = json.loads((dest / CONFIG_NAME).read_text(encoding="utf-8"))
        return {"path": str(dest), "kind": kind, "r": config.get("r"), "converted": False}
    from curlora.methods import adapters
    from curlora.models.loading import load_model

    cfg = run.config()
    # on the CPU in the run's own dtype: C and R are cut again from the very weights the stage trained on (the
    # adapter's sketch check refuses anything else), and the factors are written in float32 whatever that dtype
    base, _, _ = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu", memory_check=False)
    adapted = adapters.load_adapter(base, folder)
    config, state = curlora_as_lora(adapted, base_name=cfg.model.name)
    write_lora(config, state, dest)
    return {"path": str(dest), "kind": kind, "r": config.r, "converted": True}
