"""``python -m lib <command> ...``: scripted runs of the same steps the notebooks take.

Each command lives in the package that owns the step, as a module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches, importing the
module of the command asked for (so ``python -m lib --help`` stays fast).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from lib.plugins import PLUGINS_ENV, PluginError, load_plugins

COMMANDS = {
    "synthetic": ("lib.data.cli", "generate a synthetic dataset in a real on-disk layout"),
    "train": ("lib.training.cli", "train the dense multi-task base model (torchrun-ready)"),
    "finetune": ("lib.training.cli_finetune", "fine-tune a pruned compact model, masks held"),
    "evaluate": ("lib.training.cli_evaluate", "evaluate a checkpoint on the test split"),
    "prune": ("lib.pruning.cli", "prune a base model with CUT or a baseline"),
    "methods": ("lib.pruning.cli_methods", "list every method with its kind and summary"),
    "export": ("lib.export.cli", "export a compact edge artifact / ONNX and report size, speed"),
    "reproduce": ("lib.experiments.cli", "run the paper's grid: prune, fine-tune, evaluate, tables"),
    "demo": ("lib.experiments.cli_demo", "the whole study on synthetic data on a CPU"),
}


def main(argv: list[str] | None = None) -> int:
    from lib import package_version

    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        parser.parse_args(argv[:1])   # prints the version, exits 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    if os.environ.get(PLUGINS_ENV):   # the user's files (methods, datasets, models) first:
        try:                           # the commands' choices and help list what they register
            load_plugins()
        except PluginError as exc:
            if os.environ.get("CUT_DEBUG"):
                raise
            print(f"error: {exc} (set CUT_DEBUG=1 for the traceback)", file=sys.stderr)
            return 2
    module = importlib.import_module(COMMANDS[name][0])
    from lib.cli_args import HelpFormatter

    cmd_parser = argparse.ArgumentParser(prog=f"python -m lib {name}",
                                         description=COMMANDS[name][1],
                                         formatter_class=HelpFormatter)
    module.add_arguments(cmd_parser)
    # One-line errors (exit 2) for bad input of any command: ValueError (and the typed errors
    # built on it: NonFiniteError, ArtifactFormatError, ...), missing or unwritable files
    # (OSError), unknown names (KeyError), torch's RuntimeError, and ArithmeticError: the
    # training loop's FloatingPointError for a non-finite loss, which says the last good
    # checkpoint is intact.
    args = cmd_parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError, KeyError, RuntimeError, ArithmeticError) as exc:
        if os.environ.get("CUT_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message} (set CUT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
