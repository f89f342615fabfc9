"""Sparse training on any :class:`lib.models.MultiTaskModel` (see docs/SPARSE.md).

    hook = make_sparse("disparse_dynamic", 90, cfg)        # a lib.training.hooks.TrainingHook
    result = train(net, criterion, loader, cfg, run_dir, hook=hook)
    result = train_sparse("minmax_dst", 98.3, criterion, loader, cfg, run_dir)
    result = minmax_pipeline(base.select(tasks), criterion, loader, cfg, out_dir,
                             prune_ratio=0.975)

Modules: ``erk`` (ERK / uniform densities, exact per-layer counts), ``masking`` (exact
selections on installed masks), ``probe`` (gradients without disturbing the run),
``dynamic`` (``disparse_dynamic``, ``rigl``), ``minmax_dst``, ``registry`` (the methods by
name, with the originals' defaults), ``train`` (from-scratch training, DiSparse's static
protocol included), ``hard_prune`` and ``reweighted`` and ``minmax_pipeline`` (the min-max
compression pipeline), ``disparse`` (DiSparse's static protocol, keep tables, IoU analysis),
``study`` (the study grid's cells for these methods).

Importing the package registers its trained methods (:mod:`lib.pruning.registry`), in the
order the study and the benchmark list them: the dynamic ones (``train``), DiSparse's static
protocol (``disparse``), the min-max pipeline (``minmax_pipeline``).
"""
from .train import FROM_SCRATCH_METHODS, train_sparse  # noqa: I001  (first: see above)
from .disparse import (DISPARSE_KEEP_TABLES, disparse_keep_ratio, iou_at_initialisation,
                       mask_agreement, static_from_scratch, train_from_scratch)
from .dynamic import DisparseDynamic, RigL
from .erk import erk_densities, keep_counts, uniform_densities
from .hard_prune import hard_prune_mask, hard_prune_masks
from .minmax_dst import MinmaxDST
from .minmax_pipeline import minmax_pipeline, minmax_prune
from .registry import DISPARSE_DYNAMIC, SPARSE_METHODS, make_sparse, sparse_options
from .reweighted import ReweightedL1

__all__ = ["DISPARSE_DYNAMIC", "DISPARSE_KEEP_TABLES", "FROM_SCRATCH_METHODS", "SPARSE_METHODS",
           "DisparseDynamic", "MinmaxDST", "ReweightedL1", "RigL", "disparse_keep_ratio",
           "erk_densities", "hard_prune_mask", "hard_prune_masks", "iou_at_initialisation",
           "keep_counts", "make_sparse", "mask_agreement", "minmax_pipeline", "minmax_prune",
           "sparse_options", "static_from_scratch", "train_from_scratch", "train_sparse",
           "uniform_densities"]
