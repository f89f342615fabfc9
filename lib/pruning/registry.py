"""One :class:`MethodSpec` per method: every fact about a pruning or training method in one
object, registered from the method's own file with :func:`register_method`.

    @register_method("cut", kind="mask", summary="CUT: per-task |w * dL/dw|, backbone vote",
                     options={"min_votes": votes(2)})
    def cut(net, ctx, *, min_votes=2): ...                  # -> PruningPlan

A spec holds the method's kind (:data:`KINDS`), its hook (``plan`` for the one-shot kinds,
``(net, ctx, **options) -> PruningPlan | StructuredPlan``; ``train`` for the trained kinds,
``(job) -> (network, task masks or None, final checkpoint)``; ``cell`` to replace the study's
cell of its kind altogether), whether it scores on data (:meth:`MethodSpec.uses_data`), its
options with defaults and checks (:class:`Option`; an unknown option or a bad value is a
one-line ValueError naming the method, the option and what was expected), the budget the
results table states for it and a one-line summary. :func:`lib.pruning.prune`, the study,
the benchmark's grids, the explorer and the command line read it; nothing else keeps a
list of methods or dispatches on their names.

Methods defined outside ``lib`` are registered by importing their file: set ``CUT_PLUGINS`` to
files or module names separated by ``os.pathsep``; :func:`lib.plugins.load_plugins` imports
them on the first look-up of the registry (the command line, the study's units under any
engine), as it does for the dataset and model registries.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Sequence

from lib.plugins import load_plugins

# What a method does with the dense base model; the study's cell and the budget follow from it.
KINDS = {
    "mask": "one-shot masks on the trained base model, then fine-tuning",
    "structured": "channels removed from the trained base model, then fine-tuning",
    "trained_from_base": "the base model trained sparse by the method's own schedule",
    "trained_from_scratch": "a freshly initialised network trained sparse",
    "control": "a reference row of the study (no pruning)",
}
ONE_SHOT = ("mask", "structured")                       # what lib.pruning.prune runs
TRAINED = ("trained_from_base", "trained_from_scratch")
# The results table's budget column by kind (B: base training, F: fine-tuning, in iterations).
BUDGETS = {**dict.fromkeys(("mask", "structured", "control", "trained_from_base"),
                         "base {base} + ft {finetune}"),
           "trained_from_scratch": "{scratch} from scratch"}


# ------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One option of a method: its default, what a value must be (``expected``, said in the
    error) and ``check(value) -> value`` (raises ValueError / TypeError for a bad one; a string,
    as the command line gives, is converted). ``default=None`` with ``help`` saying so: the
    method or its study schedule picks it."""
    default: Any
    expected: str
    check: Callable[[Any], Any]
    help: str = ""


def _from_text(value: Any, convert: Callable[[str], Any]) -> Any:
    return convert(value.strip()) if isinstance(value, str) else value


def integer(default: int | None, minimum: int | None = None, help: str = "") -> Option:
    def check(value):
        value = _from_text(value, int)
        if isinstance(value, bool) or not isinstance(value, int) or \
                (minimum is not None and value < minimum):
            raise ValueError(value)
        return value
    expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    return Option(default, expected, check, help)


def number(default: float | None, above: float | None = None, below: float | None = None,
           help: str = "", at_least: float | None = None, at_most: float | None = None
           ) -> Option:
    """A real number; ``above`` / ``below`` exclusive bounds, ``at_least`` / ``at_most``
    inclusive ones."""
    def check(value):
        value = _from_text(value, float)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or (above is not None and not value > above) \
                or (below is not None and not value < below) \
                or (at_least is not None and not value >= at_least) \
                or (at_most is not None and not value <= at_most):
            raise ValueError(value)
        return value
    low = f"> {above}" if above is not None else (f">= {at_least}" if at_least is not None else "")
    high = f"< {below}" if below is not None else (f"<= {at_most}" if at_most is not None else "")
    bounds = " and ".join(b for b in (low, high) if b)
    return Option(default, "a number" + (f" {bounds}" if bounds else ""), check, help)


def choice(default: Any, values: tuple, help: str = "") -> Option:
    def check(value):
        if value not in values:
            raise ValueError(value)
        return value
    return Option(default, f"one of {list(values)}", check, help)


def flag(default: bool, help: str = "") -> Option:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def check(value):
        value = _from_text(value, lambda s: words[s.lower()])
        if not isinstance(value, bool):
            raise ValueError(value)
        return value
    return Option(default, "true or false", check, help)


def votes(default: Any, help: str = "the backbone's fusion rule") -> Option:
    """A fusion rule: a whole number >= 1, ``all``, ``any`` or ``majority``."""
    def check(value):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value in ("all", "any", "majority"):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(value)
        return value
    return Option(default, "an integer >= 1, all, any or majority", check, help)


def literal(text: str) -> Any:
    """A command-line value as Python: JSON (numbers, true/false, null, lists) or the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def anything(default: Any, help: str = "") -> Option:
    """An option checked by the method itself (a text value is read by :func:`literal`)."""
    return Option(default, "a value the method accepts", lambda v: _from_text(v, literal), help)


def function(help: str = "") -> Option:
    """A Python callable (default None); not settable from the command line."""
    def check(value):
        if value is not None and not callable(value):
            raise ValueError(value)
        return value
    return Option(None, "a function (from Python only)", check, help)


def like(default: Any, help: str = "") -> Option:
    """An option typed by its default (bool, int, float, str; else :func:`anything`)."""
    if isinstance(default, bool):
        return flag(default, help)
    if isinstance(default, int):
        return integer(default, help=help)
    if isinstance(default, float):
        return number(default, help=help)
    if isinstance(default, str):
        return Option(default, "a string", _text, help)
    return anything(default, help)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    return value


# ------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class MethodSpec:
    """Everything the workspace knows about one method (see the module docstring).

    ``data``: whether it scores on batches: a bool, or ``(dataset, options) -> bool``.
    ``budget``: the results table's budget column, a template of ``{base}`` (the base model's
    training, or ``given``), ``{scratch}`` (the study's base-training length) and
    ``{finetune}`` (its fine-tuning length); default by kind (:data:`BUDGETS`).
    ``schedule``: ``(base_iters, finetune_iters, dataset) -> options``, the study's defaults
    of a trained method for its budget (overridden by the study's ``method_options``).
    ``fresh``: the plan prunes a freshly initialised network (the reference's untrained
    baselines), which the fine-tuning budget does not train.
    """
    name: str
    kind: str
    summary: str
    plan: Callable[..., Any] | None = None
    train: Callable[..., Any] | None = None
    cell: Callable[..., Any] | None = None
    options: Mapping[str, Option] = field(default_factory=dict)
    data: bool | Callable[[str | None, dict], bool] = True
    budget: str | None = None
    schedule: Callable[[int, int, str | None], dict] | None = None
    fresh: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r}; expected one of "
                             f"{list(KINDS)}")
        if self.kind in ONE_SHOT and self.plan is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) needs a plan hook")
        if self.kind in TRAINED and self.train is None and self.cell is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) needs a train or cell hook")
        if not self.summary or "\n" in self.summary:
            raise ValueError(f"method {self.name!r}: summary must be one line")

    def uses_data(self, dataset: str | None = None, **options: Any) -> bool:
        """Whether the method scores on batches (so needs a loader and a criterion) on
        ``dataset`` with ``options``."""
        return self.data(dataset, options) if callable(self.data) else bool(self.data)

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The given options, checked and converted (text values as the command line gives
        them); a one-line ValueError naming the method, the option and what was expected."""
        checked = {}
        for key, value in dict(options or {}).items():
            if key not in self.options:
                known = ", ".join(self.options) or "none"
                raise ValueError(f"method {self.name!r} has no option {key!r}; its options: "
                                 f"{known}")
            option = self.options[key]
            try:
                checked[key] = option.check(value)
            except (ValueError, TypeError, KeyError):
                raise ValueError(f"method {self.name!r} option {key}={value!r}: expected "
                                 f"{option.expected}") from None
        return checked

    def budget_for(self, base: int | str, scratch_iters: int, finetune_iters: int) -> str:
        """The results table's budget of one of this method's rows."""
        template = self.budget or BUDGETS[self.kind]
        return template.format(base=base, scratch=scratch_iters, finetune=finetune_iters)

    def run_cell(self, inputs: "CellInputs") -> "CellOutcome":
        """The study's cell of this method: its own ``cell`` hook, else its kind's (set by the
        layer that runs it: :func:`set_kind_cell`)."""
        hook = self.cell or _KIND_CELLS.get(self.kind)
        if hook is None:
            raise ValueError(f"method {self.name!r} ({self.kind}): no study cell for this kind "
                             f"(import lib.experiments)")
        return hook(self, inputs)


@dataclass
class CellInputs:
    """What the study hands a cell hook: one (selection, method, sparsity) cell. ``spec``:
    the study's spec (seed, weighting, sparsity mode, scoring batches, ...); ``base``: the
    dense base network; ``base_iters`` / ``finetune_iters``: the study's budget, resolved."""
    spec: Any
    cfg: Any
    method: str
    selection: tuple
    sparsity: float
    base: Any
    criterion: Any
    loaders: Any
    run_dir: Path
    device: Any
    base_iters: int
    finetune_iters: int
    options: dict = field(default_factory=dict)


@dataclass
class CellOutcome:
    """What a cell hook returns: the trained network, the per-task masks (or None), the kept
    fraction, the measured sparsity (%) of the results row and the network's
    :func:`lib.masks.sparsity_report` against the base."""
    net: Any
    task_masks: dict | None
    keep_ratio: float
    measured: float
    report: dict


_KIND_CELLS: dict[str, Callable[[MethodSpec, CellInputs], CellOutcome]] = {}


def set_kind_cell(kinds: str | tuple,
                  hook: Callable[[MethodSpec, CellInputs], CellOutcome]) -> None:
    """The study's cell for every method of ``kinds`` without a ``cell`` hook of its own."""
    for kind in (kinds,) if isinstance(kinds, str) else kinds:
        _KIND_CELLS[kind] = hook


# ------------------------------------------------------------------------------- registry
REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec_or_name: MethodSpec | str, method: Callable | None = None, **fields):
    """Register a method, three ways:

    ``register_method(MethodSpec(...))``; ``register_method("name", fn, kind=..., ...)``
    (``fn`` the plan, or the train hook of a trained kind; ``kind`` default ``"mask"``); or
    as a decorator, ``@register_method("name", kind=..., summary=...)`` over the hook.
    A name is registered once. Returns the spec (the decorator: the function).
    """
    if isinstance(spec_or_name, MethodSpec):
        return _add(spec_or_name)
    if method is None:
        def decorate(fn):
            register_method(spec_or_name, fn, **fields)
            return fn
        return decorate
    kind = fields.pop("kind", "mask")
    hook = "train" if kind in TRAINED else "plan"
    summary = fields.pop("summary", None) or _first_line(method)
    return _add(MethodSpec(spec_or_name, kind, summary, **{hook: method}, **fields))


def _first_line(fn: Callable) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else fn.__name__


def _add(spec: MethodSpec) -> MethodSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    """The spec of ``name``; a one-line ValueError listing the registered methods otherwise."""
    if name not in REGISTRY:
        load_plugins()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name]


def method_names(*kinds: str) -> list[str]:
    """Registered methods of ``kinds`` (all without), in registration order."""
    load_plugins()
    return [n for n, s in REGISTRY.items() if not kinds or s.kind in kinds]


class PlanView(MutableMapping):
    """``{name: plan}`` of the one-shot methods (:data:`lib.pruning.METHODS`), read from the
    registry. Setting a name registers a mask method (or replaces a registered method's plan,
    as tests do to count calls); deleting unregisters it."""

    def __getitem__(self, name: str) -> Callable:
        if name not in REGISTRY:
            load_plugins()
        spec = REGISTRY.get(name)
        if spec is None or spec.kind not in ONE_SHOT:
            raise KeyError(name)
        return spec.plan

    def __setitem__(self, name: str, plan: Callable) -> None:
        spec = REGISTRY.get(name)
        if spec is None:
            register_method(name, plan)
        else:
            REGISTRY[name] = replace(spec, plan=plan)

    def __delitem__(self, name: str) -> None:
        self[name]   # KeyError unless a one-shot method
        del REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(method_names(*ONE_SHOT))

    def __len__(self) -> int:
        return len(method_names(*ONE_SHOT))

    def __repr__(self) -> str:
        return f"METHODS({list(self)})"


class NameView(Sequence):
    """A tuple of registered names computed when read (``STRUCTURED_METHODS`` and the like are
    views over the registry, never lists kept by hand)."""

    def __init__(self, where: Callable[[MethodSpec], bool], label: str):
        self._where, self._label = where, label

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n in method_names() if self._where(REGISTRY[n]))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, Sequence)) \
            else NotImplemented

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return f"{self._label}{self._names()}"
