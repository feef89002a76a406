"""What CURLoRA's column/row sampling does to a model, before anything trains: per adapted matrix, the
probabilities every rule gives W's columns and rows, how far each is from uniform, the indices the adapter
would draw, and how much of W the chosen C and R carry.

    report = inspect_model(model, r=8, sampling="inverted")
    report["summary"]        # one sentence about the whole model
    report["matrices"][0]    # name, shape, probabilities, tv_from_uniform, rows, cols, unique_*, energy_*, histograms
    headers, rows = table(report)

The draws are the adapter's own (`sample_cur_indices` with the same seed and module name, on the modules the
adapter would target), so they are what `get_curlora_model` would hold. The report is plain lists, floats and
strings: JSON as it is, and the app only draws it.
"""

from __future__ import annotations

import math

import torch

from curlora.adapter.layer import CURLoRALayer, dispatch, math_weight
from curlora.adapter.model import find_target_modules
from curlora.adapter.sampling import SAMPLING_MODES, probabilities, sample_cur_indices
from curlora.errors import CurloraError, clip
from curlora.models.loading import default_targets, linear_module_names

SIDES = ("columns", "rows")
BINS = 30
# Histograms reach at most 10^4 below uniform; smaller probabilities (leverage's ~1e-30 outside W's top-k
# subspace) are counted in the first bin, exact zeros apart.
FLOOR_DECADES = 4
# Below this TV a rule is called almost uniform in the summary.
NEAR_UNIFORM = 0.05
TABLE_RULES = {"inverted": "inverted", "inverted_offset": "offset", "leverage": "leverage", "norm": "norm"}


def tv_from_uniform(p: torch.Tensor) -> float:
    """Total-variation distance to uniform, ½ Σ |p_i − 1/n|: 0 for uniform, towards 1 as the mass piles up on
    few indices."""
    p = p.to(torch.float64)
    return float(0.5 * (p - 1.0 / p.numel()).abs().sum())


def energy_share(squared_norms: torch.Tensor, indices: torch.Tensor) -> float:
    """‖W[:, J]‖²_F / ‖W‖²_F over the distinct drawn indices (rows alike): a repeat adds nothing C·U·R can reach,
    so it counts once and the share stays within [0, 1]."""
    total = float(squared_norms.sum())
    return float(squared_norms[torch.unique(indices)].sum()) / total if total > 0 else 0.0


def uniform_energy(n: int, r: int, replace: bool) -> float:
    """The expected `energy_share` of r uniform draws out of n, whatever the norms: each index is in with
    probability 1 − (1 − 1/n)^r with replacement, r/n without."""
    return 1.0 - (1.0 - 1.0 / n) ** r if replace else r / n


def histogram(probs: dict[str, torch.Tensor]) -> dict:
    """Counts of log10 p per rule over bins shared by the rules (so they overlay), with the uniform level 1/n."""
    level = -math.log10(next(iter(probs.values())).numel())
    logs = {rule: torch.log10(p[p > 0]) for rule, p in probs.items()}
    every = torch.cat(list(logs.values()))
    lo, hi = max(float(every.min()), level - FLOOR_DECADES), float(every.max())
    if hi - lo < 1e-9:  # every rule is uniform here: one bin around 1/n
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, BINS + 1, dtype=torch.float64)
    return {"log10_edges": edges.tolist(), "log10_centres": ((edges[1:] + edges[:-1]) / 2).tolist(),
            "log10_uniform": level,
            "counts": {rule: torch.histogram(v.clamp(lo, hi), bins=edges).hist.long().tolist()
                       for rule, v in logs.items()},
            "zeros": {rule: int((p == 0).sum()) for rule, p in probs.items()}}


def inspect_matrix(name: str, weight: torch.Tensor, r: int, sampling: str, seed: int, replace: bool) -> dict:
    """Everything the report says about one matrix W (out x in)."""
    m, n = weight.shape
    if r > min(m, n):
        raise CurloraError(f"Rank r={r} is larger than {clip(name)} ({m} x {n}) allows: C·U·R has rank at most "
                           f"{min(m, n)}; lower r.")
    try:
        rows, cols = sample_cur_indices(weight, r, sampling, replace, seed, name)
    except ValueError as err:  # too few columns can be drawn without replacement
        raise CurloraError(f"{clip(name)}: {err}.") from None
    per_rule = {rule: probabilities(weight, r, rule) for rule in SAMPLING_MODES}  # rule -> (rows, columns)
    probs = {side: {rule: p[1 - i] for rule, p in per_rule.items()} for i, side in enumerate(SIDES)}
    w = weight.detach().to(device="cpu", dtype=torch.float64)
    sq = w * w
    return {
        "name": name, "shape": [m, n],
        "probabilities": {side: {rule: p.tolist() for rule, p in probs[side].items()} for side in SIDES},
        "tv_from_uniform": {side: {rule: tv_from_uniform(p) for rule, p in probs[side].items()} for side in SIDES},
        "rows": rows.tolist(), "cols": cols.tolist(),
        "unique_rows": int(torch.unique(rows).numel()), "unique_columns": int(torch.unique(cols).numel()),
        "energy_c": energy_share(sq.sum(dim=0), cols), "energy_r": energy_share(sq.sum(dim=1), rows),
        "energy_c_uniform": uniform_energy(n, r, replace), "energy_r_uniform": uniform_energy(m, r, replace),
        "histograms": {side: histogram(probs[side]) for side in SIDES},
    }


def target_names(model, targets) -> list[str]:
    """The modules the adapter would adapt: `targets` (names, a regex or "all-linear"), else the architecture's
    default, refused with the adapter's sentences when nothing matches or a match is no Linear/Conv1D."""
    targets = targets or default_targets(model)
    names = find_target_modules(model, targets)
    if not names:
        raise CurloraError(f"No module matches targets {clip(targets)}; this model's adaptable layers are: "
                           f"{', '.join(linear_module_names(model)) or 'none'}.")
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, CURLoRALayer) and dispatch(module) is None:
            raise CurloraError(f"Module {clip(name)} is a {type(module).__name__}; CURLoRA adapts torch.nn.Linear and "
                               "GPT-2's Conv1D layers only — pick other targets.")
    return names


def inspect_model(model, r: int = 8, sampling: str = "inverted", targets=None, seed: int = 0,
                  replace: bool = True) -> dict:
    """The sampling report of every matrix CURLoRA(r, sampling, targets, seed, replace) would adapt in `model`."""
    if sampling not in SAMPLING_MODES:
        raise CurloraError(f"sampling must be one of {', '.join(SAMPLING_MODES)}; got {clip(sampling)}.")
    if int(r) != r or r < 1:
        raise CurloraError(f"Rank r must be a positive whole number, got {r}.")
    r = int(r)
    names = target_names(model, targets)
    matrices = [inspect_matrix(name, math_weight(model.get_submodule(name)), r, sampling, seed, replace)
                for name in names]
    leaves = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))
    return {"r": r, "sampling": sampling, "seed": seed, "replace": replace, "targets": leaves,
            "rules": list(SAMPLING_MODES), "matrices": matrices,
            "summary": summary(matrices, r, sampling, leaves)}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def summary(matrices: list[dict], r: int, sampling: str, leaves: list[str]) -> str:
    """One sentence: how far each rule is from uniform at this model's widths, and what the chosen draws keep."""
    tv = {rule: _mean(m["tv_from_uniform"]["columns"][rule] for m in matrices) for rule in TABLE_RULES}
    widths = sorted({m["shape"][1] for m in matrices})
    width = f"width {widths[0]:,}" if len(widths) == 1 else f"widths {widths[0]:,}–{widths[-1]:,}"
    offset = f"{tv['inverted_offset']:.3f} for the reference 1/(p + 0.001)"
    if tv["inverted_offset"] < NEAR_UNIFORM:
        offset += f" (almost uniform at {width})"
    return (f"{len(matrices)} matrices ({', '.join(leaves)}; {width}), r {r}: the columns' mean TV distance from "
            f"uniform is {tv['inverted']:.3f} for inverted 1/p, {offset}, {tv['leverage']:.3f} for leverage and "
            f"{tv['norm']:.3f} for norm; {sampling} draws keep "
            f"{_mean(m['unique_columns'] for m in matrices):.1f} of {r} columns and "
            f"{_mean(m['unique_rows'] for m in matrices):.1f} of {r} rows distinct, and C carries "
            f"{_mean(m['energy_c'] for m in matrices):.1%} of W's energy (uniform draws: "
            f"{_mean(m['energy_c_uniform'] for m in matrices):.1%}), R "
            f"{_mean(m['energy_r'] for m in matrices):.1%} ({_mean(m['energy_r_uniform'] for m in matrices):.1%}).")


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, one row of display strings per matrix): the CLI's table and the app's, the same cells."""
    r = report["r"]
    headers = ["matrix", "shape", *(f"TV {short} c/r" for short in TABLE_RULES.values()), f"unique c/r of {r}",
               "energy C", "energy R"]
    rows = []
    for m in report["matrices"]:
        tv = m["tv_from_uniform"]
        rows.append([m["name"], f"{m['shape'][0]}x{m['shape'][1]}",
                     *(f"{tv['columns'][rule]:.3f}/{tv['rows'][rule]:.3f}" for rule in TABLE_RULES),
                     f"{m['unique_columns']}/{m['unique_rows']}", f"{m['energy_c']:.4f}", f"{m['energy_r']:.4f}"])
    return headers, rows
