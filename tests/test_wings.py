"""The engine's wings keep their boundaries. Read from the source (every import statement, including those inside
functions), so a lazy import cannot slip past; each rule is also shown failing on a tree that breaks it.

    adapter/   imports no other curlora module but curlora.errors (and the package's __version__)
    data/      imports no torch, and of curlora only errors, paths and data/ itself
    below run/ (adapter, data, models, measure, and errors, paths, experiment) never import run/, cli/ or ui/ —
               but the config reads the method registry (curlora.methods.registry: which kinds exist, light to import)
    ui/        never imports cli/
    the engine never imports gradio; only ui/ does
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BELOW_RUN = ("adapter", "data", "models", "measure")
TOP_BELOW_RUN = ("errors.py", "paths.py", "experiment.py", "__init__.py")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; `from curlora import x` counts as curlora.x when x is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module.startswith("curlora"):
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                        if (path.parents[0] / a.name).exists() or a.name in WINGS]
    return out


WINGS = ("adapter", "data", "models", "measure", "run", "cli", "ui")


def wing_of(path: Path, package: Path) -> str:
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else f"top:{rel.name}"


def violations(package: Path) -> list[str]:
    """Every import in `package` (a curlora/ folder) that breaks a rule, as 'file:line: rule'."""
    found = []
    for path in sorted(package.rglob("*.py")):
        wing = wing_of(path, package)
        rel = path.relative_to(package.parent)
        for line, mod in imports(path):
            top = mod.split(".")[0]
            inner = mod.split(".")[1] if mod.startswith("curlora.") else None

            def bad(rule):
                found.append(f"{rel}:{line}: {mod} — {rule}")

            if top == "gradio" and wing != "ui":
                bad("only curlora/ui imports gradio")
            if wing == "adapter" and top == "curlora" and mod not in ("curlora", "curlora.errors") \
                    and inner != "adapter":
                bad("adapter/ imports no other curlora module but errors")
            if wing == "data":
                if top == "torch":
                    bad("data/ loads no torch")
                if top == "curlora" and inner not in (None, "errors", "paths", "data"):
                    bad("data/ imports only errors, paths and data/")
            if (wing in BELOW_RUN or wing.removeprefix("top:") in TOP_BELOW_RUN) and inner in ("run", "cli", "ui") \
                    and not (wing == "top:experiment.py" and mod == "curlora.methods.registry"):
                bad("nothing below run/ imports run/, cli/ or ui/")
            if wing == "ui" and inner == "cli":
                bad("ui/ never imports cli/")
    return found


def test_the_wings_keep_their_boundaries():
    assert violations(REPO / "curlora") == []


def test_the_tree_is_the_wings():
    package = REPO / "curlora"
    assert {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(WINGS)
    top = {p.name for p in package.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "errors.py", "paths.py", "experiment.py"}


@pytest.mark.parametrize("wing, source, rule", [
    ("measure", "from curlora.run.store import Run\n", "nothing below run/ imports run/"),
    ("data", "def f():\n    import torch\n", "data/ loads no torch"),
    ("data", "from curlora.models.loading import load_model\n", "data/ imports only errors, paths and data/"),
    ("adapter", "from curlora.data.labels import canonical_label\n", "adapter/ imports no other curlora module"),
    ("ui", "from curlora.cli.runs import table\n", "ui/ never imports cli/"),
    ("run", "import gradio as gr\n", "only curlora/ui imports gradio"),
    ("models", "from curlora import run\n", "nothing below run/ imports run/"),
    ("measure", "from curlora.methods.registry import method\n", "nothing below run/ imports run/"),
])
def test_each_rule_fails_when_broken(tmp_path, wing, source, rule):
    package = tmp_path / "curlora"
    for w in WINGS:
        (package / w).mkdir(parents=True)
    (package / wing / "bad.py").write_text(source)
    (found,) = violations(package)
    assert f"curlora/{wing}/bad.py" in found and rule in found


def test_data_loads_no_torch_at_run_time():
    """The static rule above, checked where it matters: importing every data/ module pulls in no torch."""
    code = ("import sys, pkgutil, importlib, curlora.data as d\n"
            "for m in pkgutil.iter_modules(d.__path__):\n    importlib.import_module('curlora.data.' + m.name)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_config_reads_the_registry_without_torch():
    code = "import sys, curlora.experiment\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_kind_string_is_branched_on_outside_the_registry():
    """`kind == "lora"`-style tests belong to curlora/methods/registry.py; everywhere else asks the registered object."""
    import re

    from curlora.methods.registry import kinds

    names = "|".join(re.escape(k) for k in kinds())
    pattern = re.compile(r"""(\.kind|\["kind"\]|\.get\(["']kind["']\)|\bkind)\s*(==|!=|in|not in)\s*[(\[]?\s*["']("""
                         + names + r""")["']""")
    hits = []
    for path in sorted((REPO / "curlora").rglob("*.py")):
        if path.name == "methods.py" and path.parent.name == "run":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == []
    assert pattern.search('if m.kind in ("curlora", "lora"):') and pattern.search('rec["kind"] == "base"')
    assert pattern.search('r.get("kind") not in ("base", "head-only")')
