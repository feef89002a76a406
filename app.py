"""CURLoRA Studio: the Gradio app (also the Hugging Face Spaces entry point).

Thin on purpose: offline-safe environment defaults, then the UI from `curlora.ui`, then launch.
"""

import os

# Defaults only: a user's own settings win. Analytics off; the hub is used only if the user turns it on.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402


def build_app() -> gr.Blocks:
    with gr.Blocks(title="CURLoRA Studio") as demo:
        gr.Markdown("# CURLoRA Studio\nContinual fine-tuning with CURLoRA beside LoRA — the training UI is on its way.")
    return demo


if __name__ == "__main__":
    # Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT itself; we only make loopback the default.
    build_app().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
