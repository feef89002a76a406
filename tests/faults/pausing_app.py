"""`python app.py`, with an optional pause injected by the test, so a kill -9 lands at a known point.

    CURLORA_TEST_PAUSE=save|evaluate  CURLORA_TEST_ARM=<file>  CURLORA_TEST_PAUSED=<file>  python pausing_app.py

Nothing pauses until the ARM file exists; it holds N, and the N-th adapter save (after the files are written into
the stage's `.partial` folder, before the rename) or the N-th perplexity measurement of an evaluation (after the
accuracies, before the stage is recorded) after that writes the PAUSED file and sleeps until the process is killed.
The engine is not changed: the hooks wrap curlora.methods.adapters.save_adapter and the runner's perplexity in this process.
"""

import os
import runpy
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

torch.set_num_threads(1)  # as in tests/conftest.py: tiny models, a shared 2-core machine

import curlora.methods.adapters  # noqa: E402
import curlora.run.measurer  # noqa: E402
import curlora.run.runner  # noqa: E402

WHAT = os.environ.get("CURLORA_TEST_PAUSE", "")
ARM, PAUSED = os.environ.get("CURLORA_TEST_ARM", ""), os.environ.get("CURLORA_TEST_PAUSED", "")
calls = {"n": 0}


def maybe_pause() -> None:
    if not ARM or not os.path.exists(ARM):
        return
    calls["n"] += 1
    if calls["n"] == int(Path(ARM).read_text() or 1):
        Path(PAUSED).write_text(str(os.getpid()))
        time.sleep(3600)  # until kill -9


if WHAT == "save":
    real_save = curlora.methods.adapters.save_adapter

    def save_adapter(model, folder):
        real_save(model, folder)  # the files are in stage-k.partial now
        maybe_pause()

    curlora.methods.adapters.save_adapter = save_adapter
elif WHAT == "evaluate":
    real_perplexity = curlora.run.measurer.perplexity

    def perplexity(*args, **kwargs):
        maybe_pause()
        return real_perplexity(*args, **kwargs)

    curlora.run.measurer.perplexity = perplexity
elif WHAT:
    raise SystemExit(f"CURLORA_TEST_PAUSE={WHAT!r}: use save or evaluate")

sys.argv = [str(REPO / "app.py")]
runpy.run_path(str(REPO / "app.py"), run_name="__main__")
