"""The top-level notebooks stay thin: a parameters cell, then calls into lib."""
import json
from collections import defaultdict
from pathlib import Path

import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("*.ipynb"))
MAX_SHARED_LINES = 3   # a cell this long may recur (imports, a call); longer logic lives in lib


def code_cells(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def test_the_six_workflow_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "create_pruning.ipynb", "create_pruning_baseline_LTH.ipynb",
        "create_pruning_baseline_SNIP.ipynb", "create_pruning_baseline_random.ipynb",
        "train_baseline.ipynb", "train_prune.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_parameters_cell_and_outputs_are_stripped(path):
    cells = code_cells(path)
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    assert all(not c["outputs"] and c["execution_count"] is None for c in cells)


def test_no_code_cell_longer_than_three_lines_is_shared_between_notebooks():
    where = defaultdict(set)
    for path in NOTEBOOKS:
        for cell in code_cells(path)[1:]:
            lines = [line.rstrip() for line in "".join(cell["source"]).splitlines()
                     if line.strip()]
            if len(lines) > MAX_SHARED_LINES:
                where["\n".join(lines)].add(path.name)
    shared = {cell.splitlines()[0]: sorted(names) for cell, names in where.items()
              if len(names) > 1}
    assert not shared, f"code cells repeated across notebooks (move them into lib): {shared}"
