"""What defines a study and its grid: :class:`StudySpec`, the cells (:func:`grid`,
:func:`cell_id`), the config it runs with, and the checks made before anything is written
(:func:`check_spec`, :func:`check_record`, :func:`check_study_data`).

The units (:mod:`lib.experiments.units`), the engine and the driver
(:mod:`lib.experiments.study`) all read this module; it imports none of them.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import lib.sparse  # noqa: F401  (registers the methods that train)
from lib.config import load_config
from lib.pruning.registry import TRAINED, method_names, method_spec
from lib.training.engine import SPEED_ONLY
from lib.utils import check_output_dir, read_json

# The control row: the dense model with the selected heads only, fine-tuned exactly like the
# pruned models (a registered method of kind "control"). Its delta is what fine-tuning alone
# (and its BatchNorm drift) does.
from .cells import DENSE_FINETUNED  # noqa: E402,I001
from .equal_cost import EQUAL_COST_METHODS  # noqa: E402,F401

DEFAULT_METHODS = ("cut", "lth", "snip", "random", "disparse_static")
DEFAULT_SPARSITIES = (30, 50, 70, 90)
DENSE_ROW = "dense"   # the results table's row of the dense base model (not a cell)


def default_selections(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """All tasks, then every pair (the paper's selections for NYU-v2's three tasks).

    With more than three tasks (Taskonomy) the pairs are limited to those of seg, sn and depth.
    """
    tasks = list(tasks)
    selections = [tuple(tasks)]
    pool = tasks if len(tasks) <= 3 else [t for t in tasks if t in ("seg", "sn", "depth")]
    if len(tasks) > 2:
        selections += list(itertools.combinations(pool, 2))
    return selections


@dataclass
class StudySpec:
    """Everything that defines a study. Defaults: the CPU demo profile on synthetic NYU-v2."""

    config: str = "nyuv2_3task"
    profile: str = "cpu"
    data_root: str | None = None          # None -> the built-in synthetic dataset
    out_dir: str = "runs/study"
    methods: Sequence[str] = DEFAULT_METHODS
    sparsities: Sequence[float] = DEFAULT_SPARSITIES
    selections: Sequence[Sequence[str]] | None = None   # None -> default_selections(TASKS)
    seed: int = 0                         # training, pruning and data-order seed
    data_seed: int = 0                    # the synthetic dataset's seed (fixed across seeds)
    base_checkpoint: str | None = None    # None -> train one (or reuse out_dir/base)
    base_iters: int | None = None         # None -> cfg.MAX_ITERS
    finetune_iters: int | None = None     # None -> cfg.RETRAIN_EPOCH
    num_batches: int | None = None        # None -> cfg.PRUNE_NUM_BATCHES
    sparsity_mode: str = "target"         # "target": hit the deployed sparsity; "reference_table"
    metric_options: dict = field(default_factory=dict)  # e.g. {"miou": "present"}; {}: defaults
    dense_control: bool = True            # add a DENSE_FINETUNED cell per selection
    val_fraction: float = 0.1
    synthetic_train: int = 160
    synthetic_test: int = 32
    device: str | None = None
    overrides: dict = field(default_factory=dict)  # extra config attributes
    weighting: str | dict | None = None   # task weighting of the cells' training (None: defaults)
    method_options: dict = field(default_factory=dict)  # {method: {option: value}}

    def __post_init__(self):
        if self.sparsity_mode not in ("target", "reference_table"):
            raise ValueError(f"sparsity_mode must be 'target' or 'reference_table', "
                             f"got {self.sparsity_mode!r}")
        for s in self.sparsities:
            if not 0 <= float(s) < 100:
                raise ValueError(f"sparsity {s} outside [0, 100)")
        if self.weighting is not None:   # name and options, before any work
            from lib.training.weighting import make_weighting
            make_weighting(self.weighting, ["any task"])


@dataclass
class StudyResult:
    spec: StudySpec
    rows: list[dict]
    table_csv: Path
    table_md: Path
    figures: dict[str, Path]
    table_markdown: str
    seconds: float
    cpu_seconds: float = 0.0   # CPU time its units reported (every study of the run, summed)


def cell_id(method: str, sparsity: float, selection: Sequence[str]) -> str:
    return f"{method}_{float(sparsity):g}_{'-'.join(selection)}"


# Spec fields that change what a finished cell means: resuming with other values would mix
# incomparable rows in one table, so it is refused.
_DEFINING_FIELDS = ("config", "profile", "data_root", "seed", "data_seed", "base_checkpoint",
                    "base_iters", "finetune_iters", "num_batches", "sparsity_mode", "val_fraction",
                    "synthetic_train", "synthetic_test", "metric_options", "overrides",
                    "dense_control", "weighting", "method_options")


def study_config(spec: StudySpec):
    """The config a study runs with (profile + overrides; DATA_ROOT from the spec)."""
    cfg = load_config(spec.config, profile=spec.profile, **dict(spec.overrides))
    if spec.data_root is not None:
        cfg.DATA_ROOT = str(spec.data_root)
    return cfg


def prepare_data(spec: StudySpec, cfg, progress: bool = True) -> str:
    """Point ``cfg`` at the study's data, generating the synthetic dataset (with a progress
    bar when ``progress``) when none is given."""
    if spec.data_root is None:
        from lib.data.synthetic import prepare_synthetic
        cfg.DATA_ROOT = prepare_synthetic(cfg, num_train=spec.synthetic_train,
                                          num_test=spec.synthetic_test, seed=spec.data_seed,
                                          progress=progress)
    return cfg.DATA_ROOT


def check_study_data(cfg) -> None:
    """Every file the train and test lists of ``cfg``'s dataset name exists (existence only;
    a one-line FileNotFoundError naming the first missing one otherwise); for a per-task
    dataset, every task's."""
    from lib.data import build_dataset, build_task_datasets, check_files, has_task_datasets

    for split in ("train", "test"):
        if has_task_datasets(cfg):
            for dataset in build_task_datasets(cfg, split, augment=False).values():
                check_files(dataset)
        else:
            check_files(build_dataset(cfg, split, augment=False))


def _config_settings(cfg) -> dict:
    """The config values a study ran with (its profile's included), as JSON reads them back;
    the data root is the spec's ``data_root`` (a synthetic dataset's folder may move)."""
    from lib.config import config_to_dict

    values = {k: v for k, v in config_to_dict(cfg).items()
              if k != "DATA_ROOT" and k not in SPEED_ONLY}
    return json.loads(json.dumps(values, default=list))


def check_record(spec: StudySpec, cfg, out: Path) -> dict:
    """The record ``out/study.json`` will hold (the spec and the config values it resolved to);
    a one-line ValueError when an earlier study there had other defining settings, a profile's
    values included (a record written before those were kept is checked on the spec alone)."""
    path = out / "study.json"
    current = json.loads(json.dumps(asdict(spec), default=list))   # tuples -> lists, as read back
    current["settings"] = _config_settings(cfg)
    if not path.exists():
        return current
    # A field an older version did not record had its default value then.
    defaults = json.loads(json.dumps(asdict(StudySpec()), default=list))
    recorded = read_json(path, "study record", recover=(
        "it records the settings the finished cells were computed with: restore it, or "
        "run the study in another out_dir"))
    if not isinstance(recorded, dict):
        raise ValueError(f"study record {path} holds {type(recorded).__name__}, expected a "
                         f"JSON object; restore it, or run the study in another out_dir")
    previous = {**defaults, **recorded}
    changed = [k for k in _DEFINING_FIELDS if previous.get(k) != current.get(k)]
    before = [previous.get(k) for k in changed]
    after = [current.get(k) for k in changed]
    old_settings = recorded.get("settings")
    if isinstance(old_settings, dict):
        for key in sorted(set(old_settings) | set(current["settings"])):
            if old_settings.get(key) != current["settings"].get(key):
                changed.append(f"settings.{key}")
                before.append(old_settings.get(key))
                after.append(current["settings"].get(key))
    if changed:
        raise ValueError(f"{path} was written by a study with other {changed} "
                         f"({before} vs {after}); use another out_dir")
    return current


def study_loaders(spec: StudySpec, cfg):
    from lib.training import make_loaders
    # Built afresh for every cell so each cell sees the same seeded data order, whether the
    # study ran through or was resumed.
    return make_loaders(cfg, val_fraction=spec.val_fraction, seed=spec.seed)


def budget_iters(spec: StudySpec, cfg) -> tuple[int, int]:
    """(base-training, fine-tuning) iterations of the study."""
    return (int(spec.base_iters or cfg.MAX_ITERS), int(spec.finetune_iters or cfg.RETRAIN_EPOCH))


def with_budgets(rows: list[dict], spec: StudySpec, cfg) -> list[dict]:
    """Each row with its ``budget``: the training it cost, in iterations (the dense row: its
    base training; a method's row: its spec's ``budget_for``)."""
    base_iters, finetune_iters = budget_iters(spec, cfg)
    base = "given" if spec.base_checkpoint is not None else base_iters

    def budget(method: str) -> str:
        if method == DENSE_ROW:
            return f"base {base}"
        return method_spec(method).budget_for(base, base_iters, finetune_iters)
    return [{**row, "budget": budget(row["method"])} for row in rows]


def grid(spec: StudySpec, tasks: Sequence[str]) -> list[tuple[tuple[str, ...], str, float]]:
    """Every (selection, method, sparsity) cell of the study, in run order (per selection: the
    fine-tuned dense control first, if asked for, then every method at every sparsity)."""
    selections = [tuple(s) for s in (spec.selections or default_selections(tasks))]
    for sel in selections:
        unknown = [t for t in sel if t not in tasks]
        if unknown:
            raise ValueError(f"selection {list(sel)} names unknown task(s) {unknown}; "
                             f"available: {list(tasks)}")
        if not sel:
            raise ValueError(f"an empty task selection; available: {list(tasks)}")
        repeated = sorted({t for t in sel if sel.count(t) > 1})
        if repeated:
            raise ValueError(f"selection {list(sel)} names task(s) {repeated} more than once")
    repeated = sorted({"+".join(s) for s in selections if selections.count(s) > 1})
    if repeated:
        raise ValueError(f"selection(s) {repeated} given more than once")
    cells = []
    for sel in selections:
        if spec.dense_control:
            cells.append((sel, DENSE_FINETUNED, 0.0))
        cells += [(sel, m, float(s)) for m in spec.methods for s in spec.sparsities]
    return cells


def check_method_options(spec: StudySpec) -> dict[str, dict]:
    """``spec.method_options`` checked by each method's spec (every option known, every value
    of the form it expects), converted; a one-line ValueError otherwise."""
    if not isinstance(spec.method_options, dict):
        raise ValueError(f"method_options must be {{method: {{option: value}}}}, got "
                         f"{spec.method_options!r}")
    checked = {}
    for method, options in spec.method_options.items():
        if method not in spec.methods:
            raise ValueError(f"method_options names method {method!r}, which the study does "
                             f"not run (methods: {list(spec.methods)})")
        if not isinstance(options, dict):
            raise ValueError(f"method_options[{method!r}] must be {{option: value}}, got "
                             f"{options!r}")
        checked[method] = method_spec(method).check_options(options)
    return checked


def is_trained(method: str) -> bool:
    """Whether ``method`` trains (a kind of :data:`lib.pruning.registry.TRAINED`)."""
    return method_spec(method).kind in TRAINED


def check_spec(spec: StudySpec, cfg) -> list[tuple[tuple[str, ...], str, float]]:
    """Validate everything a study is given, before any work or file: methods, selections
    (:func:`grid`), sparsities, the output folder and the base checkpoint; returns the cells."""
    from lib.pruning import check_sparsity

    runnable = [m for m in method_names() if method_spec(m).kind != "control"]
    unknown = [m for m in spec.methods if m not in runnable]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(runnable)}")
    check_method_options(spec)
    repeated = sorted({m for m in spec.methods if list(spec.methods).count(m) > 1})
    if repeated:
        raise ValueError(f"method(s) {repeated} given more than once")
    if not spec.methods or not spec.sparsities:
        raise ValueError(f"a study needs at least one method and one sparsity, got methods "
                         f"{list(spec.methods)} and sparsities {list(spec.sparsities)}")
    for value in spec.sparsities:
        check_sparsity(value)
    cells = grid(spec, cfg.TASKS)
    check_output_dir(spec.out_dir, "study folder")
    if spec.base_checkpoint is not None and not Path(spec.base_checkpoint).is_file():
        raise FileNotFoundError(f"base checkpoint {spec.base_checkpoint} does not exist")
    return cells
