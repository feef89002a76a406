"""A study's plan: the grid a user asks for, checked against the experiment (each trained method with its own
learning rates, distinct seeds), and the experiment of one point. Refusals name the fix; nothing is written here."""

from __future__ import annotations

import dataclasses
import math
import random

from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.measure.study_record import PlanEntry, StudySettings
from curlora.methods.registry import lr_text, method


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    out = {}
    for item in items:
        label, sep, values = item.partition("=")
        if not sep or not label.strip():
            raise CurloraError(f"--lrs: {clip(item)} should read METHOD=LR,LR,… e.g. lora=5e-4,1e-3.")
        try:
            out[label.strip()] = [float(x) for x in values.split(",") if x.strip()]
        except ValueError:
            raise CurloraError(f"--lrs: {clip(values)} is not a comma-separated list of numbers (e.g. 5e-4,1e-3).") from None
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurloraError(f"--seeds: {clip(text)} is not a comma-separated list of whole numbers (e.g. 0,1,2).") from None


def default_grid(kind: str) -> list[float]:
    """A method's default grid: the learning-rate prior its registered class states."""
    return list(method(kind).lr_prior)


def replay_label(label: str, share: float) -> str:
    """The label of `label` at a replay share in a study: 'lora-replay10' for 0.1 (a folder name: no dots)."""
    return f"{label}-replay{share * 100:g}".replace(".", "_")


def with_replays(cfg: ExperimentConfig, settings: StudySettings) -> tuple[ExperimentConfig, StudySettings]:
    """Replay as an axis: every trained method that can replay (and has none set) also runs at each share of
    `settings.replays`, as one more method of the experiment beside it ('lora-replay10'), on the same lr grid; the
    expanded experiment is what the study stores, so its runs, groups, frontiers and comparisons treat each as a
    method of its own. Shares the config refuses (1.5, a batch too small for one row) are refused here."""
    shares = [x for x in dict.fromkeys(settings.replays) if x]
    if not shares:
        return cfg, settings
    methods, lrs = [], dict(settings.lrs)
    for m in cfg.methods:
        methods.append(m)
        kind = method(m.kind)
        if not (kind.trains and kind.replays) or m.replay:
            continue
        for share in shares:
            copy = dataclasses.replace(m, name=replay_label(m.label, share), replay=share)
            methods.append(copy)
            if m.label in settings.lrs:  # the method's grid, unless one is given for the copy itself
                lrs.setdefault(copy.label, list(settings.lrs[m.label]))
    if len(methods) == len(cfg.methods):
        raise CurloraError("--replays: no trained method of this experiment can replay (base, head-only and joint "
                           "never do, and one with replay set already has its share); add lora or curlora.")
    expanded = ExperimentConfig.from_dict({**cfg.to_dict(), "methods": [dataclasses.asdict(m) for m in methods]})
    return expanded, dataclasses.replace(settings, lrs=lrs)


def parse_replays(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurloraError(f"--replays: {clip(text)} is not a comma-separated list of shares (e.g. 0.1,0.25).") from None


def plan_settings(cfg: ExperimentConfig, settings: StudySettings) -> StudySettings:
    """Every trained method of the experiment with a grid (its prior unless one is given); refusals name the fix."""
    trained = [m for m in cfg.methods if method(m.kind).trains]
    if not trained:
        raise CurloraError("methods: a study needs at least one trained method (not only 'base').")
    labels = {m.label for m in trained}
    unknown = set(settings.lrs) - labels
    if unknown:
        raise CurloraError(f"--lrs: {', '.join(sorted(unknown))} is not a trained method of this experiment "
                           f"(they are {', '.join(sorted(labels))}).")
    lrs = {}
    for m in trained:
        grid = settings.lrs.get(m.label) or default_grid(m.kind)
        if not grid:
            raise CurloraError(f"--lrs: give a grid for {m.label}, e.g. --lrs {m.label}=1e-4,1e-3 (its kind has no "
                               "default).")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
            raise CurloraError(f"--lrs: the learning rates of {m.label} must be positive numbers (got {clip(grid)}).")
        lrs[m.label] = sorted(set(grid))
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise CurloraError(f"--seeds: give distinct seeds, e.g. 0,1,2 (got {clip(settings.seeds)}).")
    if settings.kl_budget is not None and not settings.kl_budget > 0:
        raise CurloraError(f"--kl-budget: must be a positive number (got {clip(settings.kl_budget)}).")
    if not (isinstance(settings.margin, (int, float)) and settings.margin > 0 and math.isfinite(settings.margin)):
        raise CurloraError(f"--margin: the equivalence margin must be a positive number of points of forgetting "
                           f"(got {str(settings.margin)[:40]}), e.g. 3.")
    return StudySettings(lrs=lrs, seeds=list(settings.seeds), kl_budget=settings.kl_budget,
                         margin=float(settings.margin), orders=plan_orders(cfg, settings),
                         permutations=settings.permutations, replays=list(settings.replays),
                         rows_per_seed=settings.rows_per_seed)


def plan_orders(cfg: ExperimentConfig, settings: StudySettings) -> list[list[str]] | None:
    """The task orders of the study, spelled out (None: the experiment's own order only). `permutations: k` gives
    the experiment's order and k − 1 other distinct shuffles of it, seeded, so a study is planned the same way
    every time."""
    names = [t.name for t in cfg.tasks]
    if settings.orders is not None and settings.permutations is not None:
        raise CurloraError("study: give orders or permutations, not both.")
    if settings.permutations is not None:
        k = settings.permutations
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= math.factorial(min(len(names), 6)):
            raise CurloraError(f"study.permutations: give a whole number from 1 to "
                               f"{math.factorial(min(len(names), 6))} (the orders {len(names)} tasks allow here); "
                               f"got {str(k)[:20]}.")
        rng, orders = random.Random(0), [names]
        while len(orders) < k:
            shuffled = rng.sample(names, len(names))
            if shuffled not in orders:
                orders.append(shuffled)
        return orders if k > 1 else None
    if settings.orders is None:
        return None
    for order in settings.orders:
        if sorted(order) != sorted(names) or len(set(order)) != len(order):
            raise CurloraError(f"study.orders: {clip(order)} is not an order of this experiment's tasks "
                               f"({', '.join(names)}): list each task once.")
    if len({tuple(o) for o in settings.orders}) != len(settings.orders) or not settings.orders:
        raise CurloraError("study.orders: give distinct orders (at least one).")
    return [list(o) for o in settings.orders]


def plan_of(settings: StudySettings) -> list[PlanEntry]:
    """One entry per (method, lr, seed, task order), seed-major: every setting has a first seed early."""
    return [PlanEntry(method=label, lr=lr, seed=seed, order=order) for seed in settings.seeds
            for order in range(len(settings.orders or [None]))
            for label, grid in settings.lrs.items() for lr in grid]


def point_config(cfg: ExperimentConfig, label: str, lr: float, seed: int, study_id: str,
                 order: list[str] | None = None, order_index: int = 0, rows_per_seed: bool = False
                 ) -> ExperimentConfig:
    """The experiment for one point: that method alone at that learning rate, its tasks in `order` (the
    experiment's own when None); the seed sets the example order, the heads and CURLoRA's column/row sampling, and
    with `rows_per_seed` also which training and eval rows each task draws (its tasks' seed)."""
    m = next(m for m in cfg.methods if m.label == label)
    one = dataclasses.replace(m, lr=lr, seed=seed)
    name = f"{cfg.run.name}-{label}-lr{lr_text(lr)}-s{seed}" + (f"-o{order_index + 1}" if order else "")
    tasks = [next(t for t in cfg.tasks if t.name == n) for n in order] if order else cfg.tasks
    if rows_per_seed:
        tasks = seeded_tasks(tasks, seed)
    return dataclasses.replace(cfg, methods=[one], tasks=tasks, training=dataclasses.replace(cfg.training, seed=seed),
                               run=dataclasses.replace(cfg.run, name=name, group=study_id))  # the trackers' group


def seeded_tasks(tasks: list, seed: int) -> list:
    """The task configs with `seed` as their seed: the seed of each one's split, sub-samples and row order."""
    return [dataclasses.replace(t, seed=seed) for t in tasks]


def permutation(cfg: ExperimentConfig, order: list[str] | None) -> list[int] | None:
    """Where each task of `order` sits in the experiment's own order (None: the same order)."""
    names = [t.name for t in cfg.tasks]
    return None if not order or order == names else [names.index(n) for n in order]
