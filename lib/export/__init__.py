"""Edge export: a compact artifact that is really smaller, ONNX, and a measured size/speed report.

- :func:`save_artifact` / :func:`load_artifact`: a self-describing file (magic, version, JSON
  manifest, byte blobs; never pickle) holding only the network's own tensors, masked weights as
  compressed bitmask or delta-coded indices plus kept values. Lossless in float32.
- :func:`export_onnx` / :func:`check_onnx_parity`: ONNX of the network with prune hooks made
  permanent on a copy, checked against PyTorch in onnxruntime.
- :func:`size_speed_report` / :func:`report_markdown` / :func:`plot_report`: parameters, MACs,
  bytes on disk and CPU latency of a dense vs a compact network.
- Structurally pruned networks (:mod:`lib.pruning.structured`) go through the same artifact.

Every layer takes any registered :class:`lib.models.MultiTaskModel`. Masks on a network
(``effective_state_dict``, ``prune_masks``, ``plain_copy``, ``has_prune_hooks``) are
:mod:`lib.masks`' and re-exported here.
"""
from lib.checkpoints import net_from_state
from lib.masks import effective_state_dict, plain_copy, prune_masks
from lib.masks import has_masks as has_prune_hooks

from .artifact import (ARTIFACT_SUFFIX, load_artifact, max_output_difference, read_manifest,
                       save_artifact)
from .container import FORMAT_VERSION, MAGIC, ArtifactFormatError
from .onnx_io import check_onnx_parity, export_onnx
from .report import (MAC_UNIT, conv_macs, onnx_latency_ms, parameter_counts, plot_report,
                     report_markdown, size_speed_report, torch_latency_ms)

__all__ = ["ARTIFACT_SUFFIX", "FORMAT_VERSION", "MAGIC", "MAC_UNIT", "ArtifactFormatError",
           "check_onnx_parity", "conv_macs", "effective_state_dict", "export_onnx",
           "has_prune_hooks", "load_artifact", "max_output_difference",
           "net_from_state", "onnx_latency_ms", "parameter_counts", "plain_copy",
           "plot_report", "prune_masks", "read_manifest", "report_markdown", "save_artifact",
           "size_speed_report", "torch_latency_ms"]
