"""`CURLoRAConfig`: the settings of one CURLoRA adapter, in the shape of PEFT's `LoraConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from curlora.adapter.sampling import SAMPLING_MODES
from curlora.errors import CurloraError

PEFT_TYPE = "CURLORA"


@dataclass
class CURLoRAConfig:
    """Settings of a CURLoRA adapter: W' = W + alpha · C U R for every targeted weight W.

    Args:
        r: rank — the number of sampled columns (C) and rows (R); U is r x r, so each adapted matrix trains r²
            numbers.
        alpha: scale of the update (1.0 in the paper; no 1/r factor).
        target_modules: module names to adapt — a list matched against the end of each module's dotted name
            (PEFT's rule), a regular expression matched against the whole name, or "all-linear" (every Linear or
            Conv1D except the output head).
        sampling: how C's columns and R's rows are drawn — "inverted" (paper: p ∝ 1/‖col‖²), "inverted_offset"
            (reference code: p ∝ 1/(p + 0.001)), "uniform", or "norm" (classic CUR, p ∝ ‖col‖²).
        replace: sample with replacement (paper and reference code) or without.
        seed: seeds the sampler together with each module's name, so C and R are reproducible.
        base_model_name_or_path: recorded for the user; the loader checks the weights themselves.
    """

    r: int = field(default=8, metadata={"help": "Rank: sampled columns/rows; U is r x r."})
    alpha: float = field(default=1.0, metadata={"help": "Scale of alpha·C U R (paper: 1.0)."})
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Names (suffix match), a regex (full match) or 'all-linear'."},
    )
    sampling: str = field(default="inverted", metadata={"help": "inverted | inverted_offset | uniform | norm."})
    replace: bool = field(default=True, metadata={"help": "Sample indices with replacement (as the paper)."})
    seed: int = field(default=0, metadata={"help": "Seed of the column/row sampler (mixed with module names)."})
    base_model_name_or_path: str | None = field(default=None, metadata={"help": "Informational."})
    peft_type: str = field(default=PEFT_TYPE, metadata={"help": "Always CURLORA; tells adapter folders apart."})

    def __post_init__(self):
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise CurloraError(f"CURLoRA rank r must be a positive whole number; got {self.r!r}.")
        if self.sampling not in SAMPLING_MODES:
            raise CurloraError(
                f"CURLoRA sampling must be one of {', '.join(SAMPLING_MODES)}; got {self.sampling!r}."
            )
        if not self.target_modules:
            raise CurloraError("CURLoRA needs at least one target module (e.g. q_proj, v_proj).")
        if self.peft_type != PEFT_TYPE:
            raise CurloraError(f"This is not a CURLoRA config (peft_type={self.peft_type!r}).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CURLoRAConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        # Extra bookkeeping written by save_pretrained is not a setting.
        data = {k: v for k, v in data.items() if k not in ("curlora_version", "task_type", "adapted_modules")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CurloraError(
                f"Unknown CURLoRA setting {unknown[0]!r}; known settings are: {', '.join(sorted(known))}."
            )
        return cls(**data)
