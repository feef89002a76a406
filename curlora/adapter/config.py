"""`CURLoRAConfig`: the settings of one CURLoRA adapter, a real PEFT config (`peft_type` CURLORA).

Importing this module registers CURLoRA with PEFT (curlora/adapter/peft_method.py), so `peft.get_peft_model`,
`PeftModel.from_pretrained` and `PeftConfig.from_pretrained` know it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import PeftConfig

from curlora.adapter import peft_method
from curlora.adapter.sampling import SAMPLING_MODES
from curlora.errors import CurloraError, clip

PEFT_TYPE = peft_method.PEFT_TYPE
VERSION = "0.2.0"  # the adapter layout: 0.1.0 wrote `<module>.curlora_U`; 0.2.0 writes PEFT's keys


@dataclass
class CURLoRAConfig(PeftConfig):
    """Settings of a CURLoRA adapter: W' = W + alpha · C U R for every targeted weight W.

    Args:
        r: rank — the number of sampled columns (C) and rows (R); U is r x r, so each adapted matrix trains r²
            numbers.
        alpha: scale of the update (1.0 in the paper; no 1/r factor).
        target_modules: module names to adapt — a list matched against the end of each module's dotted name
            (PEFT's rule), a regular expression matched against the whole name, or "all-linear" (every Linear or
            Conv1D except the output head).
        sampling: how C's columns and R's rows are drawn — "inverted" (paper: p ∝ 1/‖col‖²), "inverted_offset"
            (reference code: p ∝ 1/(p + 0.001)), "uniform", "norm" (p ∝ ‖col‖²) or "leverage" (classic CUR).
        replace: sample with replacement (paper and reference code) or without.
        seed: seeds the sampler together with each module's name, so C and R are reproducible.
    """

    r: int = field(default=8, metadata={"help": "Rank: sampled columns/rows; U is r x r."})
    alpha: float = field(default=1.0, metadata={"help": "Scale of alpha·C U R (paper: 1.0)."})
    target_modules: list[str] | str | None = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Names (suffix match), a regex (full match) or 'all-linear'."},
    )
    sampling: str = field(default="inverted", metadata={"help": "inverted | inverted_offset | uniform | norm | leverage."})
    replace: bool = field(default=True, metadata={"help": "Sample indices with replacement (as the paper)."})
    seed: int = field(default=0, metadata={"help": "Seed of the column/row sampler (mixed with module names)."})
    curlora_version: str | None = field(default=None, metadata={"help": "The adapter layout that wrote it."})

    def __post_init__(self):
        if self.peft_type not in (None, PEFT_TYPE):
            raise CurloraError(f"This is not a CURLoRA config (peft_type={clip(self.peft_type)}).")
        self.peft_type = peft_method.peft_type()
        if self.task_type is None:
            self.task_type = "CAUSAL_LM"
        super().__post_init__()
        if self.curlora_version is None:
            self.curlora_version = VERSION
        if isinstance(self.target_modules, (tuple, set)):
            self.target_modules = list(self.target_modules)
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise CurloraError(f"CURLoRA rank r must be a positive whole number; got {clip(self.r)}.")
        if self.sampling not in SAMPLING_MODES:
            raise CurloraError(
                f"CURLoRA sampling must be one of {', '.join(SAMPLING_MODES)}; got {clip(self.sampling)}."
            )
        if not self.target_modules:
            raise CurloraError("CURLoRA needs at least one target module (e.g. q_proj, v_proj).")

    @classmethod
    def from_dict(cls, data: dict) -> CURLoRAConfig:
        """A config from a saved adapter_config.json: every key must be a setting (a typo is not ignored)."""
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k != "adapted_modules"}  # 0.1.0's bookkeeping, not a setting
        unknown = sorted(set(data) - known)
        if unknown:
            raise CurloraError(
                f"Unknown CURLoRA setting {clip(unknown[0])}; known settings are: {', '.join(sorted(known))}."
            )
        return cls(**data)
