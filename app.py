"""CURLoRA Studio: the Gradio app (also the Hugging Face Spaces entry point).

Thin on purpose: offline-safe environment defaults, then the UI from `curlora.ui`, then launch.

    python app.py                          # http://127.0.0.1:7860, this machine only
    python app.py --host 0.0.0.0 --port 8080
    CURLORA_AUTH=user:password python app.py --share   # a public link: set a login first
    python app.py --mcp                    # also an MCP server at /gradio_api/mcp/ (or CURLORA_MCP=1)
"""

import argparse
import os

# Defaults only: a user's own settings win. Analytics off; the hub is used only if the user turns it on.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from curlora.ui.app import build_app, launch  # noqa: E402

__all__ = ["build_app"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CURLoRA Studio (the Gradio app).",
                                epilog="A login for an exposed app: CURLORA_AUTH=user:password in the environment.")
    p.add_argument("--host", help="address to bind (default: GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 = every "
                                  "interface, reachable from other machines)")
    p.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (set CURLORA_AUTH)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let experiments with model.trust_remote_code: true run the model's own Python code (only "
                        "on your own machine; refused when the app is hosted)")
    p.add_argument("--mcp", action="store_true",
                   help="also serve the app as an MCP server at /gradio_api/mcp/ (read-mostly tools over the run "
                        "store; the same as CURLORA_MCP=1; needs gradio's mcp extra)")
    return p.parse_args(argv)


if __name__ == "__main__":
    # Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT itself; launch() only makes loopback the default.
    args = parse_args()
    if args.mcp:
        os.environ["CURLORA_MCP"] = "1"  # read by build_app and launch (curlora/ui/mcp.py)
    if args.trust_remote_code:
        from curlora.models.remote_code import allow_remote_code

        allow_remote_code()
    options = {"share": True} if args.share else {}
    if args.host:
        options["server_name"] = args.host
    if args.port:
        options["server_port"] = args.port
    from curlora.errors import CurloraError

    try:
        launch(build_app(), **options)
    except CurloraError as err:  # a bad login setting, a missing extra: one sentence, no traceback
        raise SystemExit(f"error: {err}") from None
