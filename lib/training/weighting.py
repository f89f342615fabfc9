"""Task weighting: how one iteration's per-task losses become the loss that is minimised.

    weighting = make_weighting("dwa", tasks=criterion.tasks, lambdas=criterion.lambdas)
    weighting.bind(epoch_iters=len(loader), device=device)  # the training loop does this
    total = weighting.total(losses)           # tensor to backpropagate
    weighting.observe(values, iteration)      # after the step: per-epoch bookkeeping

:data:`WEIGHTINGS` (``--weighting`` on the command line):

- ``fixed``: ``sum_t LAMBDAS[t] * L_t``, the config's weights (the reference; the default);
- ``equal``: ``sum_t L_t``;
- ``uncertainty`` (Kendall et al. 2018): ``sum_t L_t / (2 exp(s_t)) + s_t / 2`` with learnable
  ``s_t`` (they join the optimiser); ``init`` -0.7 as the min-max code's ``trainer_nyuv2.py``
  (its ``prune_apgda`` uses -0.5);
- ``dwa`` (Liu et al. 2019): ``lambda_t(e) = K softmax_t(w_t / T)``, ``w_t = Lbar_t(e-1) /
  Lbar_t(e-2)`` from epoch-average training losses; ``lambda = 1`` in the first two epochs;
- ``minmax`` (the min-max framework's APGDA): simplex weights ``w`` initialised at ``1/K``,
  loss ``sum_t w_t L_t``; at the first iteration of every epoch, after that iteration's loss
  is formed, ``w <- P(w + (L - gamma (w - 1/K)) / beta)`` with that iteration's detached
  per-task losses ``L`` and ``P`` the Euclidean projection onto the simplex
  (:func:`project_simplex`). ``beta`` 10 and ``gamma`` 5 as ``trainer_nyuv2.py``
  (``prune_apgda`` and the CIFAR trainer use ``beta`` 50).

**An epoch is ``epoch_iters`` iterations**, whatever the loader: by default the number of
batches of one pass over the training loader per process (what the training loop binds), or
the value given. Iteration ``i`` (0-based) belongs to epoch ``i // epoch_iters``. The
resolved value is part of :meth:`TaskWeighting.spec`, so resuming with another is refused.

``scale_by_lambdas=True`` multiplies each ``L_t`` by ``LAMBDAS[t]`` before an adaptive
weighting sees it (``prune_apgda`` weights its depth and normal losses by fixed factors first).
Validation keeps the fixed ``LAMBDAS``-weighted loss as its yardstick, so the selection metric
means the same thing all run long whatever the training weighting.
"""
from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn as nn


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of the vector ``v`` onto ``{w : w >= 0, sum w = 1}``.

    Duchi et al. 2008 (the algorithm of the min-max code's ``project_simplex``): sort
    descending, find the largest ``rho`` with ``u_rho - (sum_{j<=rho} u_j - 1) / rho > 0``,
    subtract ``theta = (sum_{j<=rho} u_j - 1) / rho`` and clip at zero.
    """
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"project_simplex needs a non-empty vector, got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise FloatingPointError(f"cannot project a non-finite vector onto the simplex: "
                                 f"{v.tolist()}")
    u = torch.sort(v, descending=True).values
    cumsum = torch.cumsum(u, dim=0)
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    support = (u - (cumsum - 1) / index > 0).nonzero()
    if support.numel() == 0:   # only when |v| is so large that u - (u - 1) rounds to 0
        raise FloatingPointError(f"cannot project {v.tolist()} onto the simplex: its values "
                                 f"are too large for float64 to resolve the projection")
    rho = int(support.max())
    theta = (cumsum[rho] - 1) / (rho + 1)
    return torch.clamp(v - theta, min=0)


class TaskWeighting(abc.ABC):
    """Combines per-task losses into one; subclasses say how (see the module docstring).

    ``OPTIONS`` holds each option's default; every option is validated when the weighting is
    built and recorded by :meth:`spec`. State that changes during training (learned or
    epoch-updated weights, epoch sums) round-trips through :meth:`state_dict` exactly.
    """

    name: ClassVar[str]
    OPTIONS: ClassVar[dict[str, Any]] = {}
    adaptive: ClassVar[bool] = True   # weights change during training (then logged)

    def __init__(self, tasks: Sequence[str], lambdas: Sequence[float] | None = None, *,
                 epoch_iters: int | None = None, scale_by_lambdas: bool = False, **options):
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError(f"weighting {self.name!r} needs at least one task")
        self.lambdas = [1.0] * len(self.tasks) if lambdas is None else [float(x) for x in lambdas]
        if len(self.lambdas) != len(self.tasks):
            raise ValueError(f"weighting {self.name!r}: {len(self.lambdas)} lambdas for tasks "
                             f"{self.tasks}")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(f"weighting {self.name!r} has no option(s) {unknown}; its options: "
                             f"{sorted(self.OPTIONS) + ['epoch_iters', 'scale_by_lambdas']}")
        self.options = {**self.OPTIONS, **options}
        self.scale_by_lambdas = bool(scale_by_lambdas)
        self.epoch_iters = None if epoch_iters is None else _positive_int(epoch_iters,
                                                                          "epoch_iters")
        self._validate()

    # ------------------------------------------------------------------ what subclasses say
    def _validate(self) -> None:
        """Raise a one-line ValueError for an option outside its range."""

    @abc.abstractmethod
    def _combine(self, losses: list[torch.Tensor]) -> torch.Tensor:
        """The total from the (scaled) losses, in ``self.tasks`` order."""

    @abc.abstractmethod
    def weights(self) -> dict[str, float]:
        """The weight each task's loss gets now (for logging)."""

    def _observe(self, values: list[float], iteration: int) -> None:
        """Bookkeeping after the step of ``iteration`` with its (scaled) loss values."""

    def needs_values(self, iteration: int) -> bool:
        """Whether the step of 0-based ``iteration`` must be observed before the next step's
        total is formed (the training loop reads its loss values back at once then; other
        steps are observed in batches, in order, at its read-backs)."""
        return False

    # ------------------------------------------------------------------ what the loop calls
    def bind(self, epoch_iters: int, device: torch.device | str | None = None) -> None:
        """Called once by the training loop before the optimiser is built: the loader's epoch
        length (unless ``epoch_iters`` was given) and the device of the learnable weights."""
        if self.epoch_iters is None:
            self.epoch_iters = _positive_int(epoch_iters, "epoch_iters")
        if device is not None:
            for p in self.parameters():
                p.data = p.data.to(device)

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss to minimise from ``{task: loss}`` (every task of the weighting present)."""
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"weighting {self.name!r}: no loss for task(s) {missing}")
        return self._combine([self._scaled(losses[t], i) for i, t in enumerate(self.tasks)])

    @torch.no_grad()
    def value(self, values: Mapping[str, float]) -> float:
        """:meth:`total` of plain numbers (the logged ``loss/total``)."""
        device = self.parameters()[0].device if self.parameters() else None
        return float(self.total({t: torch.tensor(float(values[t]), dtype=torch.float64,
                                                 device=device) for t in self.tasks}))

    def observe(self, values: Mapping[str, float], iteration: int) -> None:
        """After the step of 0-based ``iteration``, with that step's per-task loss values."""
        if self.adaptive and self.epoch_iters is None:
            raise RuntimeError(f"weighting {self.name!r} is not bound to an epoch length; "
                               f"call bind(epoch_iters) first")
        self._observe([self._scaled(float(values[t]), i) for i, t in enumerate(self.tasks)],
                      int(iteration))

    def parameters(self) -> list[nn.Parameter]:
        """Learnable weights; the training loop adds them to the optimiser."""
        return []

    def spec(self) -> dict[str, Any]:
        """Name and every setting, JSON-able: recorded in checkpoints, compared on resume."""
        return {"name": self.name, **self.options,
                "epoch_iters": self.epoch_iters if self.adaptive else None,
                "scale_by_lambdas": self.scale_by_lambdas, "tasks": list(self.tasks),
                "lambdas": list(self.lambdas)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------ helpers
    def _scaled(self, loss, i: int):
        return loss * self.lambdas[i] if self.scale_by_lambdas else loss

    def epoch_of(self, iteration: int) -> int:
        return int(iteration) // int(self.epoch_iters)


class FixedWeighting(TaskWeighting):
    """``sum_t LAMBDAS[t] * L_t`` (the reference, and ``criterion.weighted``)."""

    name = "fixed"
    adaptive = False

    def _combine(self, losses):
        return sum(lam * loss for lam, loss in zip(self.lambdas, losses))

    def _scaled(self, loss, i):   # the lambdas are the weights themselves: never applied twice
        return loss

    def weights(self):
        return dict(zip(self.tasks, self.lambdas))


class EqualWeighting(TaskWeighting):
    """``sum_t L_t``."""

    name = "equal"
    adaptive = False

    def _combine(self, losses):
        return sum(losses)

    def weights(self):
        return {t: (self.lambdas[i] if self.scale_by_lambdas else 1.0)
                for i, t in enumerate(self.tasks)}


class UncertaintyWeighting(TaskWeighting):
    """Kendall et al.: ``sum_t L_t / (2 exp(s_t)) + s_t / 2`` with learnable ``s_t``."""

    name = "uncertainty"
    OPTIONS = {"init": -0.7}

    def _validate(self):
        self.options["init"] = _finite(self.options["init"], "init")
        self.log_var = nn.Parameter(torch.full((len(self.tasks),), self.options["init"]))

    def _combine(self, losses):
        s = self.log_var
        return sum(loss / (2 * torch.exp(s[i])) + s[i] / 2 for i, loss in enumerate(losses))

    def weights(self):
        return {t: float(1 / (2 * math.exp(float(s)))) for t, s in zip(self.tasks,
                                                                          self.log_var.detach())}

    def parameters(self):
        return [self.log_var]

    def state_dict(self):
        return {"log_var": self.log_var.detach().cpu().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.log_var.copy_(state["log_var"].to(self.log_var.device))


class DWAWeighting(TaskWeighting):
    """Dynamic Weight Average: ``K softmax(w / T)``, ``w_t = Lbar_t(e-1) / Lbar_t(e-2)``."""

    name = "dwa"
    OPTIONS = {"temperature": 2.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_means: list[list[float]] = []   # one entry per finished epoch
        self._sums = [0.0] * len(self.tasks)
        self._count = 0

    def _validate(self):
        self.options["temperature"] = _positive(self.options["temperature"], "temperature")

    def lambdas_now(self) -> list[float]:
        """This epoch's weights (1 each until two epochs are finished)."""
        if len(self.epoch_means) < 2:
            return [1.0] * len(self.tasks)
        last, before = self.epoch_means[-1], self.epoch_means[-2]
        ratios = [a / b if b != 0 else math.inf for a, b in zip(last, before)]
        if not all(math.isfinite(r) for r in ratios):
            raise FloatingPointError(f"dwa: epoch-average losses {before} -> {last} give "
                                     f"non-finite ratios {ratios}")
        w = torch.softmax(torch.tensor(ratios, dtype=torch.float64)
                          / self.options["temperature"], dim=0)
        return (len(self.tasks) * w).tolist()

    def _combine(self, losses):
        return sum(lam * loss for lam, loss in zip(self.lambdas_now(), losses))

    def needs_values(self, iteration):   # the epoch's means set the next epoch's weights
        return (int(iteration) + 1) % self.epoch_iters == 0

    def _observe(self, values, iteration):
        self._sums = [s + v for s, v in zip(self._sums, values)]
        self._count += 1
        if (iteration + 1) % self.epoch_iters == 0:   # the last iteration of an epoch
            self.epoch_means.append([s / self._count for s in self._sums])
            self._sums, self._count = [0.0] * len(self.tasks), 0

    def weights(self):
        return dict(zip(self.tasks, self.lambdas_now()))

    def state_dict(self):
        return {"epoch_means": [list(m) for m in self.epoch_means], "sums": list(self._sums),
                "count": self._count}

    def load_state_dict(self, state):
        self.epoch_means = [list(map(float, m)) for m in state["epoch_means"]]
        self._sums, self._count = [float(s) for s in state["sums"]], int(state["count"])


# The smallest minmax step size 1/beta keeps w + L/beta within float64's resolution of the
# simplex's scale (a step of 1e6 x the losses still resolves the projection's threshold).
MIN_BETA = 1e-6


class MinMaxWeighting(TaskWeighting):
    """The min-max framework's APGDA: ascent on simplex weights once per epoch."""

    name = "minmax"
    OPTIONS = {"beta": 10.0, "gamma": 5.0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = len(self.tasks)
        self.w = torch.full((k,), 1.0 / k, dtype=torch.float64)

    def _validate(self):
        self.options["beta"] = _positive(self.options["beta"], "beta")
        if self.options["beta"] < MIN_BETA:
            raise ValueError(f"weighting 'minmax': beta={self.options['beta']} is below "
                             f"{MIN_BETA}: one ascent step would move the weights by more than "
                             f"{1 / MIN_BETA:.0e} times the losses, beyond what the simplex "
                             f"projection resolves (the min-max code uses 10 or 50)")
        self.options["gamma"] = _finite(self.options["gamma"], "gamma")
        if self.options["gamma"] < 0:
            raise ValueError(f"weighting 'minmax': gamma must be >= 0, got {self.options['gamma']}")

    def _combine(self, losses):
        return sum(float(w) * loss for w, loss in zip(self.w, losses))

    def ascent(self, values: Sequence[float]) -> torch.Tensor:
        """``P(w + (L - gamma (w - 1/K)) / beta)``: the weights after one update with ``L``."""
        k = len(self.tasks)
        loss = torch.tensor(list(values), dtype=torch.float64)
        step = loss - self.options["gamma"] * (self.w - 1.0 / k)
        return project_simplex(self.w + step / self.options["beta"])

    def needs_values(self, iteration):   # its ascent sets the next step's weights
        return int(iteration) % self.epoch_iters == 0

    def _observe(self, values, iteration):
        if iteration % self.epoch_iters == 0:   # the first iteration of an epoch
            self.w = self.ascent(values)

    def weights(self):
        return dict(zip(self.tasks, self.w.tolist()))

    def state_dict(self):
        return {"w": self.w.clone()}

    def load_state_dict(self, state):
        self.w = state["w"].to(torch.float64).clone()


WEIGHTINGS: dict[str, type[TaskWeighting]] = {
    cls.name: cls for cls in (FixedWeighting, EqualWeighting, UncertaintyWeighting,
                              DWAWeighting, MinMaxWeighting)}
DEFAULT_WEIGHTING = "fixed"


def make_weighting(spec: str | Mapping[str, Any] | TaskWeighting | None, tasks: Sequence[str],
                   lambdas: Sequence[float] | None = None) -> TaskWeighting:
    """A weighting for ``tasks`` from a name, ``{"name": ..., **options}``, or an instance.

    ``None`` is ``fixed`` with ``lambdas``. An instance must be for the same tasks. Unknown
    names and options are one-line ValueErrors listing what is accepted.
    """
    if isinstance(spec, TaskWeighting):
        if list(spec.tasks) != list(tasks):
            raise ValueError(f"weighting {spec.name!r} is for tasks {spec.tasks}, the run's tasks "
                             f"are {list(tasks)}")
        return spec
    spec = {"name": DEFAULT_WEIGHTING} if spec is None else (
        {"name": spec} if isinstance(spec, str) else dict(spec))
    options = {k: v for k, v in spec.items() if k not in ("name", "tasks", "lambdas")}
    name = spec.get("name")
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](tasks, lambdas, **options)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer (iterations), got {value!r}")
    return int(value)


def _finite(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"weighting option {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"weighting option {name} must be finite, got {value}")
    return value


def _positive(value, name: str) -> float:
    value = _finite(value, name)
    if value <= 0:
        raise ValueError(f"weighting option {name} must be > 0, got {value}")
    return value
