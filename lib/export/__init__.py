"""Edge export: a compact artifact that is really smaller, ONNX, and a measured size/speed report.

- :func:`save_artifact` / :func:`load_artifact`: a self-describing file (magic, version, JSON
  manifest, byte blobs; never pickle) holding only the network's own tensors, masked weights as
  compressed bitmask or delta-coded indices plus kept values. Lossless in float32.
- :func:`export_onnx` / :func:`check_onnx_parity`: ONNX of the network with prune hooks made
  permanent on a copy, checked against PyTorch in onnxruntime.
- :func:`parameter_counts` / :func:`conv_macs` / :func:`torch_latency_ms` /
  :func:`onnx_latency_ms` / :class:`MaskCounter` (:mod:`lib.export.measure`): every count of
  parameters and MACs and every latency timing of the project, in one module.
- :func:`size_speed_report` / :func:`report_markdown` / :func:`plot_report`: parameters, MACs,
  bytes on disk and CPU latency of a dense vs a compact network.
- Structurally pruned networks (:mod:`lib.pruning.structured`) go through the same artifact.
- :func:`quantize_compact` (:mod:`lib.export.quantize`): static int8 post-training quantization
  (onnxruntime QDQ, per-channel weights, calibrated on task data); :func:`save_int8_artifact`
  stores it with sparse int8 weights; :func:`int8_fidelity` measures its task metrics against
  the float model.
- :func:`solve_budget` (:mod:`lib.export.budget`): the largest keep / channel ratio whose
  measured file size and latency fit "X MB" / "Y ms" on this machine (from a base model:
  :func:`lib.experiments.budget.fit_budget`).

Every layer takes any registered :class:`lib.models.MultiTaskModel`. Masks on a network
(``effective_state_dict``, ``prune_masks``, ``plain_copy``, ``has_prune_hooks``) are
:mod:`lib.masks`' and re-exported here.
"""
from lib.checkpoints import net_from_state
from lib.masks import effective_state_dict, plain_copy, prune_masks
from lib.masks import has_masks as has_prune_hooks

from .artifact import (ARTIFACT_SUFFIX, load_artifact, max_output_difference, read_manifest,
                       save_artifact)
from .budget import BudgetResult, BudgetUnreachable, Measurer, budget_markdown, solve_budget
from .container import FORMAT_VERSION, MAGIC, ArtifactFormatError
from .fidelity import OnnxNet, int8_fidelity
from .int8_artifact import (INT8_SUFFIX, int8_session, load_int8_model, read_int8_manifest,
                            save_int8_artifact)
from .onnx_io import check_onnx_parity, export_onnx
from .quantize import (INT8_SCHEME, CalibrationError, PruneHooksError, calibration_images,
                       pruned_zeros_kept, quantize_compact, quantize_network, quantized_weights)
from .measure import (MAC_UNIT, MaskCounter, conv_macs, onnx_latency_ms, parameter_counts,
                      torch_latency_ms)
from .report import plot_report, plot_tradeoff, report_markdown, size_speed_report
from .report_int8 import Int8Options, TaskMetrics

__all__ = ["BudgetResult", "BudgetUnreachable", "Int8Options", "TaskMetrics", "budget_markdown",
           "Measurer", "plot_tradeoff", "solve_budget",
           "CalibrationError", "INT8_SCHEME", "INT8_SUFFIX", "OnnxNet", "PruneHooksError",
           "calibration_images", "int8_fidelity", "int8_session", "load_int8_model",
           "pruned_zeros_kept", "quantize_compact", "quantize_network", "quantized_weights",
           "read_int8_manifest", "save_int8_artifact",
           "ARTIFACT_SUFFIX", "FORMAT_VERSION", "MAGIC", "MAC_UNIT", "ArtifactFormatError",
           "MaskCounter",
           "check_onnx_parity", "conv_macs", "effective_state_dict", "export_onnx",
           "has_prune_hooks", "load_artifact", "max_output_difference",
           "net_from_state", "onnx_latency_ms", "parameter_counts", "plain_copy",
           "plot_report", "prune_masks", "read_manifest", "report_markdown", "save_artifact",
           "size_speed_report", "torch_latency_ms"]
