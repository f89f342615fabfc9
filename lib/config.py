"""Dataset configs and run profiles.

A config is the top-level ``config_<name>.py`` module's ``Config`` class (the reference's
form), or another class of such a module (``"module:Class"``), or a class itself: whatever a
registered dataset's spec names in its ``configs`` (:data:`CONFIG_MODULES`, read live).
:func:`load_config` returns an *instance* whose attributes can be overridden by a named
profile and by keyword arguments, without touching the class or the file:

    cfg = load_config("nyuv2_3task")                     # the reference values
    cfg = load_config("nyuv2_3task", profile="cpu",      # narrow net, small crops, few iters
                      DATA_ROOT="data/synthetic_nyuv2")

Profiles exist so that every step of the workflow runs on a laptop CPU, on the synthetic data
or on the real datasets: ``cpu`` and ``tiny`` set ``RESIZE_TO_IMAGE_SHAPE``, so frames of any
stored size are resized to their ``IMAGE_SHAPE`` on load; ``reference`` changes nothing. A
profile's ``"*"`` values apply to every config that has the attribute (the min-max configs
have no ``BACKBONE_NAME``); its per-config values must exist.
"""
from __future__ import annotations

import ast
import copy
import difflib
import numbers
import os
from typing import Any, Mapping

from lib.datasets import DATASET_REGISTRY, config_refs, dataset_spec, resolve
from lib.plugins import load_plugins


class _ConfigModules(Mapping):
    """``{config name: config class or "module[:Class]"}`` of every registered dataset
    (:class:`lib.datasets.DatasetSpec`'s ``configs``), read live, so a dataset registered from
    a user's file (``CUT_PLUGINS``, loaded before listing them) brings its configs."""

    def __getitem__(self, name: str):
        return config_refs()[name][1]

    def __iter__(self):
        load_plugins()
        return iter(config_refs())

    def __len__(self) -> int:
        load_plugins()
        return len(config_refs())

    def __repr__(self) -> str:
        return f"CONFIG_MODULES({dict(self)!r})"


CONFIG_MODULES = _ConfigModules()
# Accept the reference's dataset names too: DiSparse's --dataset value, and (canonical_name)
# every registered dataset's name for its first config.
CONFIG_ALIASES = {"nyuv2": "nyuv2_3task"}

# Data-loading workers of the cpu profile: one worker process beside the training process
# (benchmarks/bench_train.py measures it against none on 2 cores). The bench profile keeps 0:
# its benchmark already runs one training process per core. tiny keeps 0 (tests).
CPU_PROFILE_WORKERS = 1

# The cpu profile is sized so the demo (base model + a grid of pruned, fine-tuned models) runs in
# minutes on 2 cores: ResNet-18 at 1/8 width (heads of 128 hidden channels) on 96-pixel-high
# images. ``tiny`` is smaller still, for tests.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "reference": {},
    "cpu": {
        "*": dict(BACKBONE_NAME="ResNet18", WIDTH_MULT=0.125, BATCH_SIZE=8, MAX_ITERS=300,
                  DECAY_LR_FREQ=150, INIT_LR=1e-3, VAL_FREQ=100, CKPT_FREQ=100,
                  PRUNE_NUM_BATCHES=5, RETRAIN_EPOCH=60, RETRAIN_LR=1e-4,
                  RETRAIN_DECAY_LR_FREQ=60, RESIZE_TO_IMAGE_SHAPE=True,
                  NUM_WORKERS=CPU_PROFILE_WORKERS),
        "nyuv2_3task": dict(IMAGE_SHAPE=(96, 128), CROP_H=80, CROP_W=112),
        "cityscapes": dict(IMAGE_SHAPE=(96, 192), CROP_H=80, CROP_W=80),
        "taskonomy": dict(IMAGE_SHAPE=(96, 96), CROP_H=80, CROP_W=80),
        "nyuv2_mtan": dict(IMAGE_SHAPE=(96, 128), CROP_H=96, CROP_W=128),
        "nyuv2_deeplab": dict(IMAGE_SHAPE=(96, 128), CROP_H=96, CROP_W=128, WIDTH_MULT=0.0625,
                              INIT_LR=0.05, RETRAIN_LR=0.01, DECAY_LR_FREQ=300,
                              RETRAIN_DECAY_LR_FREQ=60),
        "cifar100_mtl": dict(WIDTH_MULT=0.125, INIT_LR=0.05, RETRAIN_LR=0.01, DECAY_LR_FREQ=300,
                             RETRAIN_DECAY_LR_FREQ=60),
    },
    # The method benchmark (benchmarks/bench_methods.py): the cpu network and images, trained
    # until it converges (several learning-rate decays) so that fine-tuning alone no longer
    # moves it; pruned models get a fine-tuning budget long enough to recover what they can,
    # ending at a lower rate. BatchNorm statistics are recomputed over 40 training batches after
    # training and after fine-tuning: with batches of 8 the running averages the last steps
    # leave moved the control's Δ by up to 2.5 % on their own (lib.training.batchnorm).
    "bench": {
        "*": dict(BACKBONE_NAME="ResNet18", WIDTH_MULT=0.125, BATCH_SIZE=8, MAX_ITERS=2000,
                  DECAY_LR_FREQ=500, DECAY_LR_RATE=0.4, INIT_LR=2e-3, VAL_FREQ=500,
                  CKPT_FREQ=500, PRUNE_NUM_BATCHES=5, RETRAIN_EPOCH=40, RETRAIN_LR=1e-4,
                  RETRAIN_DECAY_LR_FREQ=20, RETRAIN_DECAY_LR_RATE=0.3,
                  BN_RECALIBRATE_BATCHES=40, RESIZE_TO_IMAGE_SHAPE=True, NUM_WORKERS=0),
        "nyuv2_3task": dict(IMAGE_SHAPE=(96, 128), CROP_H=80, CROP_W=112),
        "cityscapes": dict(IMAGE_SHAPE=(96, 192), CROP_H=80, CROP_W=80),
        "taskonomy": dict(IMAGE_SHAPE=(96, 96), CROP_H=80, CROP_W=80),
    },
    # For tests: smallest network and images that still exercise every code path.
    "tiny": {
        "*": dict(BACKBONE_NAME="ResNet18", WIDTH_MULT=0.125, BATCH_SIZE=2, MAX_ITERS=4,
                  DECAY_LR_FREQ=2, INIT_LR=1e-3, VAL_FREQ=2, CKPT_FREQ=2,
                  PRUNE_NUM_BATCHES=2, RETRAIN_EPOCH=2, RETRAIN_LR=1e-4,
                  RETRAIN_DECAY_LR_FREQ=2, RESIZE_TO_IMAGE_SHAPE=True, NUM_WORKERS=0),
        "nyuv2_3task": dict(IMAGE_SHAPE=(48, 64), CROP_H=40, CROP_W=48),
        "cityscapes": dict(IMAGE_SHAPE=(48, 96), CROP_H=40, CROP_W=40),
        "taskonomy": dict(IMAGE_SHAPE=(48, 48), CROP_H=40, CROP_W=40),
        "nyuv2_mtan": dict(IMAGE_SHAPE=(32, 48), CROP_H=32, CROP_W=48),
        "nyuv2_deeplab": dict(IMAGE_SHAPE=(32, 48), CROP_H=32, CROP_W=48, WIDTH_MULT=0.0625,
                              INIT_LR=0.05, RETRAIN_LR=0.01, DECAY_LR_FREQ=4,
                              RETRAIN_DECAY_LR_FREQ=2),
        "cifar100_mtl": dict(WIDTH_MULT=0.0625, INIT_LR=0.05, RETRAIN_LR=0.01, DECAY_LR_FREQ=4,
                             RETRAIN_DECAY_LR_FREQ=2),
    },
}


def canonical_name(name: str) -> str:
    """Map a config or dataset name to a key of :data:`CONFIG_MODULES` (a dataset's name: the
    first config its spec lists, e.g. ``nyuv2_3`` -> ``nyuv2_3task``); a name not registered
    yet first loads ``CUT_PLUGINS`` (a user's dataset file registers its configs)."""
    key = CONFIG_ALIASES.get(name, name)
    if key not in CONFIG_MODULES and key not in DATASET_REGISTRY:
        load_plugins()
    if key not in CONFIG_MODULES and key in DATASET_REGISTRY and DATASET_REGISTRY[key].configs:
        key = next(iter(DATASET_REGISTRY[key].configs))
    if key not in CONFIG_MODULES:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(CONFIG_MODULES)}")
    return key


class UnknownSettingError(AttributeError, ValueError):
    """An override names an attribute the config does not have (a typo, usually); the message
    suggests the closest names. An AttributeError and a ValueError (one-line CLI error)."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, (str, os.PathLike)):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


# The kinds of value an attribute of each kind accepts (an int where a float is expected).
_ACCEPTS = {"float": ("float", "int"), "int": ("int",), "bool": ("bool",), "str": ("str",),
            "list": ("list",), "dict": ("dict",)}


def check_setting(config: str, attr: str, value: Any, current: Any) -> None:
    """Raise a one-line ValueError unless ``value`` is of the kind of the attribute's current
    ``current`` value (int, float (an int will do), bool, str / path, list / tuple, dict; an
    attribute that is None takes anything)."""
    if current is None:
        return
    expected = _kind(current)
    accepted = _ACCEPTS.get(expected, (expected,))
    if _kind(value) not in accepted:
        raise ValueError(f"config {config!r}: {attr}={value!r} has type {_kind(value)}; "
                         f"expected type {expected} (its value is {current!r})")


def unknown_setting(config: str, attr: str, cfg) -> UnknownSettingError:
    """The error for an attribute ``cfg`` lacks, with the closest names it has."""
    names = [a for a in dir(cfg) if a.isupper()]
    close = difflib.get_close_matches(attr, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; it has {names}"
    return UnknownSettingError(f"config {config!r} has no attribute {attr!r} to override{hint}")


def parse_setting(cfg, attr: str, raw: str) -> Any:
    """The value of ``--set ATTR=RAW`` for ``cfg``: the raw text for a string attribute (a path
    stays a path), else a Python literal (``8``, ``0.5``, ``True``, ``[1, 2]``), checked
    against the attribute's kind (:func:`check_setting`); one-line errors otherwise."""
    name = getattr(cfg, "CONFIG_NAME", "?")
    if not hasattr(cfg, attr):
        raise unknown_setting(name, attr, cfg)
    current = getattr(cfg, attr)
    if isinstance(current, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"config {name!r}: {attr}={raw!r} is not a Python literal of type "
                         f"{_kind(current)} (its value is {current!r})") from None
    check_setting(name, attr, value, current)
    return value


def load_config(name: str, profile: str = "reference", **overrides: Any):
    """Return a fresh ``Config`` instance for ``name`` with ``profile`` and ``overrides`` applied.

    ``KEEP_RATIO_TABLE``, unless the class sets one, is its dataset's ``keep_ratios["cut"]``
    (:mod:`lib.datasets`: one table per dataset). Overrides must name attributes the config
    already has, so a typo fails loudly (:class:`UnknownSettingError`, with the closest names),
    and be of the kind of its value (:func:`check_setting`).
    """
    key = canonical_name(name)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    config_class = resolve(CONFIG_MODULES[key], f"config {key!r}")
    cfg = config_class()
    # Copy mutable class attributes so instances never share lists/dicts with the class.
    for attr in dir(config_class):
        if attr.isupper():
            setattr(cfg, attr, copy.deepcopy(getattr(config_class, attr)))
    if not hasattr(cfg, "KEEP_RATIO_TABLE"):    # one table, the dataset's (CUT's notebook)
        cfg.KEEP_RATIO_TABLE = dict(dataset_spec(cfg.DATASET).keep_ratios.get("cut", {}))
    cfg.CONFIG_NAME = key
    cfg.PROFILE = profile
    shared = {k: v for k, v in PROFILES[profile].get("*", {}).items() if hasattr(cfg, k)}
    settings = {**shared, **PROFILES[profile].get(key, {}), **overrides}
    for attr, value in settings.items():
        if not hasattr(cfg, attr):
            raise unknown_setting(key, attr, cfg)
        check_setting(key, attr, value, getattr(cfg, attr))
        setattr(cfg, attr, value)
    return cfg


def config_to_dict(cfg) -> dict[str, Any]:
    """All upper-case attributes of a config instance, for logging and checkpoints."""
    out = {}
    for attr in dir(cfg):
        if attr.isupper():
            value = getattr(cfg, attr)
            out[attr] = list(value) if isinstance(value, tuple) else value
    return out
