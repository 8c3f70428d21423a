"""The CLI dispatcher. Each command lives in its own module of this package, imported only when run.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Errors derived from RsVqaError are printed as plain messages (exit code 2); cancellation and
Ctrl-C exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# name on the command line -> module in this package
COMMANDS = {
    "doctor": "doctor",
    "pyramid": "pyramid",
    "overviews": "overviews",
    "tiny-model": "tiny_model",
    "convert": "convert",
    "distill": "distill",
    "ask": "ask",
    "eval": "evaluate",
    "batch": "batch",
    "cost": "cost",
    "synth-scene": "synth_scene",
    "synth-questions": "synth_questions",
    "train-default": "train_default",
    "demo": "demo",
    "worker": "worker",
}


def _load(module_name: str):
    return importlib.import_module(f"{__name__}.{module_name}")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rs_vqa_plugin",
                                     description="rs-vqa engine command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            # Listed for --help without importing the module (keeps start-up light).
            sub.add_parser(name, help="")
            continue
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(module_name):
                continue  # command not built yet
            raise
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ..engine.offline import keep_offline

    keep_offline()   # before any command imports onnxruntime or transformers
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0 if not argv else 2
    from ..engine.errors import Cancelled, RsVqaError

    try:
        return int(args._module.run(args) or 0)
    except Cancelled as exc:
        print(f"rs-vqa: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rs-vqa: interrupted.", file=sys.stderr)
        return 130
    except RsVqaError as exc:
        print(f"rs-vqa: error: {exc}", file=sys.stderr)
        return 2
