"""The engine's wings keep their boundaries. Read from the source (every import statement, including those inside
functions), so a lazy import cannot slip past; each rule is also shown failing on a tree that breaks it.

The wings, lowest first (a wing imports only its own level and those below it: nothing imports upward):

    errors.py paths.py          the sentences and where the project's files are
    adapter/  data/             CURLoRA as a PEFT method (imports only errors) · CSV → Task (no torch; errors, paths)
    models/                     base models
    measure/                    scoring, probes, statistics, the typed records
    methods/                    the method registry, below the config (it never imports experiment.py)
    experiment.py               the config tree (reads the registry)
    run/                        producing runs: the runner, the store, studies, evaluation, chat
    share/                      using finished runs: exports, the model card, the hub
    serve/                      what a server adds: jobs, device gate, hosting policy and limits, handoff, MCP tools
    cli/  ui/                   python -m curlora · the Gradio app (ui/ never imports cli/, cli/ never imports ui/)

and the engine never imports gradio; only ui/ does. Besides the ladder, the engine's import graph (every import,
function-local ones included) has no circle, except the one PEFT forces inside adapter/.

An import inside `if TYPE_CHECKING:` is not run, so it names a type and is no import here (registry.py names
experiment.MethodSettings in its annotations that way).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WINGS = ("adapter", "data", "models", "measure", "methods", "run", "share", "serve", "cli", "ui")
TOP = ("__init__.py", "__main__.py", "errors.py", "paths.py", "experiment.py")
LEVEL = {"errors.py": 0, "paths.py": 0, "__init__.py": 0, "adapter": 1, "data": 1, "models": 2, "measure": 3,
         "methods": 4, "experiment.py": 5, "run": 6, "share": 7, "serve": 8, "cli": 9, "ui": 9, "__main__.py": 10}


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `package` (a curlora/ folder); a package is its __init__."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(tree):
    """ast.walk, less the bodies of `if TYPE_CHECKING:` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) of every import in the module `name` at `path`. A curlora module is named as the module it
    loads: `from curlora.run import store` is curlora.run.store (not the package), `from curlora.run.store import
    Run` is curlora.run.store; a relative import is made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            if len(subs) < len(node.names):  # a name defined in `mod` itself
                out.append((node.lineno, mod))
            out += [(node.lineno, s) for s in subs]
    return sorted(out)


def graph(package: Path) -> dict[str, dict[str, int]]:
    """module -> {curlora module it imports: first line}, for every module under `package`."""
    known = modules(package)
    out = {}
    for name, path in known.items():
        edges = out.setdefault(name, {})
        for line, mod in imports(path, name, known):
            while mod and mod not in known:  # `curlora.run.store.Run` as the module that defines it
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                edges.setdefault(mod, line)
    return out


def wing_of(module: str) -> str | None:
    """'curlora.run.store' -> 'run', 'curlora.experiment' -> 'experiment.py', 'curlora' -> '__init__.py'."""
    parts = module.split(".")
    if parts[0] != "curlora":
        return None
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] if parts[1] in WINGS else f"{parts[1]}.py"


def shown(wing: str) -> str:
    return wing if wing.endswith(".py") else f"{wing}/"


def rule(wing: str, mod: str) -> str | None:
    """The rule that a module of `wing` importing `mod` breaks, if any (the first that applies)."""
    top, target = mod.split(".")[0], wing_of(mod)
    if top == "gradio" and wing != "ui":
        return "only curlora/ui imports gradio"
    if wing == "adapter" and target not in (None, "adapter", "errors.py", "__init__.py"):
        return "adapter/ imports no other curlora module but errors"
    if wing == "data":
        if top == "torch":
            return "data/ loads no torch"
        if target not in (None, "data", "errors.py", "paths.py", "__init__.py"):
            return "data/ imports only errors, paths and data/"
    if target is None or target == wing:
        return None
    if {wing, target} == {"cli", "ui"}:
        return f"{shown(wing)} never imports {shown(target)}"
    if LEVEL[target] > LEVEL[wing]:
        return f"{shown(wing)} sits below {shown(target)}: nothing imports upward"
    return None


def violations(package: Path) -> list[str]:
    """Every import in `package` (a curlora/ folder) that breaks a rule, as 'file:line: module — rule'."""
    known = modules(package)
    found = []
    for name, path in sorted(known.items(), key=lambda kv: kv[1]):
        wing = wing_of(name)
        for line, mod in imports(path, name, known):
            broken = rule(wing, mod)
            if broken:
                found.append(f"{path.relative_to(package.parent)}:{line}: {mod} — {broken}")
    return found


def circles(package: Path) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's, iterative), each sorted,
    less those wholly inside curlora/adapter/ (PEFT's registration imports the package back)."""
    edges = graph(package)
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return [c for c in found if not all(wing_of(m) == "adapter" for m in c)]


def test_the_wings_keep_their_boundaries():
    assert violations(REPO / "curlora") == []


def test_the_engine_has_no_import_circle():
    assert circles(REPO / "curlora") == []


def test_the_tree_is_the_wings():
    package = REPO / "curlora"
    assert {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(WINGS)
    assert {p.name for p in package.glob("*.py")} == set(TOP)
    assert set(LEVEL) == set(WINGS) | set(TOP)


def test_run_stays_small():
    """run/ produces runs; the registry, the server and the exports have their own wings."""
    assert len(list((REPO / "curlora" / "run").glob("*.py"))) <= 16


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "curlora"
    for w in WINGS:
        (package / w).mkdir(parents=True)
        (package / w / "__init__.py").write_text("")
    for rel, source in files.items():
        (package / rel).write_text(source)
    return package


@pytest.mark.parametrize("where, source, broken", [
    ("measure/bad.py", "from curlora.run.store import Run\n", "measure/ sits below run/"),
    ("data/bad.py", "def f():\n    import torch\n", "data/ loads no torch"),
    ("data/bad.py", "from curlora.models.loading import load_model\n", "data/ imports only errors, paths and data/"),
    ("adapter/bad.py", "from curlora.data.labels import canonical_label\n", "adapter/ imports no other curlora"),
    ("ui/bad.py", "from curlora.cli.runs import table\n", "ui/ never imports cli/"),
    ("cli/bad.py", "from curlora.ui.common import shown\n", "cli/ never imports ui/"),
    ("run/bad.py", "import gradio as gr\n", "only curlora/ui imports gradio"),
    ("models/bad.py", "from curlora import run\n", "models/ sits below run/"),
    ("run/bad.py", "def f():\n    from curlora.serve.hosting import Policy\n", "run/ sits below serve/"),
    ("run/bad.py", "from curlora.share import export\n", "run/ sits below share/"),
    ("run/bad.py", "from curlora.cli.runs import table\n", "run/ sits below cli/"),
    ("share/bad.py", "from curlora.serve.jobs import JobManager\n", "share/ sits below serve/"),
    ("serve/bad.py", "from curlora.ui.common import shown\n", "serve/ sits below ui/"),
    ("serve/bad.py", "from curlora.cli import runs\n", "serve/ sits below cli/"),
    ("methods/bad.py", "def f():\n    from curlora.experiment import replayed_rows\n",
     "methods/ sits below experiment.py"),
    ("methods/bad.py", "from curlora.run import store\n", "methods/ sits below run/"),
    ("measure/bad.py", "from curlora.methods.registry import method\n", "measure/ sits below methods/"),
    ("experiment.py", "from curlora.run.store import Run\n", "experiment.py sits below run/"),
    ("paths.py", "from curlora.models import loading\n", "paths.py sits below models/"),
])
def test_each_rule_fails_when_broken(tmp_path, where, source, broken):
    (found,) = violations(tree(tmp_path, {where: source}))
    assert found.startswith(f"curlora/{where}:") and broken in found


@pytest.mark.parametrize("source", [
    "from curlora.serve.jobs import JobManager\n",  # upward imports are what the ladder is for
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from curlora.experiment import MethodSettings\n"])
def test_what_the_ladder_allows(tmp_path, source):
    assert violations(tree(tmp_path, {"ui/ok.py": source, "methods/ok.py": source.replace("serve.jobs", "errors")
                                      .replace("JobManager", "CurloraError")})) == []


def test_a_circle_is_found_through_function_local_imports(tmp_path):
    package = tree(tmp_path, {
        "run/a.py": "from curlora.run import b\n",
        "run/b.py": "def f():\n    from curlora.run.c import g\n",
        "run/c.py": "def g():\n    import curlora.run.a\n",
        "run/d.py": "from curlora.run import a\n",  # imports the circle, is not in it
        "adapter/x.py": "from curlora.adapter import y\n", "adapter/y.py": "from . import x\n"})
    assert circles(package) == [["curlora.run.a", "curlora.run.b", "curlora.run.c"]]
    # a package that imports its own submodule is no circle with it; a module that imports a name of its package is
    package = tree(tmp_path / "2", {"methods/__init__.py": "from curlora.methods import peers\n",
                                    "methods/peers.py": "from curlora.methods.registry import register\n",
                                    "methods/registry.py": "X = 1\n"})
    assert circles(package) == []
    (package / "methods" / "registry.py").write_text("from curlora.methods import peers\n")
    assert circles(package) == [["curlora.methods.peers", "curlora.methods.registry"]]
    (package / "methods" / "registry.py").write_text("from curlora.methods import X\n")
    assert circles(package) == [["curlora.methods", "curlora.methods.peers", "curlora.methods.registry"]]


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
    """`kind == "lora"`-style tests belong to curlora/methods/registry.py; everywhere else asks the registered
    object."""
    import re

    from curlora.methods.registry import kinds

    names = "|".join(re.escape(k) for k in kinds())
    pattern = re.compile(r"""(\.kind|\["kind"\]|\.get\(["']kind["']\)|\bkind)\s*(==|!=|in|not in)\s*[(\[]?\s*["']("""
                         + names + r""")["']""")
    hits = []
    for path in sorted((REPO / "curlora").rglob("*.py")):
        if path.name == "registry.py" and path.parent.name == "methods":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == []
    assert pattern.search('if m.kind in ("curlora", "lora"):') and pattern.search('rec["kind"] == "base"')
    assert pattern.search('r.get("kind") not in ("base", "head-only")')


def private_uses(package: Path) -> list[str]:
    """`from curlora.x import _name` and `module._name` (a curlora module bound by an import) in any engine file:
    a name used in another module is public in its home module. Dunders are not private."""
    known = modules(package)
    out = []
    for name, path in sorted(known.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}  # local name -> the curlora module it is
        for node in _walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("curlora"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"{path.relative_to(package.parent)}:{node.lineno}: {node.module}.{a.name}")
                    if f"{node.module}.{a.name}" in known:
                        bound[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                bound.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
        for node in _walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                out.append(f"{path.relative_to(package.parent)}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    return out


def test_no_private_name_is_used_across_modules():
    assert private_uses(REPO / "curlora") == []


@pytest.mark.parametrize("source", ["from curlora.run.estimate import _shape\n",
                                    "def f():\n    from curlora.run import estimate\n    return estimate._shape\n",
                                    "import curlora.run.estimate as est\nest._shape\n"])
def test_a_private_name_used_across_modules_is_found(tmp_path, source):
    package = tree(tmp_path, {"run/estimate.py": "def _shape():\n    pass\n", "serve/bad.py": source})
    (found,) = private_uses(package)
    assert found.startswith("curlora/serve/bad.py:") and found.endswith("curlora.run.estimate._shape")
