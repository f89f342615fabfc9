"""The multi-task model contract every layer of ``lib`` works against.

A model subclasses :class:`MultiTaskModel` and provides three things:

- ``self.tasks``: task names, in the order ``forward`` returns its outputs;
- ``shared_modules() -> {qualified name: module}``: what every task uses (the trunk);
- ``task_modules(task) -> {qualified name: module}``: what only ``task`` uses (its head, and
  per-task modules inside the trunk such as attention blocks or task-specific BatchNorm);

and ``forward(x) -> list[Tensor]`` aligned with ``self.tasks``, written in terms of
``self.tasks`` (``[self.heads[t](f) for t in self.tasks]``) so that a compact copy with fewer
tasks runs unchanged. Qualified names are ``named_modules()`` names from the model's root.

Everything else is derived: :meth:`MultiTaskModel.select` returns the compact copy holding only
the chosen tasks (the other tasks' modules leave the module tree and the state dict; kept
modules keep their names), :func:`prunable_layers` and friends enumerate the Conv2d/Linear
layers each task model is made of, and a model that registers itself (:func:`register_model`)
and describes itself (``architecture()``) is rebuilt from a checkpoint or an artifact by
:func:`build_model`, without pickle.

    @register_model
    class TwoHeads(MultiTaskModel):
        def __init__(self, tasks=("cls", "dense")):
            super().__init__()
            self.tasks = list(tasks)
            self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.heads = nn.ModuleDict({t: nn.Conv2d(8, 1, 1) for t in self.tasks})
        def shared_modules(self):
            return {"trunk": self.trunk}
        def task_modules(self, task):
            return {f"heads.{task}": self.heads[task]}
        def forward(self, x):
            f = self.trunk(x)
            return [self.heads[t](f) for t in self.tasks]
        def architecture(self):
            return {"model": "TwoHeads", "tasks": list(self.tasks)}
"""
from __future__ import annotations

import abc
import copy
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import torch
import torch.nn as nn

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)

M = TypeVar("M", bound="MultiTaskModel")


class MultiTaskModel(nn.Module, abc.ABC):
    """Base class of every multi-task network (see the module docstring for the contract)."""

    tasks: list[str]

    @abc.abstractmethod
    def shared_modules(self) -> dict[str, nn.Module]:
        """``{qualified name: module}`` of what every task uses."""

    @abc.abstractmethod
    def task_modules(self, task: str) -> dict[str, nn.Module]:
        """``{qualified name: module}`` of what only ``task`` uses (its head, per-task blocks)."""

    def architecture(self) -> dict[str, Any]:
        """Keyword record that rebuilds an identical (unweighted) network with :func:`build_model`.

        Must hold ``"model"``: the name the class is registered under. Models that are never
        saved to or read from files need not implement it.
        """
        raise TypeError(f"{type(self).__name__} does not describe its architecture: implement "
                        f"architecture() and @register_model the class to save and rebuild it")

    @classmethod
    def from_architecture(cls: type[M], record: Mapping[str, Any]) -> M:
        """Build an unweighted network from its :meth:`architecture` record (default:
        ``cls(**record)`` without the ``"model"`` key)."""
        return cls(**{k: v for k, v in record.items() if k != "model"})

    def select(self: M, tasks: Sequence[str]) -> M:
        """A compact copy holding only ``tasks``, outputs in the order given.

        The other tasks' modules are absent from the copy's module tree and state dict; every
        kept module keeps its qualified name (a removed entry of an ``nn.ModuleList`` becomes
        ``None`` so later indices do not shift). Weights, buffers, prune masks, device and
        train/eval mode are copied; the removed modules are never copied. ``self`` is unchanged.
        """
        selected = check_selection(self, tasks)
        removed = {name: module for t in self.tasks if t not in selected
                   for name, module in self.task_modules(t).items()}
        compact = copy_network(self, skip=removed.values())
        for name in removed:
            if not any(name.startswith(f"{other}.") for other in removed):  # outermost only
                _detach_module(compact, name)
        compact._on_select(list(selected))
        compact.tasks = list(selected)
        return compact

    def _on_select(self, tasks: list[str]) -> None:
        """Hook for bookkeeping aligned with ``self.tasks`` (still the old list when called)."""


def check_model(net: Any) -> MultiTaskModel:
    """Return ``net`` if it follows the contract, else raise a one-line TypeError / ValueError.

    Checks: a :class:`MultiTaskModel`; distinct task names; every named module resolves to that
    very module in the tree; no module is both shared and task-specific, or owned by two tasks.
    """
    if not isinstance(net, MultiTaskModel):
        raise TypeError(f"expected a lib.models.MultiTaskModel (such as SceneNet), got "
                        f"{type(net).__name__}")
    tasks = list(getattr(net, "tasks", None) or [])
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"{type(net).__name__}.tasks must be distinct task names, got {tasks}")
    tree = dict(net.named_modules())
    owner: dict[int, str] = {}
    parts = [("shared", net.shared_modules())] + [(f"task {t!r}", net.task_modules(t))
                                                  for t in tasks]
    for part, modules in parts:
        for name, module in modules.items():
            if tree.get(name) is not module:
                raise ValueError(f"{type(net).__name__}: {part} module {name!r} is not the module "
                                 f"of that name in the network")
            for sub in module.modules():
                if id(sub) in owner and owner[id(sub)] != part:
                    raise ValueError(f"{type(net).__name__}: module {name!r} belongs to both "
                                     f"{owner[id(sub)]} and {part}")
                owner[id(sub)] = part
    return net


def check_selection(net: MultiTaskModel, selected: Sequence[str]) -> list[str]:
    """``selected`` as a list, after a one-line error for empty, unknown or repeated tasks."""
    selected = list(selected)
    if not selected:
        raise ValueError(f"no task selected; available tasks: {list(net.tasks)}")
    unknown = [t for t in selected if t not in net.tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available tasks: {list(net.tasks)}")
    dupes = sorted({t for t in selected if selected.count(t) > 1})
    if dupes:
        raise ValueError(f"task(s) {dupes} selected more than once; available tasks: "
                         f"{list(net.tasks)}")
    return selected


# ------------------------------------------------------------------------ prunable layers
def _layers_in(modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    out = {}
    for prefix, module in modules.items():
        for name, sub in module.named_modules():
            if isinstance(sub, PRUNABLE_TYPES):
                out[f"{prefix}.{name}" if name and prefix else (name or prefix)] = sub
    return out


def shared_layers(net: MultiTaskModel) -> dict[str, nn.Module]:
    """``{qualified name: Conv2d/Linear}`` inside the shared modules."""
    return _layers_in(net.shared_modules())


def task_layers(net: MultiTaskModel, task: str) -> dict[str, nn.Module]:
    """``{qualified name: Conv2d/Linear}`` inside ``task``'s own modules."""
    return _layers_in(net.task_modules(task))


def task_model_layers(net: MultiTaskModel, task: str) -> dict[str, nn.Module]:
    """The prunable layers of task model ``task``: the shared layers plus its own."""
    return {**shared_layers(net), **task_layers(net, task)}


def prunable_layers(net: MultiTaskModel) -> dict[str, nn.Module]:
    """Every prunable layer: shared first, then each task's own in ``net.tasks`` order."""
    out = shared_layers(net)
    for task in net.tasks:
        out.update(task_layers(net, task))
    return out


def layer_owner(net: MultiTaskModel) -> dict[str, str | None]:
    """``{prunable layer: owning task, or None for shared}``."""
    out: dict[str, str | None] = {name: None for name in shared_layers(net)}
    for task in net.tasks:
        out.update({name: task for name in task_layers(net, task)})
    return out


# ------------------------------------------------------------------------ registry
MODEL_REGISTRY: dict[str, type[MultiTaskModel]] = {}
# Architecture records written before models were registered by name are SceneNet's.
LEGACY_MODEL = "SceneNet"


def register_model(cls: type[M] | None = None, *, name: str | None = None
                   ) -> type[M] | Callable[[type[M]], type[M]]:
    """Class decorator: make ``cls`` rebuildable by :func:`build_model` under ``name``
    (default: the class name). One line per model."""
    def add(klass: type[M]) -> type[M]:
        key = name or klass.__name__
        if not (isinstance(klass, type) and issubclass(klass, MultiTaskModel)):
            raise TypeError(f"register_model needs a MultiTaskModel subclass, got {klass!r}")
        if MODEL_REGISTRY.get(key, klass) is not klass:
            raise ValueError(f"model name {key!r} is already registered to "
                             f"{MODEL_REGISTRY[key].__qualname__}")
        MODEL_REGISTRY[key] = klass
        return klass
    return add if cls is None else add(cls)


def architecture_of(net: nn.Module) -> dict[str, Any] | None:
    """``net.architecture()`` when the network describes itself, else None (a model that does
    not implement :meth:`MultiTaskModel.architecture`, or a module outside the contract)."""
    own = getattr(type(net), "architecture", None)
    if own is None or own is MultiTaskModel.architecture:
        return None
    return net.architecture()


def model_from_config(cfg) -> MultiTaskModel:
    """The full network a config describes: registered model ``cfg.MODEL`` (default
    ``"SceneNet"``, the reference configs' network) built by its ``from_config(cfg)``."""
    name = str(getattr(cfg, "MODEL", LEGACY_MODEL))
    if name not in MODEL_REGISTRY:
        raise ValueError(f"config MODEL {name!r} is not a registered model; registered models: "
                         f"{sorted(MODEL_REGISTRY)}")
    cls = MODEL_REGISTRY[name]
    if not hasattr(cls, "from_config"):
        raise TypeError(f"model {name!r} has no from_config(cfg): build it yourself and pass "
                        f"the network instead of a config")
    return cls.from_config(cfg)


def model_name(record: Mapping[str, Any]) -> str:
    """The registered model name an architecture record refers to."""
    return str(record.get("model", LEGACY_MODEL))


def build_model(record: Mapping[str, Any], source: str = "architecture") -> MultiTaskModel:
    """Rebuild the unweighted network an :meth:`MultiTaskModel.architecture` record describes.

    Errors are one line and name ``source`` (the file the record came from).
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{source}: architecture must be a JSON object, got "
                         f"{type(record).__name__}")
    name = model_name(record)
    if name not in MODEL_REGISTRY:
        raise ValueError(f"{source}: unknown model {name!r}; registered models: "
                         f"{sorted(MODEL_REGISTRY)}")
    try:
        return MODEL_REGISTRY[name].from_architecture(record)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"{source}: cannot build {name} from architecture {dict(record)}: "
                         f"{detail}") from None


# ------------------------------------------------------------------------ selection helpers
def copy_network(net: nn.Module, skip: Iterable[nn.Module] = ()) -> nn.Module:
    """``copy.deepcopy(net)`` in which every module of ``skip`` becomes ``None``.

    Also copes with prune hooks after a forward with autograd on: their cached ``orig * mask``
    attribute is then a non-leaf tensor, which deepcopy refuses; a detached copy stands in for
    it (the next forward recomputes it anyway).
    """
    memo: dict[int, Any] = {id(m): None for m in skip}
    for module in net.modules():
        for value in module.__dict__.values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(net, memo)


def _detach_module(root: nn.Module, name: str) -> None:
    """Remove the (already ``None``) slot ``name`` from its parent, keeping sibling names."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if attr not in parent._modules:
        return
    if isinstance(parent, nn.ModuleList):
        parent._modules[attr] = None
    else:
        del parent._modules[attr]
