"""The CURLoRA layer: W' = W + alpha · C U R, with C, R frozen slices of W and U (r x r) the only trainable tensor.

A wrapper replaces each targeted module and keeps the original as `base_layer`, so removing the adapter hands
back the very module that was there before. Adapter state lives in the wrapper, keyed by adapter name
(`wrapper.curlora[name]`), as PEFT does it.

Which wrapper is built is decided by the wrapped module's type (`dispatch`): `nn.Linear` stores W as out x in,
GPT-2's `Conv1D` stores it transposed (in x out). Everything else in this file speaks the math's orientation
(out x in) and only `weight_math`/`_delta_to_storage` know the difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # GPT-2 family's transposed linear layer; optional so the layer works on plain torch models too.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a hard requirement of the app, not of this file
    Conv1D = None


class CURFactors(nn.Module):
    """One adapter's state for one matrix: U (trainable) and the frozen C, R and their indices.

    C and R are non-persistent buffers: they follow `.to()` but stay out of the base model's state dict, since
    they are rebuilt from the base weights and the saved indices I, J.
    """

    def __init__(self, weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, alpha: float):
        super().__init__()
        r = rows.numel()
        self.alpha = float(alpha)
        self.register_buffer("I", rows.to(torch.int64).cpu(), persistent=False)
        self.register_buffer("J", cols.to(torch.int64).cpu(), persistent=False)
        w = weight.detach()
        self.register_buffer("C", w[:, cols.to(w.device)].clone(), persistent=False)  # m x r
        self.register_buffer("R", w[rows.to(w.device), :].clone(), persistent=False)  # r x n
        # Half-precision bases keep U in float32 (as PEFT does for its adapters): r² numbers cost nothing and
        # small optimiser updates don't round away.
        u_dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        self.U = nn.Parameter(torch.zeros(r, r, dtype=u_dtype, device=w.device))

    def folded(self) -> torch.Tensor:
        """alpha · C U (m x r) in C's dtype, cached until U changes: inference then costs LoRA's two matmuls."""
        key = (self.U._version, self.U.data_ptr(), self.C.data_ptr())
        if getattr(self, "_folded_key", None) != key:
            with torch.no_grad():
                cu = self.C.to(self.U.dtype) @ self.U
                self._folded = (cu * self.alpha if self.alpha != 1.0 else cu).to(self.C.dtype)
            self._folded_key = key
        return self._folded

    def delta(self) -> torch.Tensor:
        """alpha · C U R (m x n) in float32 or better — for merging and drift, never in forward."""
        dt = torch.promote_types(self.U.dtype, torch.float32)
        return self.alpha * (self.C.to(dt) @ self.U.to(dt) @ self.R.to(dt))

    def fingerprint(self) -> torch.Tensor:
        """Norms of C's columns and R's rows: cheap evidence that C and R were cut from the same base weights."""
        return torch.cat([self.C.double().norm(dim=0), self.R.double().norm(dim=1)]).float().cpu()

    def extra_repr(self) -> str:
        return f"r={self.U.shape[0]}, alpha={self.alpha}, C={tuple(self.C.shape)}, R={tuple(self.R.shape)}"


class CURLoRALayer(nn.Module):
    """Base wrapper: owns `base_layer`, a dict of adapters and the merge state. Subclasses set the orientation."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.curlora = nn.ModuleDict()
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False
        self._unmerged_weight: torch.Tensor | None = None  # exact copy kept while merged, for a lossless unmerge

    # -- orientation (overridden by Conv1D) --------------------------------------------------------------
    def weight_math(self) -> torch.Tensor:
        """The base weight as out x in."""
        return self.base_layer.weight

    def _delta_to_storage(self, delta: torch.Tensor) -> torch.Tensor:
        return delta

    # -- adapters ----------------------------------------------------------------------------------------
    def add_adapter(self, name: str, rows: torch.Tensor, cols: torch.Tensor, alpha: float) -> None:
        if self.merged_adapters:
            raise RuntimeError("unmerge the adapters before adding another")
        self.curlora[name] = CURFactors(self.weight_math(), rows, cols, alpha)
        if name not in self.active_adapters:
            self.active_adapters.append(name)

    def delete_adapter(self, name: str) -> None:
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge it first")
        del self.curlora[name]
        self.active_adapters = [a for a in self.active_adapters if a != name]

    # -- merging -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, names: list[str] | None = None, keep_original: bool = True) -> None:
        """Fold alpha·C U R into the base weight. With keep_original, unmerge restores W bit for bit."""
        names = [n for n in (names or self.active_adapters) if n not in self.merged_adapters]
        if not names:
            return
        weight = self.base_layer.weight
        if keep_original and self._unmerged_weight is None:
            self._unmerged_weight = weight.detach().clone()
        total = sum(self.curlora[n].delta() for n in names)
        weight.data = (weight.detach().to(total.dtype) + self._delta_to_storage(total)).to(weight.dtype)
        self.merged_adapters.extend(names)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged_adapters:
            return
        weight = self.base_layer.weight
        if self._unmerged_weight is not None:
            weight.data = self._unmerged_weight
            self._unmerged_weight = None
        else:
            total = sum(self.curlora[n].delta() for n in self.merged_adapters)
            weight.data = (weight.detach().to(total.dtype) - self._delta_to_storage(total)).to(weight.dtype)
        self.merged_adapters = []

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled:
            if self.merged_adapters:
                raise RuntimeError("cannot disable merged adapters; unmerge first")
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters:
                continue
            f = self.curlora[name]
            h = F.linear(x.to(f.R.dtype), f.R)  # x Rᵀ: never the m x n product C U R
            if torch.is_grad_enabled() and f.U.requires_grad:
                # Training: ((x Rᵀ) Uᵀ) Cᵀ, so U's gradient is an r x r product and nothing m x r is rebuilt.
                h = F.linear(F.linear(h.to(f.U.dtype), f.U).to(f.C.dtype), f.C)
                if f.alpha != 1.0:
                    h = h * f.alpha
            else:
                h = F.linear(h, f.folded())  # frozen U: (x Rᵀ)(alpha C U)ᵀ, two matmuls as in LoRA
            result = result + h.to(result.dtype)
        return result

    def extra_repr(self) -> str:
        return f"active={self.active_adapters}, merged={self.merged_adapters}"


class LinearCURLoRA(CURLoRALayer):
    """For `nn.Linear` (weight stored out x in, as in the math)."""


class Conv1DCURLoRA(CURLoRALayer):
    """For GPT-2's `Conv1D`, which stores its weight in x out and computes x @ W + b."""

    def weight_math(self) -> torch.Tensor:
        return self.base_layer.weight.T

    def _delta_to_storage(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.T


def math_weight(module: nn.Module) -> torch.Tensor:
    """A (possibly wrapped) module's weight as out x in, whatever its storage orientation."""
    if isinstance(module, CURLoRALayer):
        return module.weight_math()
    if Conv1D is not None and isinstance(module, Conv1D):
        return module.weight.T
    return module.weight


def dispatch(module: nn.Module) -> type[CURLoRALayer] | None:
    """The wrapper class for a module, or None if CURLoRA can't adapt it."""
    if isinstance(module, nn.Linear):
        return LinearCURLoRA
    if Conv1D is not None and isinstance(module, Conv1D):
        return Conv1DCURLoRA
    return None
