"""The one-way data flow of docs/ARCHITECTURE.md, checked on the import statements of lib."""
import ast
from collections import defaultdict
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
# Each layer may import only from earlier layers (docs/ARCHITECTURE.md, "The one-way data flow").
# Command-line entry points (``cli*.py``) sit on top of everything and are not checked.
LAYERS = [["utils", "config"], ["tasks"], ["data", "models"], ["losses", "masks"],
          ["checkpoints"], ["metrics", "metrics_minmax"], ["pruning", "training", "export"],
          ["reports", "sparse"], ["experiments", "workspace", "cli"], ["__main__"]]


def imports_between_parts():
    """``{part: {parts it imports}}`` where a part is a top-level module or package of lib."""
    edges = defaultdict(set)
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB).with_suffix("").parts
        if len(parts) > 1 and parts[-1].startswith("cli"):
            continue
        own = parts[0]
        package = list(parts[:-1]) if path.name != "__init__.py" else list(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib."):
                target = node.module.split(".")[1:]
            elif isinstance(node, ast.Import) and node.names[0].name.startswith("lib."):
                target = node.names[0].name.split(".")[1:]
            else:
                continue
            if target and target[0] != own:
                edges[own].add(target[0])
    return edges


def test_every_part_of_lib_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in LIB.iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts - {"__init__"} == {name for layer in LAYERS for name in layer}


def test_imports_only_go_to_earlier_layers():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = sorted(f"lib.{a} imports lib.{b}" for a, targets in imports_between_parts().items()
                    for b in targets if level[b] >= level[a] and b != a)
    assert not upward, upward
