"""The arguments every ``python -m lib`` command shares, declared once: ``--config`` and
``--profile`` (one default, :data:`DEFAULT_PROFILE`), the settings a checkpoint's sidecar
records, the line that announces them, the shared groups (data root, device, seed, ``--set``,
``--quiet``, output, data workers and precision), the one ``KEY=VALUE`` parser, renamed flags
kept as deprecated aliases, and the help formatter that shows each flag's default.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

from lib.checkpoints import find_sidecar, read_sidecar
from lib.config import CONFIG_MODULES, PROFILES, canonical_name, load_config, parse_setting

# The laptop profile: a command run without --profile never starts a reference-sized run.
DEFAULT_PROFILE = "cpu"


# Title of the argument group holding the shared flags in every command's help.
SHARED_GROUP = "shared options"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends ``(default: X)`` to every flag whose help
    does not already say its default (a required flag, a switch or a ``None`` default that the
    help explains has nothing to add); a renamed flag's old names are not shown."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "deprecated_names", ())
        if not old:
            return super()._format_action_invocation(action)
        shown = argparse.Action([s for s in action.option_strings if s not in old], action.dest,
                                nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(shown)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or action.required or default is None or default is False
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(map(str, default)) if default else "none"
        else:
            shown = default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def config_name(value: str) -> str:
    """argparse type of ``--config``: a config name or alias, as its canonical name."""
    try:
        return canonical_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True,
                         default_config: str | None = None, reads: str | None = None,
                         config_help: str = "dataset config", with_config: bool = True) -> None:
    """``--config`` and ``--profile``. ``reads``: the flag of the checkpoint whose sidecar may
    record both (see :func:`resolve_config`); then neither flag is required, and an explicit
    value that contradicts the record is refused. ``with_config=False``: ``--profile`` only,
    the config fixed to ``default_config``."""
    names = ", ".join(sorted(CONFIG_MODULES))
    recorded = f", unless {reads}'s sidecar records one" if reads else ""
    if default_config is not None:
        config_default = default_config + recorded
    elif reads and required:
        config_default = f"the one {reads}'s sidecar records; required without one"
    else:
        config_default = "none" + recorded
    group = shared_group(parser)
    if with_config:
        group.add_argument("--config", type=config_name, default=None,
                           required=required and reads is None and default_config is None,
                           metavar="CONFIG",
                           help=f"{config_help}: {names} (default: {config_default})")
    else:
        parser.set_defaults(config=None)
    group.add_argument("--profile", choices=sorted(PROFILES), default=None,
                       help=f"run profile: reference (the paper's sizes), cpu (a laptop), tiny "
                            f"(tests), bench (the method benchmark) (default: "
                            f"{DEFAULT_PROFILE}{recorded})")
    parser.set_defaults(_default_config=default_config, _config_required=required,
                        _reads=reads.lstrip("-").replace("-", "_") if reads else None)


def recorded_settings(checkpoint: str | Path | None) -> tuple[str | None, str | None, Path | None]:
    """``(config, profile, sidecar)`` a checkpoint's sidecar records under ``meta`` (what
    ``python -m lib prune`` writes and fine-tuning carries on), ``None`` for what it lacks."""
    side = find_sidecar(checkpoint) if checkpoint is not None else None
    if side is None:
        return None, None, None
    meta = read_sidecar(side).get("meta") or {}
    config, profile = meta.get("config"), meta.get("profile")
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"sidecar {side} records profile {profile!r}; expected one of "
                         f"{sorted(PROFILES)}")
    return (canonical_name(config) if config is not None else None), profile, side


def resolve_config(args: argparse.Namespace, checkpoint: str | Path | None = None) -> Path | None:
    """Fill ``args.config`` / ``args.profile``: the explicit flags, else what ``checkpoint``'s
    (default: the file of :func:`add_config_arguments`' ``reads`` flag) sidecar records, else
    the defaults. A flag that contradicts the record is a one-line ``ValueError`` naming both
    values and the file, raised before anything is read or written.
    Returns the sidecar the settings came from (``None`` when none did)."""
    if checkpoint is None and getattr(args, "_reads", None):
        checkpoint = getattr(args, args._reads)
    config, profile, side = recorded_settings(checkpoint)
    for flag, given, kept in (("--config", args.config, config),
                              ("--profile", args.profile, profile)):
        if given is not None and kept is not None and given != kept:
            raise ValueError(f"{flag} {given} contradicts {flag[2:]} {kept} recorded in {side} "
                             f"(leave {flag} out to use the recorded one)")
    used = side if (args.config is None and config) or (args.profile is None and profile) \
        else None
    args.config = args.config or config or getattr(args, "_default_config", None)
    args.profile = args.profile or profile or DEFAULT_PROFILE
    if args.config is None and getattr(args, "_config_required", False):
        where = (f" ({checkpoint} has no sidecar that records one)" if checkpoint is not None
                 else "")
        raise ValueError(f"--config is required{where}; expected one of {sorted(CONFIG_MODULES)}")
    return used


def announce(args: argparse.Namespace, source: Path | None = None) -> None:
    """The first line of every command's output: the config and profile it runs with."""
    origin = f" (recorded in {source})" if source is not None else ""
    print(f"config {args.config or 'none'}, profile {args.profile}{origin}", flush=True)


# ----------------------------------------------------------------------------- KEY=VALUE
def split_key_value(item: str, flag: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``("KEY", "VALUE")``; a one-line ValueError naming ``flag`` and the
    item when there is no ``=`` or no key."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
    return key, raw


def literal_value(raw: str) -> Any:
    """The one rule for a ``KEY=VALUE`` value: a Python literal (``8``, ``0.5``, ``True``,
    ``[1, 2]``, ``'text'``) when it parses as one, else the text itself (``present``)."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["interval=10", "end=200", "mode=present"]`` -> ``{"interval": 10, "end": 200,
    "mode": "present"}`` (:func:`literal_value`). The one parser of every ``KEY=VALUE`` flag;
    ``--set`` types its values by the config attribute instead
    (:func:`lib.config.parse_setting`) after :func:`split_key_value`. A key given twice is a
    one-line ValueError naming the flag and both values (which one was meant is not known)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, raw = split_key_value(item, flag)
        if key in out:
            raise ValueError(f"{flag}: {key} given twice ({out[key]!r} and {raw!r})")
        out[key] = literal_value(raw)
    return out


# ----------------------------------------------------------------------------- renamed flags
def _renamed_action(base: type[argparse.Action]) -> type[argparse.Action]:
    class Renamed(base):  # type: ignore[misc, valid-type]
        """``base``, noting on stderr when given under an old name, and refusing the same
        setting given under two different names (``--pruned A --base B``)."""

        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in self.deprecated_names:
                print(f"{option_string} is deprecated; use {self.option_strings[0]}",
                      file=sys.stderr)
            spelled = namespace.__dict__.setdefault("_spelled_as", {})
            earlier = spelled.setdefault(self.dest, option_string)
            if earlier != option_string:
                parser.error(f"{earlier} and {option_string} both set "
                             f"{self.option_strings[0]}; give it once")
            super().__call__(parser, namespace, values, option_string)

    return Renamed


def add_renamed(container, name: str, *old_names: str, **kwargs: Any) -> argparse.Action:
    """``container.add_argument(name, **kwargs)`` that also accepts ``old_names`` (deprecated
    for a release: each use prints ``OLD is deprecated; use NAME`` on stderr and behaves
    identically; help shows ``name`` only)."""
    base = kwargs.pop("action", "store")
    if isinstance(base, str):
        base = container._registry_get("action", base, base)
    kwargs.setdefault("dest", name.lstrip("-").replace("-", "_"))
    action = container.add_argument(name, *old_names, action=_renamed_action(base), **kwargs)
    action.deprecated_names = tuple(old_names)
    return action


# ----------------------------------------------------------------------------- shared groups
def shared_group(parser: argparse.ArgumentParser):
    """The parser's group of shared options (:data:`SHARED_GROUP`), created once."""
    for group in parser._action_groups:
        if group.title == SHARED_GROUP:
            return group
    return parser.add_argument_group(SHARED_GROUP, "the same name, meaning and default in "
                                                   "every command that has them")


SET_HELP = "override config attributes, e.g. --set BATCH_SIZE=8 VAL_FREQ=50"
QUIET_HELP = "no progress bars (nor training logs for tensorboard)"
SEED_HELP = "seed of everything: initial weights, data order, scoring, synthetic data"
DEVICE_HELP = "auto (CUDA if present), cpu, cuda:0"
DATA_ROOT_HELP = "dataset root"
NUM_WORKERS_HELP = ("data-loading worker processes (default: the profile's NUM_WORKERS); "
                    "results are the same for any N")
NUM_BATCHES_HELP = ("batches a pruning method scores on (default: the config's "
                    "PRUNE_NUM_BATCHES)")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE ...``: config attributes, typed by each attribute's kind
    (:func:`config_settings`)."""
    shared_group(parser).add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                                      help=SET_HELP)


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    shared_group(parser).add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    shared_group(parser).add_argument("--seed", type=int, default=0, help=SEED_HELP)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    shared_group(parser).add_argument("--device", default="auto", help=DEVICE_HELP)


def add_data_root_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """``--data-root``; ``default`` says what the command reads without it."""
    shared_group(parser).add_argument("--data-root", default=None,
                                      help=f"{DATA_ROOT_HELP} (default: {default})")


def add_out_argument(parser: argparse.ArgumentParser, what: str, *old_names: str,
                     required: bool = False, default: Any = None, type=None) -> None:
    """``--out``: where the command writes (``what`` says what it is)."""
    add_renamed(shared_group(parser), "--out", *old_names, required=required, default=default,
                type=type, help=what)


def add_num_batches_argument(parser: argparse.ArgumentParser) -> None:
    shared_group(parser).add_argument("--num-batches", type=int, default=None,
                                      help=NUM_BATCHES_HELP)


def add_loop_arguments(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """Data workers (and, with ``precision``, the forward pass's precision and memory layout)
    of every loop that reads data (train, finetune, evaluate, prune's scoring, the study)."""
    group = shared_group(parser)
    group.add_argument("--num-workers", type=int, default=None, metavar="N",
                       help=NUM_WORKERS_HELP)
    if not precision:
        return
    from lib.training.precision import PRECISIONS
    group.add_argument("--amp", nargs="?", const="fp16", default=None, choices=list(PRECISIONS),
                       help="forward-pass precision: off (float32, default: the config's AMP), "
                            "bf16 (CPU or CUDA), fp16 (CUDA, with a gradient scaler); a bare "
                            "--amp is fp16")
    group.add_argument("--channels-last", action="store_true", default=None,
                       help="channels_last memory layout (default: the config's CHANNELS_LAST)")


def loop_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values :func:`add_loop_arguments`' flags set (only those given)."""
    return {key: getattr(args, option) for option, key in
            (("num_workers", "NUM_WORKERS"), ("amp", "AMP"), ("channels_last", "CHANNELS_LAST"))
            if getattr(args, option, None) is not None}


def config_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--set KEY=VALUE ...`` as config overrides, each value typed by the kind of the
    attribute it replaces (:func:`lib.config.parse_setting`: one-line errors for an unknown
    key, with the closest names, or a value of another kind)."""
    items = getattr(args, "set", None) or []
    if not items:
        return {}
    if args.config is None:
        raise ValueError(f"--set {' '.join(items)}: no config to set it in; give --config")
    base = load_config(args.config, profile=args.profile)
    return {key: parse_setting(base, key, raw)
            for key, raw in (split_key_value(item, "--set") for item in items)}
