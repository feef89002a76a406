"""`python -m curlora`: the command line over the same engine and run store as the app.

Each subcommand lives in the module that owns its concern and registers itself through `COMMANDS`:
an entry is (module path, function name) of a `register(subparsers)` that adds a parser whose `func`
takes the parsed args and returns an exit code. Modules are imported lazily so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from curlora import __version__
from curlora.errors import CurloraError

# (module, register function). Add a subcommand by adding a line here.
COMMANDS: list[tuple[str, str]] = [
    ("curlora.cli.check_data", "register"),
    ("curlora.cli.runs", "register"),
    ("curlora.cli.sweep", "register"),
    ("curlora.cli.study", "register"),
    ("curlora.cli.sampling", "register"),
    ("curlora.cli.push", "register"),
    ("curlora.cli.chat", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m curlora",
        description="CURLoRA Studio: continual fine-tuning with CURLoRA beside LoRA, measuring forgetting.",
    )
    parser.add_argument("--version", action="version", version=f"curlora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, fn in COMMANDS:
        getattr(importlib.import_module(module), fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CurloraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
