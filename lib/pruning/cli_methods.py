"""``python -m lib methods``: every registered method with its kind and one-line summary.

    python -m lib methods                    # name, kind, summary
    python -m lib methods --options          # and each option's default and expected form
    python -m lib methods --kind mask        # one kind only

The list is the registry's (:mod:`lib.pruning.registry`): the one-shot methods of
``lib.pruning``, the trained ones of ``lib.sparse``, the study's control, and the methods of
the files ``CUT_PLUGINS`` names.
"""
from __future__ import annotations

import argparse

from .registry import KINDS, method_names, method_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", choices=list(KINDS), default=None,
                        help="list only the methods of this kind (default: every kind)")
    parser.add_argument("--options", action="store_true",
                        help="also list each method's options: default and expected form")


def run(args: argparse.Namespace) -> int:
    import lib.experiments.cells  # noqa: F401  (registers the study's control)
    import lib.sparse  # noqa: F401  (registers the methods that train)

    names = method_names(*([args.kind] if args.kind else []))
    width = max([len(n) for n in names] + [6])
    kind_width = max(len(k) for k in KINDS)
    print(f"{'method':<{width}}  {'kind':<{kind_width}}  summary")
    for name in names:
        spec = method_spec(name)
        print(f"{name:<{width}}  {spec.kind:<{kind_width}}  {spec.summary}")
        if args.options:
            for key, option in spec.options.items():
                note = f"; {option.help}" if option.help else ""
                print(f"{'':<{width}}    {key}={option.default!r} ({option.expected}{note})")
    return 0
