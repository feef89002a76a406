"""Continual-learning metrics from an accuracy matrix — computed here and nowhere else.

R[i][j] is the accuracy on task j after training stage i: row 0 is the base model before any training, row i
(1 ≤ i ≤ n) is after training task i (tasks are 1-based in rows, 0-based in columns: task j is trained at stage
j + 1). A run in progress has fewer rows; the metrics then describe the last finished stage k.

Definitions (k = stages finished, a_{i,j} = R[i][j], task j trained at stage j + 1):
- ACC (average accuracy): mean_j a_{k,j} over the k tasks trained so far.
- plasticity: mean over trained tasks of a_{j+1,j}, the accuracy on a task right after training it.
- BWT (backward transfer, Lopez-Paz & Ranzato 2017): mean over j < k−1 of a_{k,j} − a_{j+1,j}; negative = forgetting.
- FWT (forward transfer, GEM's definition): mean over 1 ≤ j < k of a_{j,j} − a_{0,j}: what training the earlier tasks
  did for task j before it was trained, against the base model.
- forgetting (average forgetting, Chaudhry et al. 2018): mean over j < k−1 of max_{1 ≤ l < k} a_{l,j} − a_{k,j}:
  the best accuracy the task had at an earlier stage minus its final one (negative when later training helped).
"""

from __future__ import annotations

import math


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def stage_count(matrix: list[list[float | None]]) -> int:
    """Finished stages: rows after row 0 with an entry for every task trained so far.

    Entries for tasks not yet trained may be missing (head scoring has no head for them yet).
    """
    k = 0
    for i, row in enumerate(matrix[1:], start=1):
        if row is None or any(_missing(row[j]) for j in range(min(i, len(row)))):
            break
        k += 1
    return k


def summarize(matrix: list[list[float | None]]) -> dict[str, float | None]:
    """ACC, plasticity, BWT, FWT and forgetting of an accuracy matrix (see the module docstring)."""
    if not matrix:
        raise ValueError("the accuracy matrix needs at least row 0 (the base model)")
    n = len(matrix[0])
    if any(row is not None and len(row) != n for row in matrix):
        raise ValueError("every row of the accuracy matrix needs one entry per task")
    k = stage_count(matrix)
    a = matrix
    out: dict[str, float | None] = {"stages": k}
    if k == 0:
        out.update(acc=None, plasticity=None, bwt=None, fwt=None, forgetting=None)
        return out
    out["acc"] = _mean([a[k][j] for j in range(k)])
    out["plasticity"] = _mean([a[j + 1][j] for j in range(k)])
    out["bwt"] = _mean([a[k][j] - a[j + 1][j] for j in range(k - 1)])
    out["fwt"] = _mean([a[j][j] - a[0][j] for j in range(1, k) if not _missing(a[j][j]) and not _missing(a[0][j])])
    # Stages before a task was trained may have no entry (head scoring): the max runs over those that do.
    out["forgetting"] = _mean([max(a[l][j] for l in range(1, k) if not _missing(a[l][j])) - a[k][j]
                               for j in range(k - 1)])
    return out


def earlier_tasks(matrix: list[list[float | None]], keep) -> dict[str, float | None]:
    """BWT and forgetting (as `summarize` defines them) over only the earlier tasks whose column index is in
    `keep` (those learned, curlora/measure/study_analysis.py), with their count `tasks`; None where none is kept."""
    k = stage_count(matrix)
    a, cols = matrix, [j for j in range(max(k - 1, 0)) if j in set(keep)]
    return {"tasks": len(cols), "bwt": _mean([a[k][j] - a[j + 1][j] for j in cols]),
            "forgetting": _mean([max(a[l][j] for l in range(1, k) if not _missing(a[l][j])) - a[k][j]
                                 for j in cols])}


def majority_share(label_ids: list[int]) -> float:
    """Accuracy of always predicting the most frequent class: the line a learned task must clear."""
    if not label_ids:
        return float("nan")
    counts: dict[int, int] = {}
    for y in label_ids:
        counts[y] = counts.get(y, 0) + 1
    return max(counts.values()) / len(label_ids)
