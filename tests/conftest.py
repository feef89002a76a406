"""Test-wide settings: offline hub, no analytics, one thread per op so the 2-core CI machine isn't oversubscribed."""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models: one thread is fastest, and with two OpenMP threads a busy second core makes every small matmul
# wait on a descheduled thread (measured here: a 4-step tiny run took 30 s instead of 3 s).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `pytest` as well as `python -m pytest` imports this checkout's curlora
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real evaluation files); tests that need it skip where a user's clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: the real-data tests need the shared evaluation files beside the repo")
    return SHARED_DATA
