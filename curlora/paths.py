"""Where the project's own files are, in one place (the engine's modules live in wings at different depths, so none
of them counts parent folders itself)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"  # the bundled model, demo tasks and probe text
PRESETS = REPO / "presets"  # models.yaml, datasets.yaml, experiments/
DEMO_TASKS = ASSETS / "tasks"
DEFAULT_PROBE = ASSETS / "probe" / "kjv_heldout.txt"
QUICK_DEMO = PRESETS / "experiments" / "quick-demo.yaml"
REAL_DEMO = PRESETS / "experiments" / "real-demo.yaml"
