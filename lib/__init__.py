"""CUT workspace: prune a pre-trained multi-task network into a compact model of the tasks you need.

Sub-packages and modules (see README for the workflow):
    lib.config    dataset configs and run profiles (reference / cpu / tiny)
    lib.data      the three AdaShare on-disk layouts and the synthetic scene generator
    lib.models    SceneNet: dilated ResNet backbone with one ASPP head per task
    lib.losses    per-task losses and the weighted multi-task loss
    lib.metrics   streaming AdaShare-style evaluator and the multi-task delta
    lib.pruning   CUT and its baselines
    lib.training  train / fine-tune / evaluate loops with atomic, resumable checkpoints
    lib.export    compact edge artifact, ONNX, size and latency report
"""

__version__ = "0.1.0"
