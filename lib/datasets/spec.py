"""What the workspace knows about a dataset: one :class:`DatasetSpec`, registered by name.

A dataset (``cfg.DATASET``) used to be a string looked up in a table per fact; every fact now
sits in its spec, which every layer reads through :func:`dataset_spec`:

    @register_dataset
    def my_dataset():                  # or register_dataset(DatasetSpec(...)) at module level
        return DatasetSpec(name="my_data", tasks=("a", "b"), configs={"my_data": MyConfig},
                           reader=MyReader, losses=my_losses, evaluator=MyEval)

This module sits below every layer that reads it (``lib.config`` included), so it imports
nothing of ``lib`` but :mod:`lib.plugins` (a name it does not know first loads the user's files
named by ``CUT_PLUGINS``, which may register it). The objects a spec names from higher layers
(reader, losses, evaluator, synthetic writer, config class) are given either as the objects
themselves (a user's file, which may import anything) or, for the built-in datasets whose
objects live in higher layers, as ``"module:attribute"`` strings resolved on first use
(:func:`resolve`) -- the habit of ``lib.config``'s config modules.
``tests/test_dataset_registry.py`` resolves every one.

An unknown dataset is a one-line ``ValueError`` naming it and the registered ones: no reader,
loss, table or default ever falls back to another dataset's.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lib.plugins import load_plugins

Ref = Any   # an object, or "module:attribute" naming one (resolved by :func:`resolve`)


@dataclass(frozen=True)
class DatasetSpec:
    """Every fact about one dataset the layers of ``lib`` need.

    Data:
        name: the ``cfg.DATASET`` value (and the reader's ``LAYOUT``).
        tasks: the task names it provides, in the reference configs' output order.
        configs: ``{config name: config class or "module[:Class]"}`` reading this dataset
            (``lib.config.load_config`` knows every registered one).
        reader: a ``lib.data.base.LayoutDataset`` holding every task (``build_dataset``), or
            any Dataset class with ``from_config(cfg, split, *, augment, seed)``, ``root``,
            ``split``, ``entries`` (each item's files, its name first: the validation split
            is checked apart from the test list) and items ``ds[i]`` / ``ds[(epoch, i)]``
            (the loaders' key: augmentation reproducible from ``(seed, epoch, i)``); or
        task_datasets: ``(cfg, split, *, augment, seed) -> {task: Dataset}`` when every task
            has data of its own (``build_task_datasets``); exactly one of the two.
        synthetic: ``(cfg, root=None, num_train=None, num_test=None, seed=0, progress=True,
            workers=1) -> root``: a complete synthetic dataset in its layout, written once
            (what ``lib.data.synthetic.prepare_synthetic`` calls; None: none).
        summary: one line for listings.
    Losses and evaluation:
        losses: ``cfg -> {task: fn(pred, batch)}``; None: the task table's
            (``lib.losses.SceneNetLoss``, reading the conventions below).
        evaluator: a class with ``from_config(cfg, tasks, **options)`` and ``delta_options()``;
            None: ``lib.metrics.SceneNetEval``.
        metric_options: the options ``evaluator`` accepts (None: SceneNetEval's).
        eval_batch: the reference's test batch when the config sets no ``EVAL_BATCH_SIZE``:
            ``"one"`` or ``"config"`` (``cfg.BATCH_SIZE``).
        panels: ``{task: figure panel kind}`` for tasks outside the task table.
        image_to_rgb: ``(3 x H x W float array) -> RGB in [0, 1]``, undoing the reader's
            input encoding for figures; None: BGR minus the image mean (0..255).
    Conventions of the task table's rules:
        seg_ignore_index: the segmentation label ignored by loss and metrics.
        raw_normals: normal targets are the raw PNG encoding ``(n + 1) * 127.5``.
        depth_mask: depth validity is the batch's ``depth_mask`` (and not 255), not depth > 0.
        seg_prior: segmentation is class-weighted by ``DATA_ROOT``'s prior file.
    Pruning and deployment:
        keep_ratios: ``{reference table: {nominal sparsity %: keep ratio}}``: ``"cut"`` (CUT's
            ``create_pruning.ipynb``, the configs' ``KEEP_RATIO_TABLE``), ``"disparse_static"``
            and ``"disparse_pt"`` (DiSparse's ``create_pruned_net.py``).
        disparse_dynamic: DiSparse's dynamic defaults ``{"interval", "end", "grad_chunks"}``
            (None: the dataset has none; asking for them is an error).
        disparse_pt_score: what DiSparse's pre-trained method scores by with ``score="auto"``:
            ``"magnitude"`` (|w|) or ``"gradient"`` (``w^2 * sum|dL_t/dw|``, Taskonomy).
        iou_batches: batches of DiSparse's mask-IoU analysis (``iou_analysis.py``).
        calibration_keys: batch keys only this layout produces, so int8 calibration can tell a
            batch's layout (empty: it cannot be told from the keys).
    """
    name: str
    tasks: tuple[str, ...]
    configs: Mapping[str, Ref] = field(default_factory=dict)
    reader: Ref = None
    task_datasets: Ref = None
    synthetic: Ref = None
    summary: str = ""
    losses: Ref = None
    evaluator: Ref = None
    metric_options: Mapping[str, Any] | None = None
    eval_batch: str = "one"
    panels: Mapping[str, str] = field(default_factory=dict)
    image_to_rgb: Ref = None
    seg_ignore_index: int | None = None
    raw_normals: bool = False
    depth_mask: bool = False
    seg_prior: bool = False
    keep_ratios: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    disparse_dynamic: Mapping[str, int] | None = None
    disparse_pt_score: str = "magnitude"
    iou_batches: int = 50
    calibration_keys: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a dataset needs a name, got {self.name!r}")
        if (self.reader is None) == (self.task_datasets is None):
            raise ValueError(f"dataset {self.name!r} needs exactly one of reader (one dataset "
                             f"for every task) and task_datasets (one per task)")
        if self.eval_batch not in EVAL_BATCH_RULES:
            raise ValueError(f"dataset {self.name!r}: eval_batch {self.eval_batch!r} is not one "
                             f"of {EVAL_BATCH_RULES}")
        if not self.tasks:
            raise ValueError(f"dataset {self.name!r} lists no tasks")

    def get(self, what: str) -> Any:
        """The object field ``what`` names (resolving a ``"module:attribute"`` string)."""
        return resolve(getattr(self, what), f"dataset {self.name!r} {what}")

    def keep_table(self, table: str) -> Mapping[int, float]:
        """The reference's keep-ratio table ``table`` on this dataset (one-line error if none)."""
        if table not in self.keep_ratios:
            raise ValueError(f"dataset {self.name!r} has no {table!r} keep-ratio table; it has "
                             f"{sorted(self.keep_ratios) or 'none'}")
        return self.keep_ratios[table]

    def disparse_defaults(self) -> dict[str, int]:
        """DiSparse's dynamic-sparsity defaults on this dataset (one-line error if none)."""
        if self.disparse_dynamic is None:
            raise ValueError(f"dataset {self.name!r} has no DiSparse dynamic defaults "
                             f"(interval, end, grad_chunks); pass them as options")
        return dict(self.disparse_dynamic)


EVAL_BATCH_RULES = ("one", "config")
DATASET_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec | Callable[[], DatasetSpec]):
    """Register ``spec`` under ``spec.name`` (or, as a decorator, the spec a function returns);
    re-registering the same name with a different spec is an error. Returns its argument."""
    made = spec() if callable(spec) and not isinstance(spec, DatasetSpec) else spec
    if not isinstance(made, DatasetSpec):
        raise TypeError(f"register_dataset needs a DatasetSpec, got {made!r}")
    known = DATASET_REGISTRY.get(made.name)
    if known is not None and known != made:
        raise ValueError(f"dataset {made.name!r} is already registered with another spec")
    taken = {c: s.name for s in DATASET_REGISTRY.values() for c in s.configs if s.name != made.name}
    clash = sorted(c for c in made.configs if c in taken)
    if clash:
        raise ValueError(f"dataset {made.name!r}: config name(s) {clash} already belong to "
                         f"{sorted({taken[c] for c in clash})}")
    DATASET_REGISTRY[made.name] = made
    return spec


def dataset_names() -> list[str]:
    """The registered datasets' names (``CUT_PLUGINS``' included), sorted."""
    load_plugins()
    return sorted(DATASET_REGISTRY)


def dataset_spec(dataset: str | Any) -> DatasetSpec:
    """The spec of ``dataset`` (a name, or a config whose ``DATASET`` names it); a name not
    registered yet first loads ``CUT_PLUGINS``."""
    name = dataset if isinstance(dataset, str) else getattr(dataset, "DATASET", dataset)
    if name not in DATASET_REGISTRY:
        load_plugins()
    if name not in DATASET_REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {dataset_names()}")
    return DATASET_REGISTRY[name]


def config_refs() -> dict[str, tuple[str, Ref]]:
    """``{config name: (dataset, config class or "module[:Class]")}`` over every dataset."""
    return {config: (spec.name, ref) for spec in DATASET_REGISTRY.values()
            for config, ref in spec.configs.items()}


def resolve(ref: Ref, what: str = "reference") -> Any:
    """``ref`` itself, or the attribute a ``"module:attribute"`` string names (a bare
    ``"module"``: its ``Config``)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{what}: cannot import {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr or "Config")
    except AttributeError:
        raise ValueError(f"{what}: module {module_name!r} has no {attr or 'Config'!r}") from None
