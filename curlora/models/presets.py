"""presets/models.yaml: the base models the app offers, each with its target modules, rank and size.

The key of each entry is exactly what `curlora.models.loading.load_model` takes (a bundled name or a hub id), so a preset
is only advice: any other folder or hub id loads too. Entries keep their file order; the first is the default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curlora.errors import CurloraError
from curlora.paths import PRESETS

PRESETS_FILE = PRESETS / "models.yaml"
FAMILIES = ("llama", "gpt2", "qwen2", "mistral")
SOURCES = ("bundled", "package", "hub")
# what a preset's gpu_24gb may set, and the type of each (model.dtype, model.quantization, training.*)
GPU_24GB_KEYS = {"dtype": str, "quantization": str, "batch_size": int, "max_length": int,
                 "gradient_checkpointing": bool}
REQUIRED = ("source", "family", "architecture", "parameters", "memory_gb", "target_modules", "rank", "gated",
            "license")


@dataclass(frozen=True)
class ModelPreset:
    """One entry of presets/models.yaml (see the comment at the top of that file for each field)."""

    name: str = field(metadata={"help": "Bundled name or hub id; what the loader is given."})
    source: str = field(metadata={"help": "bundled | package | hub"})
    family: str = field(metadata={"help": "llama | gpt2 | qwen2 | mistral"})
    architecture: str = field(metadata={"help": "transformers class, e.g. LlamaForCausalLM."})
    parameters: int = field(metadata={"help": "Exact parameter count."})
    memory_gb: dict[str, float] = field(metadata={"help": "Weights only, per dtype, in 10^9 bytes."})
    target_modules: tuple[str, ...] = field(metadata={"help": "Adapted by default."})
    rank: int = field(metadata={"help": "Suggested rank."})
    gated: bool = field(metadata={"help": "Hub asks to accept terms and log in."})
    license: str = field(metadata={"help": "License of the weights."})
    label: str = field(default="", metadata={"help": "Display name."})
    paper_target_modules: tuple[str, ...] = field(default=(), metadata={"help": "The paper's choice, if any."})
    probe: str | None = field(default=None, metadata={"help": "Default probe text, relative to the repo."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the repository's own code."})
    notes: str = field(default="", metadata={"help": "Shown beside the choice."})
    gpu_24gb: dict = field(default_factory=dict, metadata={
        "help": "Settings whose training-memory estimate fits a 24 GB GPU (keys of GPU_24GB_KEYS)."})


@dataclass(frozen=True)
class ZeroShot:
    """One task scored zero-shot: accuracy with its n and 95 % Wilson interval, and the most-predicted class share."""

    task: str = field(metadata={"help": "Task name."})
    accuracy: float = field(metadata={"help": "Share of rows right."})
    n: int = field(metadata={"help": "Rows scored."})
    ci95: tuple[float, float] = field(metadata={"help": "Wilson 95 % interval of the accuracy."})
    majority: float = field(metadata={"help": "Majority-class share of those rows."})
    pred_share: float = field(metadata={"help": "Share of rows given the most-predicted class (1.0: one answer)."})

    def text(self) -> str:
        lo, hi = self.ci95
        one = " (one class for every row)" if self.pred_share >= 0.999 else ""
        return (f"{self.task} {100 * self.accuracy:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}] n={self.n}, majority "
                f"{100 * self.majority:.0f} %{one}")


@dataclass(frozen=True)
class ModelQuality:
    """What this project measured of a preset, and how (so the Model tab states a protocol with every number)."""

    model: str = field(metadata={"help": "Preset name."})
    weights: str = field(metadata={"help": "How the measured weights were stored, e.g. Q4_1, dequantised."})
    perplexity: float = field(metadata={"help": "WikiText-2 test perplexity under `protocol`."})
    protocol: str = field(metadata={"help": "The perplexity protocol in words."})
    zero_shot: tuple[ZeroShot, ...] = field(metadata={"help": "Zero-shot accuracies, likelihood scoring."})
    scoring: str = field(metadata={"help": "How the zero-shot rows were scored."})
    reply: str = field(default="", metadata={"help": "Greedy reply to the Paris question through the template."})
    measured_by: str = field(default="", metadata={"help": "The command that wrote this file."})
    machine: str = field(default="", metadata={"help": "Where it was measured."})

    @classmethod
    def from_json(cls, data: dict) -> "ModelQuality":
        zs = tuple(ZeroShot(**{**z, "ci95": tuple(z["ci95"])}) for z in data.get("zero_shot", []))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "zero_shot"}
        return cls(**known, zero_shot=zs)

    def to_json(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def load_model_presets(path: str | os.PathLike | None = None) -> dict[str, ModelPreset]:
    """Every entry of the models preset file, in file order; a malformed entry is a `CurloraError`."""
    path = Path(path) if path else PRESETS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CurloraError(f"The model presets file {path} cannot be read ({err.strerror}).") from None
    except yaml.YAMLError as err:
        raise CurloraError(f"The model presets file {path} is not valid YAML ({err}).") from None
    if not isinstance(data, dict) or not data:
        raise CurloraError(f"The model presets file {path} must map model names to their settings.")
    return {str(name): _parse(str(name), body, path) for name, body in data.items()}


def default_model_name(path: str | os.PathLike | None = None) -> str:
    """SmolLM2 (a real pretrained model) where its package is installed; the first entry otherwise."""
    from curlora.models.gguf import PACKAGED, packaged

    presets = load_model_presets(path)
    for name in presets:
        if name in PACKAGED:
            try:
                packaged(name)
                return name
            except CurloraError:
                pass
    return next(iter(presets))


def quality(name: str) -> ModelQuality | None:
    """What this project measured of a preset (presets/quality/<name>.json, written by bench/model_quality.py)."""
    path = PRESETS / "quality" / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return ModelQuality.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _parse(name: str, body: object, path: Path) -> ModelPreset:
    where = f"{path.name}, entry '{name}'"
    if not isinstance(body, dict):
        raise CurloraError(f"{where}: expected a mapping of settings.")
    missing = [k for k in REQUIRED if k not in body]
    if missing:
        raise CurloraError(f"{where}: missing {', '.join(missing)}.")
    known = set(ModelPreset.__dataclass_fields__) - {"name"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise CurloraError(f"{where}: unknown setting '{unknown[0]}'; known: {', '.join(sorted(known))}.")
    if body["source"] not in SOURCES:
        raise CurloraError(f"{where}: source must be one of {', '.join(SOURCES)}.")
    if body["family"] not in FAMILIES:
        raise CurloraError(f"{where}: family must be one of {', '.join(FAMILIES)}.")
    for key in ("target_modules", "paper_target_modules"):
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise CurloraError(f"{where}: {key} must be a list of module names.")
    if not body["target_modules"]:
        raise CurloraError(f"{where}: target_modules needs at least one module name.")
    for key in ("parameters", "rank"):
        if not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 1:
            raise CurloraError(f"{where}: {key} must be a positive whole number.")
    memory = body["memory_gb"]
    if not isinstance(memory, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in memory.values()):
        raise CurloraError(f"{where}: memory_gb must map dtypes to sizes in GB.")
    for key in ("gated", "trust_remote_code"):
        if not isinstance(body.get(key, False), bool):
            raise CurloraError(f"{where}: {key} must be true or false.")
    fit = body.get("gpu_24gb", {})
    if not isinstance(fit, dict) or any(k not in GPU_24GB_KEYS or type(v) is not GPU_24GB_KEYS[k]
                                        for k, v in fit.items()):
        raise CurloraError(f"{where}: gpu_24gb must map some of {', '.join(GPU_24GB_KEYS)} to a value of its type.")
    return ModelPreset(
        name=name, **{k: v for k, v in body.items() if k not in ("target_modules", "paper_target_modules")},
        target_modules=tuple(body["target_modules"]), paper_target_modules=tuple(body.get("paper_target_modules", [])),
    )


def gpu_24gb_text(preset: ModelPreset) -> str:
    """A preset's 24 GB settings as one line ("" when it states none)."""
    f = preset.gpu_24gb
    if not f:
        return ""
    parts = [f.get("dtype", "the preset's dtype")]
    if f.get("quantization", "none") != "none":
        parts.append(f"{f['quantization']} base")
    if "batch_size" in f or "max_length" in f:
        parts.append(f"batch {f.get('batch_size', '?')} x {f.get('max_length', '?')} tokens")
    parts.append("gradient checkpointing on" if f.get("gradient_checkpointing") else "no gradient checkpointing")
    return ", ".join(parts)
