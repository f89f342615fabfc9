"""The README's benchmark section and figure, written from a benchmark summary.

    section = readme_section(summary, figure="docs/figures/bench_methods.png")
    replace_section(Path("README.md"), section)          # between the two markers
    plot_summary(summary, "docs/figures/bench_methods.png")

Nothing here is typed by hand: the tables, the verdicts (decided or not, and which way) and
the timing all come from ``summary.json`` (:func:`lib.experiments.benchmark.run_benchmark`).
"""
from __future__ import annotations

from pathlib import Path

from .study import DENSE_FINETUNED

BEGIN = "<!-- bench_methods:begin -->"
END = "<!-- bench_methods:end -->"


def _pct(s: float) -> str:
    return f"{s:g} %"


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def _cells(summary: dict, selection: str) -> dict[tuple[str, float], dict]:
    return {(c["method"], c["sparsity"]): c for c in summary["cells"]
            if c["selection"] == selection}


def delta_table(summary: dict, selection: str) -> list[str]:
    """Mean ± std of Δ per method (columns) and sparsity (rows), control first."""
    methods = summary["methods"]
    cells = _cells(summary, selection)
    lines = ["| sparsity | " + " | ".join(methods) + " |",
             "| --- |" + " --- |" * len(methods)]
    control = cells.get((DENSE_FINETUNED, 0.0))
    if control is not None and "mean" in control:
        lines.append(f"| 0 % (control: dense, fine-tuned alike) | "
                     f"{_signed(control['mean'])} ± {control['std']:.1f} |"
                     + " |" * (len(methods) - 1))
    for s in summary["sparsities"]:
        row = [f"{_signed(c['mean'])} ± {c['std']:.1f}" if c and "mean" in c else "n/a"
               for c in (cells.get((m, s)) for m in methods)]
        lines.append(f"| {_pct(s)} | " + " | ".join(row) + " |")
    return lines


def collapsed_table(summary: dict, selection: str) -> list[str]:
    """Layers left with no weight, per method and sparsity (max over seeds)."""
    methods = summary["methods"]
    cells = _cells(summary, selection)
    lines = ["| sparsity | " + " | ".join(methods) + " |",
             "| --- |" + " --- |" * len(methods)]
    for s in summary["sparsities"]:
        row = [str(max(c["collapsed"].values(), default=0)) if c else "n/a"
               for c in (cells.get((m, s)) for m in methods)]
        lines.append(f"| {_pct(s)} | " + " | ".join(row) + " |")
    return lines


def comparison_table(summary: dict, selection: str) -> list[str]:
    """Reference minus each method: mean [CI] per sparsity; decided ones in bold with the
    winner named."""
    comps = [c for c in summary["comparisons"] if c["selection"] == selection]
    sparsities = summary["sparsities"]
    lines = [f"| {summary['reference']} minus | " + " | ".join(_pct(s) for s in sparsities)
             + " |", "| --- |" + " --- |" * len(sparsities)]
    for method in [m for m in summary["methods"] if m != summary["reference"]]:
        row = []
        for s in sparsities:
            c = next((c for c in comps if c["baseline"] == method and c["sparsity"] == s), None)
            if c is None:
                row.append("n/a")
                continue
            text = f"{_signed(c['mean'])} [{_signed(c['low'])}, {_signed(c['high'])}]"
            row.append(f"**{text}** {c['winner']}" if c["decided"] else text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def off_target_lines(summary: dict, selection: str, tolerance: float = 1.0) -> list[str]:
    """Methods whose measured sparsity is not the nominal one (structured CUT's budget is a
    channel sparsity), with the weight sparsity they reach."""
    lines = []
    for method in summary["methods"]:
        pairs = []
        for s in summary["sparsities"]:
            c = _cells(summary, selection).get((method, s))
            measured = list((c or {}).get("measured", {}).values())
            if measured and abs(sum(measured) / len(measured) - s) > tolerance:
                pairs.append(f"{sum(measured) / len(measured):.1f} % at {_pct(s)}")
            elif measured:
                pairs.append(None)
        if any(pairs):
            reached = ", ".join(p for p in pairs if p)
            lines.append(f"- {method}: its nominal sparsity is not its weight sparsity; weights "
                         f"removed (mean over seeds): {reached}.")
    return lines


def verdict_lines(summary: dict, selection: str) -> list[str]:
    """What is decided (and which way) and what is not, in words."""
    comps = [c for c in summary["comparisons"] if c["selection"] == selection]
    ref = summary["reference"]

    def grouped(items) -> str:
        by_method: dict[str, list[str]] = {}
        for c in items:
            by_method.setdefault(c["baseline"], []).append(f"{c['sparsity']:g}")
        return "; ".join(f"{m} at {', '.join(v)} %" for m, v in by_method.items()) or "none"

    ahead = [c for c in comps if c["decided"] and c["winner"] == ref]
    behind = [c for c in comps if c["decided"] and c["winner"] != ref]
    open_ = [c for c in comps if not c["decided"]]
    return [f"- Decided, {ref} ahead of: {grouped(ahead)}.",
            f"- Decided, {ref} behind: {grouped(behind)}.",
            f"- Not decided (the interval contains 0): {grouped(open_)}."]


def _timing(summary: dict) -> str:
    """How long the run that wrote the summary took (wall, and CPU when recorded)."""
    text = f"The run took {summary['seconds'] / 60:.0f} min wall"
    if summary.get("cpu_seconds"):
        jobs, threads = summary.get("jobs", 1), summary["threads"]
        where = (f"; {jobs} seeds at a time, {threads} thread(s) each" if jobs > 1
                 else f" on {threads} thread(s)")
        text += f" ({summary['cpu_seconds'] / 60:.0f} CPU-min{where})"
    if summary.get("cells_read_back"):
        text += (f", reading {summary['cells_read_back']} finished cells of an earlier run "
                 f"back instead of computing them")
    return (text + f"; the cells' pruning, fine-tuning and evaluation took, summed, "
            f"{summary['cell_seconds'] / 60:.0f} min when they were computed.")


def readme_section(summary: dict, figure: str | None = None) -> str:
    """The Markdown between :data:`BEGIN` and :data:`END` (markers included)."""
    n = len(summary["seeds"])
    floors = summary["base_floors"]
    out = [BEGIN,
           f"Written by `benchmarks/write_bench_readme.py` from the output of "
           f"`benchmarks/bench_methods.py` (profile `{summary['profile']}`, "
           f"{n} seeds {summary['seeds']}, each with its own base model; the synthetic data "
           f"fixed). Δ is the mean relative change of the selected tasks' metrics vs the dense "
           f"model, in percent (higher is better). {_timing(summary)}", ""]
    for name, floor in floors.items():
        values = [b[name] for b in summary["base"].values()]
        met = "met" if min(values) >= floor else "**not met**"
        out.append(f"- Base models, test split, {name}: {min(values):.3g} to {max(values):.3g} "
                   f"(floor {floor:g}: {met}).")
    for selection in summary["selections"]:
        control = _cells(summary, selection).get((DENSE_FINETUNED, 0.0))
        if control and control["deltas"]:
            worst = max(abs(d) for d in control["deltas"].values())
            tol = summary["control_tolerance"]
            ok = "within" if worst <= tol else "**outside**"
            out.append(f"- Control ({selection.replace('+', ' + ')}): the dense model "
                       f"fine-tuned exactly like the pruned ones moves by "
                       f"{_signed(control['mean'])} ± {control['std']:.1f} (worst seed "
                       f"{worst:.1f}: {ok} ±{tol:g} %).")
    for selection in summary["selections"]:
        sel = selection.replace("+", " + ")
        pairs = sorted({c["n"] for c in summary["comparisons"] if c["selection"] == selection})
        pairs_text = " or ".join(str(p) for p in pairs) or "no"
        off = off_target_lines(summary, selection)
        out += ["", f"Δ vs dense, {sel} (mean ± std over seeds):", "",
                *delta_table(summary, selection), "", *off, *([""] if off else []),
                f"Paired by seed, {summary['reference']} minus each method: mean "
                f"[{summary['confidence']:.0%} interval, Student t on the {pairs_text} paired "
                f"differences (n − 1 degrees of freedom)]; bold = decided (the interval "
                f"excludes 0), with the method ahead:", "",
                *comparison_table(summary, selection), "",
                *verdict_lines(summary, selection), "",
                f"Layers collapsed (no weight kept), {sel}, max over seeds:", "",
                *collapsed_table(summary, selection)]
    if figure:
        out += ["", f"![Δ vs sparsity and paired differences]({figure})"]
    out.append(END)
    return "\n".join(out) + "\n"


def check_markers(readme: Path) -> None:
    """Raise ValueError unless ``readme`` holds :data:`BEGIN` then :data:`END`, once each."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{readme} must hold the markers {BEGIN} and {END} once each, in "
                         f"that order")


def replace_section(readme: Path, section: str) -> None:
    """Put ``section`` in place of the text between the markers of ``readme`` (atomically)."""
    from lib.utils import atomic_write

    check_markers(readme)
    before, rest = readme.read_text().split(BEGIN)
    _, after = rest.split(END)
    new = before + section.rstrip("\n") + after
    atomic_write(readme, lambda tmp: Path(tmp).write_text(new))


def plot_summary(summary: dict, path: str | Path) -> Path:
    """Δ vs sparsity per method (mean ± std) and the paired differences with their intervals,
    for the first selection; saved atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from lib.utils import atomic_write

    selection = summary["selections"][0]
    cells = _cells(summary, selection)
    methods = summary["methods"]
    sparsities = summary["sparsities"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    # tab10 has ten colours: methods past the tenth repeat one with another marker and line
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    markers = {m: "osD^"[(i // 10) % 4] for i, m in enumerate(methods)}
    lines = {m: ("-", "--", ":", "-.")[(i // 10) % 4] for i, m in enumerate(methods)}
    for m in methods:
        pts = [(s, cells[(m, s)]) for s in sparsities if "mean" in cells.get((m, s), {})]
        if pts:
            left.errorbar([s for s, _ in pts], [c["mean"] for _, c in pts],
                          yerr=[c["std"] for _, c in pts], marker=markers[m], capsize=3,
                          label=m, color=colours[m], linestyle=lines[m])
    control = cells.get((DENSE_FINETUNED, 0.0), {})
    left.axhline(0.0, color="black", lw=0.8)
    if "mean" in control:
        left.axhspan(control["mean"] - control["std"], control["mean"] + control["std"],
                     color="grey", alpha=0.2, label="control ± std")
    left.set(xlabel="sparsity (%)", ylabel="Δ vs dense (%)",
             title=f"{selection.replace('+', ' + ')}: Δ, mean ± std over "
                   f"{len(summary['seeds'])} seeds")
    left.legend(fontsize=8)

    others = [m for m in methods if m != summary["reference"]]
    comps = {(c["baseline"], c["sparsity"]): c for c in summary["comparisons"]
             if c["selection"] == selection}
    step = 0.8 / max(len(others), 1)
    for i, m in enumerate(others):
        for j, s in enumerate(sparsities):
            c = comps.get((m, s))
            if c is None:
                continue
            x = j + (i - (len(others) - 1) / 2) * step
            right.errorbar([x], [c["mean"]], yerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]],
                           fmt=markers[m], capsize=3, color=colours[m],
                           mfc=colours[m] if c["decided"] else "white",
                           label=m if j == 0 else None)
    right.axhline(0.0, color="black", lw=0.8)
    right.set_xticks(range(len(sparsities)), [_pct(s) for s in sparsities])
    right.set(ylabel=f"{summary['reference']} − method (Δ points)",
              title=f"paired by seed, {summary['confidence']:.0%} CI (filled: decided)")
    if comps:
        right.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path
