"""The project's outer shell: CLI entry point, the app object, and the engine/UI boundary."""

import subprocess
import sys

from conftest import REPO


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_help_works():
    out = run("-m", "curlora", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: python -m curlora" in out.stdout


def test_engine_never_imports_gradio():
    code = (
        "import sys, pkgutil, importlib, curlora\n"
        "for m in pkgutil.walk_packages(curlora.__path__, 'curlora.'):\n"
        "    if not m.name.startswith('curlora.ui') and m.name != 'curlora.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "assert 'gradio' not in sys.modules, 'the engine imported gradio'\n"
    )
    out = run("-c", code)
    assert out.returncode == 0, out.stderr


def test_app_builds_a_blocks_titled_curlora_studio():
    sys.path.insert(0, str(REPO))
    import gradio as gr

    import app

    demo = app.build_app()
    assert isinstance(demo, gr.Blocks) and demo.title == "CURLoRA Studio"
