"""CUT workspace: prune a pre-trained multi-task network into a compact model of the tasks you need.

Sub-packages and modules (see README for the workflow, docs/ARCHITECTURE.md for the layers):
    lib.datasets     one DatasetSpec per dataset (reader, losses, evaluator, conventions,
                     DiSparse defaults, keep-ratio tables), register_dataset, dataset_spec
    lib.config       dataset configs and run profiles (reference / cpu / tiny)
    lib.tasks        the task table (TaskSpec per task), the dataset conventions, batch forms
    lib.data         the on-disk dataset layouts and the synthetic scene generator
    lib.models       the MultiTaskModel contract and registry; SceneNet and the min-max models
    lib.losses       TaskLosses (per-task and weighted multi-task loss); SceneNetLoss; every
                     config's loss (losses_from_config)
    lib.masks        pruning masks on any network: install, inspect, hold, make permanent
    lib.checkpoints  every file format and the one loader of networks
    lib.metrics      streaming evaluators (reference tasks, user functions), every config's
                     evaluator (metrics_from_config) and the Δ
    lib.metrics_minmax  the min-max benchmarks' evaluators (NYUv2 in MTAN's format, CIFAR-100)
    lib.pruning      CUT and its baselines, the method registry (MethodSpec), PruneResult
    lib.training     train / fine-tune / evaluate loops with atomic, resumable checkpoints
    lib.export       compact edge artifact, ONNX, size and latency report
    lib.reports      result tables and figures
    lib.experiments  the paper's study grid
    lib.workspace    the run-folder layout and FAST_MODE's stand-ins, for the notebooks
"""


def package_version() -> str:
    """This package's version: its installed metadata, else ``pyproject.toml`` (the one place
    it is written; the project usually runs from ``PYTHONPATH`` without being installed)."""
    from importlib import metadata
    try:
        return metadata.version("cut-workspace")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


def __getattr__(name: str):
    if name == "__version__":   # read once, on first use: ``import lib`` stays cheap
        globals()["__version__"] = version = package_version()
        return version
    raise AttributeError(f"module 'lib' has no attribute {name!r}")
