"""CURLoRA Studio: the Gradio app (also the Hugging Face Spaces entry point).

Thin on purpose: offline-safe environment defaults, then the UI from `curlora.ui`, then launch.
"""

import os

# Defaults only: a user's own settings win. Analytics off; the hub is used only if the user turns it on.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from curlora.ui.app import build_app, launch  # noqa: E402

__all__ = ["build_app"]

if __name__ == "__main__":
    # Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT itself; launch() only makes loopback the default.
    launch(build_app())
