"""The sparse-training methods by name, with each original's defaults per dataset.

    hook = make_sparse("disparse_dynamic", 90, cfg)      # DiSparse's INT/END for cfg.DATASET
    result = train(net, criterion, loader, cfg, run_dir, hook=hook)

``sparsity`` is a percentage: the overall target for ``disparse_dynamic`` and ``rigl`` (ERK
distributes it), the per-layer ratio for ``minmax_dst`` (``sparsity / 100``). ``options`` go
to the method; an unknown one is a one-line error listing the accepted ones.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from lib.datasets import dataset_names, dataset_spec
from lib.training.hooks import TrainingHook

from .dynamic import DisparseDynamic, RigL
from .minmax_dst import MinmaxDST


class _DisparseDynamic(Mapping):
    """``{dataset: DiSparse's dynamic defaults}``: mask updates every ``interval`` iterations
    until ``end`` (PRUNE_RATE 0.5) and the pieces its dynamic_disparse cuts a batch into for
    the gradients (``grad_chunks``), read live from each dataset's spec
    (:class:`lib.datasets.DatasetSpec`, ``disparse_dynamic``). An unknown dataset, or one
    without defaults, is a one-line ValueError (``.get`` included): never another's."""

    def __getitem__(self, dataset: str) -> dict[str, int]:
        return dataset_spec(dataset).disparse_defaults()

    def __iter__(self):
        return iter([n for n in dataset_names() if dataset_spec(n).disparse_dynamic is not None])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def get(self, dataset, default=None):
        return self[dataset]


DISPARSE_DYNAMIC = _DisparseDynamic()
RIGL_END_FRACTION = 0.75   # RigL stops updating masks after 75 % of training


def _disparse_dynamic(sparsity, cfg, max_iters, **options):
    if cfg is None and not {"interval", "end"} <= set(options):
        raise ValueError("disparse_dynamic without a config needs the options interval and end "
                         "(its defaults are cfg.DATASET's)")
    defaults = {} if cfg is None else DISPARSE_DYNAMIC[cfg.DATASET]
    return DisparseDynamic(sparsity, **{**defaults, **options})


def _rigl(sparsity, cfg, max_iters, **options):
    options.setdefault("end", int(RIGL_END_FRACTION * max_iters))
    return RigL(sparsity, **options)


def _minmax_dst(sparsity, cfg, max_iters, **options):
    return MinmaxDST(float(sparsity) / 100.0, **options)


SPARSE_METHODS: dict[str, tuple[type[TrainingHook], Callable[..., TrainingHook]]] = {
    "disparse_dynamic": (DisparseDynamic, _disparse_dynamic),
    "minmax_dst": (MinmaxDST, _minmax_dst),
    "rigl": (RigL, _rigl),
}


def sparse_options(method: str) -> list[str]:
    """The options ``method`` accepts (its constructor's keywords)."""
    cls, _ = _lookup(method)
    return [p for p in inspect.signature(cls.__init__).parameters
            if p not in ("self", "sparsity", "prune_ratio")]


def make_sparse(method: str, sparsity: float, cfg=None, *, max_iters: int | None = None,
                **options: Any) -> TrainingHook:
    """The training hook of ``method`` at ``sparsity`` percent; ``max_iters`` (default
    ``cfg.MAX_ITERS``) sizes RigL's default ``end``."""
    _, build = _lookup(method)
    unknown = sorted(set(options) - set(sparse_options(method)))
    if unknown:
        raise ValueError(f"sparse method {method!r} has no option(s) {unknown}; its options: "
                         f"{sparse_options(method)}")
    if max_iters is None:
        max_iters = int(getattr(cfg, "MAX_ITERS", 0) or 0)
    return build(sparsity, cfg, max_iters, **options)


def _lookup(method: str):
    if method not in SPARSE_METHODS:
        raise ValueError(f"unknown sparse training method {method!r}; expected one of "
                         f"{sorted(SPARSE_METHODS)}")
    return SPARSE_METHODS[method]
