"""The study's cells of the one-shot methods and of the control, run by
:meth:`lib.pruning.registry.MethodSpec.run_cell` (the trained methods' cell is
:func:`lib.sparse.study.trained_cell`):

- a ``mask`` or ``structured`` method: :func:`lib.pruning.prune` on the base model (the target
  deployed sparsity, or the reference's keep-ratio table with ``sparsity_mode=
  "reference_table"``; a structural method's budget is always its channel sparsity), with
  the study's ``method_options`` of the method, then fine-tuning, masks held;
- the control ``dense_ft``: the dense model with the selected heads only, fine-tuned exactly
  like the pruned models (its Δ is what fine-tuning alone, and its BatchNorm drift, does).
"""
from __future__ import annotations

from lib.pruning.registry import (ONE_SHOT, CellInputs, CellOutcome, MethodSpec, register_method,
                                  set_kind_cell)

DENSE_FINETUNED = "dense_ft"


def prune_cell(spec: MethodSpec, inputs: CellInputs) -> CellOutcome:
    """Prune the base model with a one-shot method, then fine-tune."""
    from lib.pruning import prune, reference_keep_ratio

    study, cfg = inputs.spec, inputs.cfg
    budget = ({"sparsity": float(inputs.sparsity)}
              if study.sparsity_mode == "target" or spec.kind == "structured"
              else {"keep_ratio": reference_keep_ratio(cfg, inputs.sparsity)})
    # Seeded: a retried cell prunes to the same masks, so its checkpoint fits them.
    pruning = prune(spec.name, inputs.base, inputs.criterion, inputs.loaders.train,
                    selected_tasks=list(inputs.selection), tasks=cfg.TASKS,
                    num_batches=study.num_batches or cfg.PRUNE_NUM_BATCHES, seed=study.seed,
                    device=inputs.device, **budget, **inputs.options)
    return finetune_cell(inputs, pruning)


def dense_cell(spec: MethodSpec, inputs: CellInputs) -> CellOutcome:
    """The control: the base model's selected tasks, unpruned, fine-tuned like the others."""
    from lib.masks import sparsity_report
    from lib.pruning import PruneResult, select_tasks

    dense_net = select_tasks(inputs.base, list(inputs.selection), inputs.cfg.TASKS)
    return finetune_cell(inputs, PruneResult(dense_net, None, {"keep_ratio": 1.0},
                                             sparsity_report(dense_net)["deployed"]["sparsity"]))


def finetune_cell(inputs: CellInputs, pruning) -> CellOutcome:
    """Fine-tune ``pruning.net`` (a :class:`lib.pruning.PruneResult`) for the study's budget,
    resuming from ``run_dir/last.pth`` when an interrupted run left one."""
    from lib.masks import sparsity_report
    from lib.training import finetune

    study, run_dir = inputs.spec, inputs.run_dir
    report = sparsity_report(pruning.net, full_net=inputs.base)
    resume = (run_dir / "last.pth").exists()
    if resume:
        print(f"cell {run_dir.name}: resuming the fine-tuning from {run_dir / 'last.pth'}",
              flush=True)
    result = finetune(pruning.net, inputs.criterion, inputs.loaders.train, inputs.cfg, run_dir,
                      val_loader=inputs.loaders.val, max_iters=study.finetune_iters,
                      seed=study.seed, device=inputs.device, resume=resume,
                      overwrite=not resume, log=False, split=inputs.loaders.split,
                      weighting=study.weighting, meta=pruning.meta)
    return CellOutcome(result.net, pruning.task_masks, pruning.meta["keep_ratio"],
                       pruning.sparsity, report)


set_kind_cell(ONE_SHOT, prune_cell)
register_method(MethodSpec(
    DENSE_FINETUNED, "control", cell=dense_cell,
    summary="control: the dense model with the selected heads only, fine-tuned like the "
            "pruned models"))
