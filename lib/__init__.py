"""CUT workspace: prune a pre-trained multi-task network into a compact model of the tasks you need.

Sub-packages and modules (see README for the workflow, docs/ARCHITECTURE.md for the layers):
    lib.config       dataset configs and run profiles (reference / cpu / tiny)
    lib.tasks        the task table (TaskSpec per task) and the dataset conventions
    lib.data         the on-disk dataset layouts and the synthetic scene generator
    lib.models       the MultiTaskModel contract and registry; SceneNet and the min-max models
    lib.losses       TaskLosses (per-task and weighted multi-task loss); SceneNetLoss
    lib.masks        pruning masks on any network: install, inspect, hold, make permanent
    lib.checkpoints  every file format and the one loader of networks
    lib.metrics      streaming evaluators (reference tasks, user functions) and the Δ
    lib.pruning      CUT and its baselines, one registry (METHODS), PruneResult
    lib.training     train / fine-tune / evaluate loops with atomic, resumable checkpoints
    lib.export       compact edge artifact, ONNX, size and latency report
    lib.reports      result tables and figures
    lib.experiments  the paper's study grid
    lib.workspace    the run-folder layout and FAST_MODE's stand-ins, for the notebooks
"""

__version__ = "0.1.0"
