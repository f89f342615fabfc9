"""The multi-task model contract every layer of ``lib`` works against.

A model subclasses :class:`MultiTaskModel` and provides three things:

- ``self.tasks``: task names, in the order ``forward`` returns its outputs;
- ``shared_modules() -> {qualified name: module}``: what every task uses (the trunk);
- ``task_modules(task) -> {qualified name: module}``: what only ``task`` uses (its head, and
  per-task modules inside the trunk such as attention blocks or task-specific BatchNorm);

and ``forward(x) -> list[Tensor]`` aligned with ``self.tasks``, written in terms of
``self.tasks`` (``[self.heads[t](f) for t in self.tasks]``) so that a compact copy with fewer
tasks runs unchanged. Qualified names are ``named_modules()`` names from the model's root.

When each task has inputs of its own (a multi-domain benchmark's steps, one batch per task:
``lib.tasks.TaskBatches``), :func:`task_outputs` runs every task on its own input through
:meth:`MultiTaskModel.forward_task`; its default picks the task's output of a full forward,
and a model whose tasks run separately (task-conditional BatchNorm) overrides it.

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

from lib.plugins import load_plugins
from lib.utils import plain_json

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

    def forward_task(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """``task``'s output for input ``x`` (the other tasks' outputs are not wanted).

        Default: the full forward's output of ``task``. Override it when a task's path can
        run alone, or must (a model with per-task BatchNorm fed per-task batches)."""
        if task not in self.tasks:
            raise KeyError(f"{type(self).__name__} has no task {task!r}; tasks: {self.tasks}")
        return self(x)[self.tasks.index(task)]

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

    def select(self: M, tasks: Sequence[str], probe: Any = None) -> M:
        """A compact copy holding only ``tasks``, outputs in the order given.

        The other tasks' modules are absent from the copy's module tree and state dict; every
        kept module keeps its qualified name (a removed entry of an ``nn.ModuleList`` becomes
        ``None`` so later indices do not shift). Weights, buffers, prune masks, device and
        train/eval mode are copied; the removed modules are never copied. ``self`` is unchanged.

        With ``probe`` (an input tensor, or ``{task: tensor}`` for per-task inputs), the compact
        model's outputs on it must equal the full model's for the kept tasks (eval mode, no
        grad): a one-line ValueError names the task and the max |diff| otherwise (a module a
        kept task uses was declared as a removed task's, or ``forward`` ignores ``self.tasks``).
        """
        selected = check_selection(self, tasks)
        removed = {name: module for t in self.tasks if t not in selected
                   for name, module in self.task_modules(t).items()}
        compact = copy_network(self, skip=removed.values())
        for name in removed:
            if not any(name.startswith(f"{other}.") for other in removed):  # outermost only
                _detach_module(compact, name)
        compact.on_select(list(selected))
        compact.tasks = list(selected)
        if probe is not None:
            check_same_outputs(self, compact, probe)
        return compact

    def on_select(self, tasks: list[str]) -> None:
        """Called on the compact copy by :meth:`select`, before ``self.tasks`` becomes ``tasks``
        (so ``self.tasks`` is still the full list): override it to keep bookkeeping aligned
        with the task list (per-task ids, channel counts, the order heads run in) when
        ``forward`` loops over something other than ``self.tasks``. Default: the deprecated
        name ``_on_select``, which older subclasses override."""
        self._on_select(tasks)

    def _on_select(self, tasks: list[str]) -> None:
        """Deprecated name of :meth:`on_select`, still called by its default."""

    def __deepcopy__(self, memo: dict) -> "MultiTaskModel":
        """``copy.deepcopy`` that copes with installed prune masks: their cached
        ``weight = weight_orig * weight_mask`` is a non-leaf tensor, which a tensor's deepcopy
        refuses; a detached copy stands in for it (the next forward recomputes it)."""
        _memo_non_leaf(self, memo)
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone


def check_model(net: Any, probe: Any = None) -> MultiTaskModel:
    """Return ``net`` if it follows the contract, else raise a one-line TypeError / ValueError.

    Checks: a :class:`MultiTaskModel`; distinct task names; every named module resolves to that
    very module in the tree; no module is both shared and task-specific, or owned by two tasks;
    every prunable layer (Conv2d/Linear) is inside a shared or a task module (else pruning
    would leave it dense). With ``probe`` (an input tensor, or ``{task: tensor}``), one forward
    on it (eval mode, no grad, modes restored) must give one tensor per task
    (:func:`check_outputs`).
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
    loose = [name for name, module in tree.items()
             if isinstance(module, PRUNABLE_TYPES) and id(module) not in owner]
    if loose:
        raise ValueError(f"{type(net).__name__}: prunable layer(s) {loose[:3]}"
                         f"{' ...' if len(loose) > 3 else ''} are in neither shared_modules() nor "
                         f"any task_modules(): pruning would leave them dense")
    if probe is not None:
        probe_outputs(net, probe)
    return net


def check_outputs(net: MultiTaskModel, outputs: Any) -> list[torch.Tensor]:
    """``outputs`` of ``net(x)`` as a list, after a one-line TypeError / ValueError unless it is
    a list or tuple of tensors, one per task of ``net`` in ``net.tasks`` order."""
    name = type(net).__name__
    if not isinstance(outputs, (list, tuple)):
        raise TypeError(f"{name}.forward returned a {type(outputs).__name__}; the contract "
                        f"wants a list of tensors aligned with its tasks {list(net.tasks)}")
    if len(outputs) != len(net.tasks):
        raise ValueError(f"{name}.forward returned {len(outputs)} outputs for the "
                         f"{len(net.tasks)} tasks {list(net.tasks)}; the contract wants one per "
                         f"task, in that order")
    for task, out in zip(net.tasks, outputs):
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name}.forward's output for task {task!r} is a "
                            f"{type(out).__name__}, not a tensor")
    return list(outputs)


def probe_outputs(net: MultiTaskModel, probe: Any) -> dict[str, torch.Tensor]:
    """``{task: output}`` of one forward of ``net`` on ``probe`` (moved to ``net``'s device),
    in eval mode without grad; every module's train/eval mode is restored afterwards."""
    device = next((p.device for p in net.parameters()), None)
    if device is not None:
        probe = ({t: x.to(device) for t, x in probe.items()} if isinstance(probe, Mapping)
                 else probe.to(device))
    modes = [(module, module.training) for module in net.modules()]
    try:
        net.eval()
        with torch.no_grad():
            return task_outputs(net, probe)
    finally:
        for module, training in modes:
            module.training = training


def check_same_outputs(full: MultiTaskModel, compact: MultiTaskModel, probe: Any,
                       tolerance: float = 1e-5) -> None:
    """One-line ValueError unless ``compact``'s output of each of its tasks on ``probe`` equals
    ``full``'s (max |diff| within ``tolerance`` times the output's largest magnitude, at least
    ``tolerance``)."""
    expected = probe_outputs(full, probe)
    for task, out in probe_outputs(compact, probe).items():
        want = expected[task]
        if out.shape != want.shape:
            raise ValueError(f"{type(full).__name__}.select: task {task!r} outputs shape "
                             f"{tuple(out.shape)} in the compact model, {tuple(want.shape)} in the "
                             f"full one")
        diff = float((out.float() - want.float()).abs().max()) if out.numel() else 0.0
        scale = max(1.0, float(want.float().abs().max())) if want.numel() else 1.0
        if not diff <= tolerance * scale:
            raise ValueError(f"{type(full).__name__}.select({list(compact.tasks)}): task "
                             f"{task!r}'s output differs from the full model's by max |diff| "
                             f"{diff:.3g} on the probe input; a module it uses is declared as "
                             f"a removed task's (task_modules), or forward does not follow "
                             f"self.tasks")


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


def task_outputs(net: MultiTaskModel, inputs: torch.Tensor | Mapping[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``{task: output}`` for every task of ``net``: ``net(inputs)`` for one input tensor all
    tasks share; for ``{task: tensor}`` (``lib.tasks.network_input`` of a ``TaskBatches``)
    each task of ``net`` through :meth:`MultiTaskModel.forward_task` on its own input."""
    if isinstance(inputs, torch.Tensor):
        return dict(zip(net.tasks, check_outputs(net, net(inputs))))
    missing = [t for t in net.tasks if t not in inputs]
    if missing:
        raise KeyError(f"the step has no input for task(s) {missing} of the network; it has "
                       f"inputs for {sorted(inputs)}")
    outputs = {task: net.forward_task(inputs[task], task) for task in net.tasks}
    for task, out in outputs.items():
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{type(net).__name__}.forward_task({task!r}) returned a "
                            f"{type(out).__name__}, not a tensor")
    return outputs


class TaskOutputs(nn.Module):
    """``net`` as a module whose ``forward(inputs)`` is :func:`task_outputs`: what
    DistributedDataParallel and ``torch.func.functional_call`` wrap, so either input form goes
    through a module's forward. Parameter names gain the prefix ``net.``."""

    def __init__(self, net: MultiTaskModel):
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor | Mapping[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        return task_outputs(self.net, inputs)


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
    """``net.architecture()`` in plain JSON values (numpy ints become ints) when the network
    describes itself, else None (a model that does not implement
    :meth:`MultiTaskModel.architecture`, or a module outside the contract)."""
    own = getattr(type(net), "architecture", None)
    if own is None or own is MultiTaskModel.architecture:
        return None
    return plain_json(net.architecture())


def model_from_config(cfg) -> MultiTaskModel:
    """The full network a config describes: registered model ``cfg.MODEL`` (default
    ``"SceneNet"``, the reference configs' network) built by its ``from_config(cfg)``; a name
    not registered yet first loads ``CUT_PLUGINS``."""
    name = str(getattr(cfg, "MODEL", LEGACY_MODEL))
    if name not in MODEL_REGISTRY:
        load_plugins()
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

    Errors are one line and name ``source`` (the file the record came from). A model not
    registered yet first loads ``CUT_PLUGINS``.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{source}: architecture must be a JSON object, got "
                         f"{type(record).__name__}")
    name = model_name(record)
    if name not in MODEL_REGISTRY:
        load_plugins()
    if name not in MODEL_REGISTRY:
        raise ValueError(f"{source}: unknown model {name!r}; registered models: "
                         f"{sorted(MODEL_REGISTRY)}")
    try:
        return MODEL_REGISTRY[name].from_architecture(record)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
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
    _memo_non_leaf(net, memo)
    return copy.deepcopy(net, memo)


def _memo_non_leaf(net: nn.Module, memo: dict) -> None:
    """Put a detached copy of every non-leaf tensor attribute of ``net``'s modules in ``memo``."""
    for module in net.modules():
        for value in module.__dict__.values():
            if isinstance(value, torch.Tensor) and not value.is_leaf and id(value) not in memo:
                memo[id(value)] = value.detach().clone()


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
