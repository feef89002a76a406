"""CURLoRA as a PEFT method: its `PeftType` member and its registration with `peft.utils.register_peft_method`.

PEFT 0.21 registers a method by name only if `PeftType` already has a member for it, and `PeftType` is a closed
`str` enum; so the member is added first (the same object PEFT's own members are: a `PeftType` that equals the
string "CURLORA"), then the config and the tuner are registered. Both steps are idempotent.
"""

from __future__ import annotations

PEFT_TYPE = "CURLORA"
PREFIX = "curlora_"


def peft_type():
    """PEFT's enum member for CURLoRA (added on first use)."""
    from peft.utils.peft_types import PeftType

    member = PeftType.__members__.get(PEFT_TYPE)
    if member is None:
        member = str.__new__(PeftType, PEFT_TYPE)
        member._name_ = member._value_ = PEFT_TYPE
        member.__objclass__ = PeftType
        member._sort_order_ = len(PeftType._member_names_)
        PeftType._member_map_[PEFT_TYPE] = member
        PeftType._value2member_map_[PEFT_TYPE] = member
        PeftType._member_names_.append(PEFT_TYPE)
        type.__setattr__(PeftType, PEFT_TYPE, member)
    return member


def register() -> None:
    """Make `peft.get_peft_model` and `PeftModel.from_pretrained` know CURLoRA."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    member = peft_type()
    if member in PEFT_TYPE_TO_TUNER_MAPPING:
        return
    from curlora.adapter.config import CURLoRAConfig
    from curlora.adapter.model import CURLoRATuner

    register_peft_method(name=PEFT_TYPE.lower(), config_cls=CURLoRAConfig, model_cls=CURLoRATuner, prefix=PREFIX)
