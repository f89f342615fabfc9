"""CUT and its baselines for any :class:`lib.models.MultiTaskModel`: task selection, per-task
importance, parameter decision, compact model.

Pipeline (every method shares it; see ``docs/PRUNING.md``)::

    net.select(tasks) -> scores -> per-task / global top-k masks -> fuse shared layers -> install

Public API
    prune(method, net, criterion, loader, *, selected_tasks, keep_ratio | sparsity, ...)
        -> PruneResult(net, task_masks, meta, sparsity); METHODS (name -> plan), uses_data
    MethodSpec, register_method, method_spec(name), method_names(*kinds)    the method registry
    make_plan(method, net, ...) -> PruningPlan        prune's set-up (compact copy, seeded scores)
    TargetSearch(plan).keep_for(S) -> (keep, exact)   prune's target search, remembering its points
    cut_prune(net, criterion, loader, num_batches, keep_ratio, selected_tasks, tasks, min_votes=2)
    select_tasks(net, selected_tasks, tasks=None)     net.select(...): compact copy, outputs in order
    probe_from(loader)                                first batch's input, for select's checks
    task_scores(net, criterion, loader, tasks, num_batches, mode="eval", device=None)
    task_scores_reference(...)                        naive oracle (the reference's procedure)
    task_masks(scores, keep_ratio)                    per-task normalised top-k, ties kept
    ScoreRanking(scores, ...)                         top-k by selection (linear time)
    fuse_backbone(masks, min_votes=2)                 int | "all" | "any" | "majority"
    masks_of(net), install_masks(net, masks), remove_masks(net)          (from lib.masks)
    sparsity_report(net, full_net=None), keep_ratio_for_sparsity(...), reference_keep_ratio(cfg, S)
    save_pruned(net, path, meta=None), load_pruned(path), load_base_model(path, cfg),
    reference_state_dict(net, full_net), save_initial_model(cfg, path, seed)  (lib.checkpoints)
    mask_iou_by_layer(a, b), pairwise_mask_iou(task_masks), layer_sparsity(...),
    plot_layer_sparsity(...), plot_mask_iou(...)
    structured.structured_cut_prune(...)              channels removed ("structured_cut")
    prune_and_save(method, net, ..., path) -> SavedPruning; plot_pruning(saved, folder)
    errors: PruningError, KeepsNoWeightError, UnreachableSparsityError
"""
from lib.checkpoints import (load_base_model, load_pruned, pruned_filename, reference_state_dict,
                             save_initial_model, save_pruned, unwrap_state_dict)
from lib.masks import (effective_weight, has_masks, install_masks, masks_of, remove_masks,
                       same_masks, sparsity_report)

from . import cut_variants  # registers the CUT variants
from .analysis import (layer_sparsity, mask_iou_by_layer, pairwise_mask_iou, plot_layer_sparsity,
                       plot_mask_iou)
from .compact import probe_from, select_tasks
from .errors import KeepsNoWeightError, PruningError, UnreachableSparsityError
from .fusion import fuse_backbone, required_votes
from .lth import global_magnitude_masks, iterative_magnitude_masks, per_round_runs
from .methods import (DATA_FREE_METHODS, METHODS, STRUCTURED_METHODS, PruneContext, PruneResult,
                      PruningPlan, StructuredPlan, TargetSearch, check_method, cut_prune, decide,
                      make_plan, prune, uses_data)
from .ranking import (ScoreRanking, SortedRanking, VotedSparsityCurve, check_keep_ratio,
                      task_masks, topk_mask)
from .scores import (joint_scores, magnitude_scores, random_scores, task_scores,
                     task_scores_reference)
from .registry import (KINDS, CellInputs, CellOutcome, MethodSpec, Option, load_plugins,
                       method_names, method_spec, register_method)
from .sparsity import (MaskSparsityCurve, RememberedCurve, SparsityCurve, check_sparsity,
                       keep_ratio_for_sparsity, mask_sparsity, reference_keep_ratio)
from .workflow import SavedPruning, plot_pruning, prune_and_save

__all__ = [
    "CellInputs", "CellOutcome", "KINDS", "MethodSpec", "Option", "load_plugins", "method_names",
    "method_spec", "DATA_FREE_METHODS", "KeepsNoWeightError", "METHODS", "MaskSparsityCurve", "PruneContext",
    "PruneResult", "PruningError", "PruningPlan", "RememberedCurve", "STRUCTURED_METHODS",
    "SavedPruning", "TargetSearch", "check_method", "make_plan", "register_method",
    "ScoreRanking", "SortedRanking", "SparsityCurve", "StructuredPlan",
    "UnreachableSparsityError", "VotedSparsityCurve", "check_keep_ratio", "check_sparsity",
    "cut_prune", "decide", "effective_weight", "fuse_backbone", "global_magnitude_masks",
    "has_masks", "install_masks", "iterative_magnitude_masks", "joint_scores",
    "keep_ratio_for_sparsity", "layer_sparsity", "load_base_model", "load_pruned",
    "magnitude_scores", "mask_iou_by_layer", "mask_sparsity", "masks_of", "pairwise_mask_iou",
    "per_round_runs", "plot_layer_sparsity", "plot_mask_iou", "plot_pruning", "prune",
    "prune_and_save", "pruned_filename", "random_scores", "reference_keep_ratio",
    "reference_state_dict", "remove_masks", "required_votes", "same_masks", "save_initial_model",
    "save_pruned", "probe_from", "select_tasks", "sparsity_report", "task_masks", "task_scores",
    "task_scores_reference", "topk_mask", "unwrap_state_dict", "uses_data",
]
