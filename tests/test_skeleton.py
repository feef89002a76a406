"""The project's outer shell: CLI entry point, the app object, and the engine/UI boundary."""

import os
import subprocess
import sys

from conftest import REPO


def run(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_cli_help_works():
    out = run("-m", "curlora", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: python -m curlora" in out.stdout


def test_the_store_commands_of_the_cli_never_import_torch(tmp_path):
    """`--help`, `list`, `show`, `export` and the refusals of `run`/`resume` read files: they answer in a fraction of
    a second instead of the ~7 s that importing torch, transformers and peft (with bitsandbytes) takes here."""
    code = (
        "import sys\n"
        "from curlora.cli.main import build_parser, main\n"
        "build_parser()\n"
        "assert main(['list']) == 0\n"
        "assert main(['show', 'nope']) == 2 and main(['resume', 'nope']) == 2\n"
        f"assert main(['run', {str(tmp_path / 'missing.yaml')!r}]) == 2\n"
        "heavy = sorted({'torch', 'transformers', 'peft'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    out = run("-c", code, env={"CURLORA_DATA_DIR": str(tmp_path / "runs")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("error: ") == 3, out.stderr


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
