"""``reproduce --plan``: a study's units and what they will cost, before spending GPU-weeks.

Prints every base (trained, reused or given) and every cell with the base it waits for, then
an estimate of the cost: seconds per iteration of the base training and of a fine-tuning,
timed on this machine's device over a few iterations (in a temporary folder, removed after),
times the iterations each unit runs. Writes no results.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .engine import EngineOptions
from .spec import StudySpec, budget_iters, cell_id, check_spec, is_trained, prepare_data, \
    study_config, study_loaders

TIMED_ITERS = 3


def _seconds_per_iter(run) -> float:
    """Per-iteration time of ``run(max_iters, folder)``: (1 + TIMED_ITERS) iterations minus one
    (the set-up and the first, slow iteration cancel out)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="cut-plan-") as tmp:
        for i, iters in enumerate((1, 1 + TIMED_ITERS)):
            started = time.perf_counter()
            run(iters, Path(tmp) / str(i))
            times.append(time.perf_counter() - started)
    return max(times[1] - times[0], 1e-6) / TIMED_ITERS


def estimate(spec: StudySpec, cfg) -> tuple[float, float]:
    """(seconds per base-training iteration, per fine-tuning iteration) on this device."""
    from lib.losses import losses_from_config
    from lib.models import model_from_config
    from lib.pruning import select_tasks
    from lib.training import finetune, train
    from lib.utils import resolve_device, seed_everything

    device = resolve_device(spec.device)
    criterion = losses_from_config(cfg)
    loaders = study_loaders(spec, cfg)
    selection = list((spec.selections or [cfg.TASKS])[0])

    def base_run(iters, folder):
        seed_everything(spec.seed)
        train(model_from_config(cfg), criterion, loaders.train, cfg, folder, max_iters=iters,
              seed=spec.seed, device=device, log=False)

    def finetune_run(iters, folder):
        seed_everything(spec.seed)
        net = select_tasks(model_from_config(cfg), selection, cfg.TASKS)
        finetune(net, criterion, loaders.train, cfg, folder, max_iters=iters, seed=spec.seed,
                 device=device, log=False)
    return _seconds_per_iter(base_run), _seconds_per_iter(finetune_run)


def print_plan(spec: StudySpec, engine: EngineOptions, progress: bool = True) -> None:
    """The grid, its dependencies and its estimated cost (see the module's docstring);
    ``progress``: the synthetic dataset's progress bar, when one is written."""
    from lib.pruning.registry import method_spec

    cfg = study_config(spec)
    cells = check_spec(spec, cfg)
    prepare_data(spec, cfg, progress=progress)
    base_iters, finetune_iters = budget_iters(spec, cfg)
    out = Path(spec.out_dir)
    if spec.base_checkpoint is not None:
        base_what, base_todo = f"given: {spec.base_checkpoint}", 0
    elif (out / "base" / "base_model.pth").exists():
        base_what, base_todo = "finished earlier: reused", 0
    else:
        base_what, base_todo = f"train {base_iters} iterations", base_iters
    print(f"study {out} ({cfg.CONFIG_NAME}, profile {spec.profile}, seed {spec.seed}); "
          f"engine {engine.engine}")
    print(f"base: {base_what}")
    train_iters, ft_iters, done = base_todo, 0, 0
    for selection, method, sparsity in cells:
        cid = cell_id(method, sparsity, selection)
        if (out / "cells" / f"{cid}.json").exists():
            what, iters = "finished earlier", (0, 0)
            done += 1
        elif is_trained(method):
            what, iters = f"trains {base_iters} + {finetune_iters} iterations", \
                (base_iters, finetune_iters)
        else:
            action = ("fine-tunes" if method_spec(method).kind == "control"
                      else "prunes, fine-tunes")
            what, iters = f"{action} {finetune_iters} iterations", (0, finetune_iters)
        print(f"  cell {cid}: after base; {what}")
        train_iters += iters[0]
        ft_iters += iters[1]
    base_s, ft_s = estimate(spec, cfg)
    seconds = train_iters * base_s + ft_iters * ft_s
    print(f"{len(cells)} cells ({done} finished), 1 base; {train_iters} training and "
          f"{ft_iters} fine-tuning iterations to run")
    print(f"measured on {spec.device or 'the default device'}: {base_s * 1000:.1f} ms per "
          f"training iteration, {ft_s * 1000:.1f} ms per fine-tuning iteration")
    print(f"estimate: {seconds / 60:.1f} min ({seconds / 3600:.2f} h) of one device, one unit "
          f"at a time (pruning, evaluation and figures not counted); cells run in parallel "
          f"on the engine's slots")
