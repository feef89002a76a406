"""The CURLoRA layer: W' = W + alpha · C U R, with C, R frozen slices of W and U (r x r) the only trainable tensor.

A PEFT tuner layer (`BaseTunerLayer`): it replaces each targeted module and keeps the original as `base_layer`, so
removing the adapter hands back the very module that was there before. Each adapter's state is one `CURFactors`
in `layer.curlora_factors[name]`, so PEFT's own calls (set_adapter, delete_adapter, disable_adapter, merge, unload,
save_pretrained, from_pretrained) find it by adapter name.

What is saved per matrix: U, the sampled row and column indices I and J, the matrix's shape and a sketch of C and
R (their norms and a few seeded random projections). C and R themselves are cut again from the base weight on load
(`_recut_after_load`), after checking the sketch, so a near-copy of the base (noise, a sign flip, a fine-tuned
derivative) is refused instead of silently giving other C and R.

Which wrapper is built is decided by the wrapped module's type (`dispatch`): `nn.Linear` stores W as out x in,
GPT-2's `Conv1D` stores it transposed (in x out). Everything else in this file speaks the math's orientation
(out x in) and only `weight_math`/`_delta_to_storage` know the difference.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from curlora.errors import CurloraError

try:  # GPT-2 family's transposed linear layer; optional so the layer works on plain torch models too.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a hard requirement of the app, not of this file
    Conv1D = None

# How close a reloaded C and R must be to the saved sketch. Norms: relative 2e-2, loose enough for the same base
# in another dtype (bf16 keeps ~3 digits). Projections: 2e-2 of the column's (row's) norm — bf16 rounding moves a
# projection by ~2e-3 of it, 5 % noise on every weight by ~5e-2, a sign flip by twice its size.
SKETCH_RTOL = 2e-2
SKETCH_SEED = 20240711


def _probe_vector(length: int, salt: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SKETCH_SEED + 7919 * length + salt)
    return torch.randn(length, generator=g, dtype=torch.float64)


def sketch(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """[‖C's columns‖, ‖R's rows‖, Cᵀg, R h] with g, h fixed Gaussian vectors (float32, 4r numbers): cheap
    evidence that C and R were cut from the very same base weights."""
    c, r = c.detach().double().cpu(), r.detach().double().cpu()
    g, h = _probe_vector(c.shape[0], 1), _probe_vector(r.shape[1], 2)
    return torch.cat([c.norm(dim=0), r.norm(dim=1), c.T @ g, r @ h]).float()


def sketch_matches(now: torch.Tensor, saved: torch.Tensor) -> bool:
    """Whether a recomputed sketch is the saved one (a 0.1.0 adapter saved the norms only: 2r numbers)."""
    now, saved = now.double(), saved.double()
    n = saved.numel() if saved.numel() < now.numel() else now.numel() // 2
    if not torch.allclose(now[:n], saved[:n], rtol=SKETCH_RTOL, atol=1e-6):
        return False
    if saved.numel() == n:
        return True
    scale = now[:n]  # each projection is compared on the scale of its own column's / row's norm
    return bool(((now[n:] - saved[n:]).abs() <= SKETCH_RTOL * scale + 1e-6).all())


class CURFactors(nn.Module):
    """One adapter's state for one matrix: U (trainable), the indices and sketch (saved), C and R (cut from W).

    C and R are non-persistent buffers: they follow `.to()` but stay out of every state dict, since they are
    rebuilt from the base weights and the saved indices I, J.
    """

    def __init__(self, weight: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, alpha: float):
        super().__init__()
        r = rows.numel()
        self.alpha = float(alpha)
        self.register_buffer("I", rows.to(torch.int64).cpu().clone())
        self.register_buffer("J", cols.to(torch.int64).cpu().clone())
        self.register_buffer("shape", torch.tensor(list(weight.shape), dtype=torch.int64))
        self.register_buffer("C", torch.empty(0), persistent=False)
        self.register_buffer("R", torch.empty(0), persistent=False)
        self.register_buffer("sketch", torch.empty(0))
        self.recut(weight)
        self.sketch = sketch(self.C, self.R)
        # Half-precision bases keep U in float32 (as PEFT does for its adapters): r² numbers cost nothing and
        # small optimiser updates don't round away.
        u_dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        self.U = nn.Parameter(torch.zeros(r, r, dtype=u_dtype, device=weight.device))
        self.reloaded = False

    def recut(self, weight: torch.Tensor) -> None:
        w = weight.detach()
        self.C = w[:, self.J.to(w.device)].clone()  # m x r
        self.R = w[self.I.to(w.device), :].clone()  # r x n

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "sketch")
        if saved is not None and saved.shape != self.sketch.shape:  # a 0.1.0 adapter's norms-only fingerprint
            self.sketch = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.reloaded = self.reloaded or (prefix + "I") in state_dict

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
        """alpha · C U R (m x n) in float32 or better — for merging, never in forward."""
        dt = torch.promote_types(self.U.dtype, torch.float32)
        return self.alpha * (self.C.to(dt) @ self.U.to(dt) @ self.R.to(dt))

    def delta_sq_norm(self) -> float:
        """‖alpha · C U R‖²_F without forming the m x n product (for the weight drift)."""
        c, u, r = self.C.double(), self.U.detach().double(), self.R.double()
        return float(self.alpha ** 2 * torch.trace((c.T @ c) @ u @ (r @ r.T) @ u.T))

    def extra_repr(self) -> str:
        return f"r={self.U.shape[0]}, alpha={self.alpha}, C={tuple(self.C.shape)}, R={tuple(self.R.shape)}"


def _recut_after_load(layer: CURLoRALayer, incompatible_keys) -> None:
    """After PEFT (or anyone) loaded saved indices into a layer: cut C and R from this base and check the sketch."""
    for name, f in layer.curlora_factors.items():
        if not f.reloaded:
            continue
        f.reloaded = False
        w = layer.weight_math()
        want = tuple(f.shape.tolist())
        if tuple(w.shape) != want:
            raise CurloraError(
                f"This CURLoRA adapter was trained on a different base model: a matrix it adapts is "
                f"{w.shape[0]} x {w.shape[1]} here but {want[0]} x {want[1]} in the adapter."
            )
        f.recut(w)
        if not sketch_matches(sketch(f.C, f.R), f.sketch):
            raise CurloraError(
                "This CURLoRA adapter was trained on different base weights: the rows and columns it samples "
                "don't match this model's. Load it on the model it was trained on (base_model_name_or_path in its "
                "adapter_config.json)."
            )


class CURLoRALayer(nn.Module, BaseTunerLayer):
    """Base wrapper: owns `base_layer`, the adapters' factors and the merge state. Subclasses set the orientation."""

    adapter_layer_names = ("curlora_factors",)
    other_param_names = ()

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.curlora_factors = nn.ModuleDict()
        self._disable_adapters = False
        self._active_adapter = []
        self.merged_adapters = []
        self._unmerged_weight: torch.Tensor | None = None  # exact copy kept while merged, for a lossless unmerge
        self.register_load_state_dict_post_hook(_recut_after_load)

    # -- orientation (overridden by Conv1D) --------------------------------------------------------------
    def weight_math(self) -> torch.Tensor:
        """The base weight as out x in (dequantised when bitsandbytes packed it)."""
        return dense_weight(self.get_base_layer())

    def _delta_to_storage(self, delta: torch.Tensor) -> torch.Tensor:
        return delta

    # -- adapters ----------------------------------------------------------------------------------------
    def update_layer(self, adapter_name: str, rows: torch.Tensor, cols: torch.Tensor, alpha: float,
                     inference_mode: bool = False) -> None:
        if self.merged_adapters:
            raise CurloraError("Unmerge the adapters before adding another.")
        self.curlora_factors[adapter_name] = CURFactors(self.weight_math(), rows, cols, alpha)
        active = self.active_adapters or [adapter_name]
        self.set_adapter(active, inference_mode=inference_mode)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """alpha · C U R in the base weight's storage orientation (PEFT's name for it)."""
        return self._delta_to_storage(self.curlora_factors[adapter_name].delta())

    # -- merging -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold alpha·C U R into the base weight; `unmerge` restores W bit for bit from a kept copy."""
        names = [n for n in check_adapters_to_merge(self, adapter_names) if n in self.curlora_factors]
        if not names:
            return
        if is_quantized(self.get_base_layer()):
            raise CurloraError("CURLoRA cannot merge into a quantised (8-bit / 4-bit) base weight; keep the adapter "
                               "separate, or merge on a full-precision load of the base.")
        weight = self.get_base_layer().weight
        if self._unmerged_weight is None:
            self._unmerged_weight = weight.detach().clone()
        total = sum(self.curlora_factors[n].delta() for n in names)
        merged = (weight.detach().to(total.dtype) + self._delta_to_storage(total)).to(weight.dtype)
        if safe_merge and not torch.isfinite(merged).all():
            raise CurloraError(f"Merging {', '.join(names)} gives non-finite weights; the adapter is broken.")
        weight.data = merged
        self.merged_adapters.extend(names)

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        self.get_base_layer().weight.data = self._unmerged_weight
        self._unmerged_weight = None
        self.merged_adapters = []

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name in self.merged_adapters or name not in self.curlora_factors:
                continue
            f = self.curlora_factors[name]
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


class LinearCURLoRA(CURLoRALayer):
    """For `nn.Linear` (weight stored out x in, as in the math)."""


class Conv1DCURLoRA(CURLoRALayer):
    """For GPT-2's `Conv1D`, which stores its weight in x out and computes x @ W + b."""

    def weight_math(self) -> torch.Tensor:
        return dense_weight(self.get_base_layer()).T

    def _delta_to_storage(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.T


def is_quantized(module: nn.Module) -> bool:
    """Whether bitsandbytes packed this layer's weight (8-bit or 4-bit)."""
    from peft.utils.integrations import get_bnb_param_type

    return bool(get_bnb_param_type(getattr(module, "weight", None)))


def dense_weight(module: nn.Module) -> torch.Tensor:
    """A plain layer's weight as stored, dequantised to its compute dtype where bitsandbytes packed it."""
    if not is_quantized(module):
        return module.weight
    from peft.utils.integrations import dequantize_bnb_weight

    with torch.no_grad():
        w = dequantize_bnb_weight(module.weight, getattr(module, "state", None))
    dtype = getattr(module, "compute_dtype", None) or torch.float32
    return w.to(dtype)


def math_weight(module: nn.Module) -> torch.Tensor:
    """A (possibly wrapped) module's weight as out x in, whatever its storage orientation (dequantised)."""
    if isinstance(module, CURLoRALayer):
        return module.weight_math()
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    if Conv1D is not None and isinstance(module, Conv1D):
        return module.weight.T
    return dense_weight(module)


def dispatch(module: nn.Module) -> type[CURLoRALayer] | None:
    """The wrapper class for a module, or None if CURLoRA can't adapt it."""
    if isinstance(module, BaseTunerLayer):
        module = module.get_base_layer()
    if isinstance(module, nn.Linear):
        return LinearCURLoRA
    if Conv1D is not None and isinstance(module, Conv1D):
        return Conv1DCURLoRA
    return None
