"""Choosing which columns and rows of W become C and R.

Everything here runs in float64 on the CPU, whatever the weight's dtype or device: a bf16/fp16 weight with
small entries would square to zero (and invert to inf) in its own precision, and sampling on one device must
pick the same indices as on another. W is always in the orientation of the math (out x in); the layer code
transposes GPT-2's Conv1D before calling in here.
"""

from __future__ import annotations

import hashlib

import torch

SAMPLING_MODES = ("inverted", "inverted_offset", "uniform", "norm", "leverage")
# The rules that need only the squared norms of W's columns and rows (leverage needs W's singular vectors).
NORM_RULES = SAMPLING_MODES[:4]

# The reference implementation's offset: p~ ∝ 1 / (p + 0.001).
REFERENCE_OFFSET = 1e-3


def sampling_probabilities(squared_norms: torch.Tensor, mode: str) -> torch.Tensor:
    """Probabilities over columns (or rows) from their squared norms.

    - "inverted": p~_j ∝ 1 / p_j with p_j = ||W[:, j]||² / ||W||_F² (the paper).
    - "inverted_offset": p~_j ∝ 1 / (p_j + 0.001) (the reference code; near uniform for wide layers).
    - "uniform": every index equally likely.
    - "norm": p~_j ∝ p_j (classic CUR sampling by norm).
    All-zero columns are never chosen by "inverted" (their 1/p is infinite, yet they would add nothing to C·U·R);
    if every column is zero the result is uniform. "leverage" needs W itself: see `probabilities`.
    """
    if mode not in NORM_RULES:
        if mode in SAMPLING_MODES:
            raise ValueError(f"{mode!r} sampling needs the matrix, not its norms: use probabilities(weight, r, mode)")
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING_MODES)}; got {mode!r}")
    sq = squared_norms.detach().to(device="cpu", dtype=torch.float64)
    total = sq.sum()
    if mode == "uniform" or not torch.isfinite(total) or total <= 0:
        return torch.full_like(sq, 1.0 / sq.numel())
    p = sq / total
    if mode == "norm":
        weights = p
    elif mode == "inverted_offset":
        weights = 1.0 / (p + REFERENCE_OFFSET)
    else:
        nonzero = p > 0
        weights = torch.zeros_like(p)
        weights[nonzero] = 1.0 / p[nonzero]
    return weights / weights.sum()


def leverage_scores(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) leverage scores of W's top-k singular subspace: π_j = ‖V_k[j, :]‖² / k for columns and
    ‖U_k[i, :]‖² / k for rows (Mahoney & Drineas 2009), each summing to 1.

    k is capped at W's numerical rank: singular vectors of zero singular values are arbitrary, and would make the
    scores depend on the LAPACK build. An all-zero W gives uniform scores. Costs one exact SVD (seconds for a
    4096-wide matrix).
    """
    w = weight.detach().to(device="cpu", dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    k = min(int(k), int((s > s.max() * max(w.shape) * torch.finfo(torch.float64).eps).sum()))
    if k == 0:
        m, n = w.shape
        return torch.full((m,), 1.0 / m, dtype=torch.float64), torch.full((n,), 1.0 / n, dtype=torch.float64)
    rows = (u[:, :k] ** 2).sum(dim=1)
    cols = (vh[:k] ** 2).sum(dim=0)
    return rows / rows.sum(), cols / cols.sum()


def probabilities(weight: torch.Tensor, r: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(row_p, col_p): the probabilities `mode` gives W's rows and columns, float64 on the CPU; leverage uses k = r."""
    if mode == "leverage":
        return leverage_scores(weight, r)
    w = weight.detach().to(device="cpu", dtype=torch.float64)
    sq = w * w
    return sampling_probabilities(sq.sum(dim=1), mode), sampling_probabilities(sq.sum(dim=0), mode)


def generator_for(seed: int, module_name: str) -> torch.Generator:
    """A CPU generator seeded by (seed, module name), stable across processes and Python's hash seed."""
    digest = hashlib.sha256(f"{int(seed)}:{module_name}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def sample_indices(probs: torch.Tensor, r: int, replace: bool, generator: torch.Generator) -> torch.Tensor:
    """r indices drawn from `probs` (int64, CPU)."""
    n = probs.numel()
    if not replace and r > int((probs > 0).sum()):
        raise ValueError(
            f"rank r={r} needs {r} distinct indices but only {int((probs > 0).sum())} of {n} can be chosen; "
            "lower r or sample with replace=True"
        )
    return torch.multinomial(probs, r, replacement=replace, generator=generator)


def sample_cur_indices(
    weight: torch.Tensor, r: int, mode: str, replace: bool, seed: int, module_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(I, J): r row indices and r column indices of `weight` (out x in), columns drawn first.

    Columns and rows are sampled independently, as in the paper and the reference code.
    """
    row_p, col_p = probabilities(weight, r, mode)
    g = generator_for(seed, module_name)
    cols = sample_indices(col_p, r, replace, g)
    rows = sample_indices(row_p, r, replace, g)
    return rows, cols
