"""Regenerate the README's method-comparison section and figure from a benchmark's output.

    python benchmarks/write_bench_readme.py [--out runs/bench_methods] [--readme README.md]
                                            [--figure docs/figures/bench_methods.png]

Reads ``--out/summary.json`` (written by ``bench_methods.py``), draws the figure and replaces
the text between ``<!-- bench_methods:begin -->`` and ``<!-- bench_methods:end -->`` in the
README, so the section is never typed by hand.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.experiments.benchmark import load_summary  # noqa: E402
from lib.experiments.benchmark_report import (check_markers, plot_summary,  # noqa: E402
                                              readme_section, replace_section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_methods", help="the benchmark's folder")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--figure", default="docs/figures/bench_methods.png")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    try:
        summary = load_summary(args.out)
        check_markers(readme)                # before anything is written
        section = readme_section(summary, figure=os.path.relpath(args.figure, readme.parent))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"write_bench_readme: {exc}", file=sys.stderr)
        return 2
    plot_summary(summary, args.figure)
    replace_section(readme, section)
    print(f"wrote the section of {readme} and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
