"""CUT and its baselines: task selection, per-task importance, parameter decision, compact model.

Pipeline (every method shares it; see ``docs/PRUNING.md``)::

    select_tasks -> scores -> per-task / global top-k masks -> fuse_backbone -> install_masks

Public API
    select_tasks(net, selected_tasks, tasks=None)     compact SceneNet, outputs in the given order
    task_scores(net, criterion, loader, tasks, num_batches, mode="eval", device=None)
    task_scores_reference(...)                        naive oracle (the reference's procedure)
    task_masks(scores, keep_ratio)                    per-task normalised top-k, ties kept
    ScoreRanking(scores, ...)                         top-k by selection (linear time)
    fuse_backbone(masks, min_votes=2)                 int | "all" | "any" | "majority"
    cut_prune(net, criterion, loader, num_batches, keep_ratio, selected_tasks, tasks, min_votes=2)
    METHODS, prune(method, net, criterion, loader, *, selected_tasks, keep_ratio | sparsity, ...)
    masks_of(net), install_masks(net, masks), remove_masks(net)
    sparsity_report(net, full_net=None), keep_ratio_for_sparsity(...), reference_keep_ratio(cfg, S)
    save_pruned(net, path, meta=None), load_pruned(path), load_base_model(path, cfg),
    reference_state_dict(net, full_net), save_initial_model(cfg, path, seed)
    mask_iou_by_layer(a, b), pairwise_mask_iou(task_masks), layer_sparsity(...),
    plot_layer_sparsity(...), plot_mask_iou(...)
"""
from .analysis import (layer_sparsity, mask_iou_by_layer, pairwise_mask_iou, plot_layer_sparsity,
                       plot_mask_iou)
from .checkpoint import (load_base_model, load_pruned, pruned_filename, reference_state_dict,
                         save_initial_model, save_pruned, unwrap_state_dict)
from .compact import select_tasks, task_id_map
from .fusion import fuse_backbone, required_votes
from .lth import global_magnitude_masks, iterative_magnitude_masks, per_round_runs
from .masks import (check_keep_ratio, effective_weight, has_masks, install_masks, masks_of,
                    remove_masks)
from .methods import (DATA_FREE_METHODS, METHODS, PruneContext, PruningPlan, cut_prune, decide,
                      prune, uses_data)
from .ranking import ScoreRanking, SortedRanking, VotedSparsityCurve, task_masks, topk_mask
from .scores import (joint_scores, magnitude_scores, random_scores, task_scores,
                     task_scores_reference)
from .sparsity import (MaskSparsityCurve, SparsityCurve, check_sparsity, keep_ratio_for_sparsity,
                       mask_sparsity, reference_keep_ratio, sparsity_report)

__all__ = [
    "DATA_FREE_METHODS", "METHODS", "MaskSparsityCurve", "PruneContext", "PruningPlan",
    "ScoreRanking", "SortedRanking", "SparsityCurve", "VotedSparsityCurve",
    "check_keep_ratio", "check_sparsity", "cut_prune", "decide", "effective_weight",
    "fuse_backbone", "global_magnitude_masks", "has_masks", "install_masks",
    "iterative_magnitude_masks", "joint_scores", "keep_ratio_for_sparsity", "layer_sparsity",
    "load_base_model", "load_pruned", "magnitude_scores", "mask_iou_by_layer", "mask_sparsity",
    "masks_of", "pairwise_mask_iou", "per_round_runs", "plot_layer_sparsity", "plot_mask_iou", "prune",
    "pruned_filename", "random_scores", "reference_keep_ratio", "reference_state_dict",
    "remove_masks", "required_votes", "save_initial_model", "save_pruned", "select_tasks",
    "sparsity_report", "task_id_map", "task_masks", "task_scores", "task_scores_reference",
    "topk_mask", "unwrap_state_dict", "uses_data",
]
