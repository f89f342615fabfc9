"""Task selection: a compact SceneNet holding the backbone and only the selected heads."""
from __future__ import annotations

from typing import Sequence

from lib.models import SceneNet, check_scene_net, prunable_modules

from .masks import has_masks, install_masks


def network_tasks(net: SceneNet, tasks: Sequence[str] | None = None) -> list[str]:
    """Task names aligned with ``net.task_ids`` (``tasks`` overrides ``net.tasks``)."""
    check_scene_net(net)
    names = list(tasks) if tasks is not None else net.tasks
    if names is None:
        raise ValueError("this SceneNet has no task names; pass tasks=[...] aligned with its "
                         f"heads {net.task_ids}")
    if len(names) != len(net.task_ids):
        raise ValueError(f"tasks {list(names)} do not align with the network's heads "
                         f"{net.task_ids}")
    return names


def task_id_map(net: SceneNet, selected: Sequence[str],
                tasks: Sequence[str] | None = None) -> dict[str, int]:
    """``{task name: 1-based head id}`` of ``selected``; one-line error on unknown/duplicates."""
    names = network_tasks(net, tasks)
    selected = list(selected)
    if not selected:
        raise ValueError(f"no task selected; available tasks: {names}")
    unknown = [t for t in selected if t not in names]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available tasks: {names}")
    dupes = sorted({t for t in selected if selected.count(t) > 1})
    if dupes:
        raise ValueError(f"task(s) {dupes} selected more than once; available tasks: {names}")
    return {t: net.task_ids[names.index(t)] for t in selected}


def select_tasks(net: SceneNet, selected_tasks: Sequence[str],
                 tasks: Sequence[str] | None = None) -> SceneNet:
    """A new compact SceneNet with the backbone and only the heads of ``selected_tasks``.

    Weights (and prune masks, if ``net`` carries any) are copied; ``net`` is left untouched.
    Kept heads keep their names (``task3_fc1_c0`` stays ``task3_fc1_c0``), removed heads are
    absent from the module tree and the state dict. ``forward`` returns the outputs **in the
    order of** ``selected_tasks`` **as given** (``forward_dict`` keys them by name).
    ``tasks`` names ``net``'s heads and defaults to ``net.tasks``.
    """
    ids = task_id_map(net, selected_tasks, tasks)
    names = network_tasks(net, tasks)
    num_class = [net.tasks_num_class[names.index(t)] for t in ids]
    compact = SceneNet(num_class, net.backbone_name, net.width_mult, task_ids=list(ids.values()),
                       tasks=list(ids))
    if has_masks(net):
        source = prunable_modules(net)
        install_masks(compact, {n: source[n].weight_mask.bool() for n in prunable_modules(compact)
                                if hasattr(source[n], "weight_mask")}, fill=False)
    keep = compact.state_dict().keys()
    compact.load_state_dict({k: v for k, v in net.state_dict().items() if k in keep}, strict=True)
    device = next(net.parameters()).device
    return compact.to(device).train(net.training)
