"""The arguments every ``python -m lib`` command shares, declared once: ``--config`` and
``--profile`` (one default, :data:`DEFAULT_PROFILE`), the settings a checkpoint's sidecar
records, the line that announces them, and the help formatter that shows each flag's default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lib.checkpoints import find_sidecar, read_sidecar
from lib.config import CONFIG_MODULES, PROFILES, canonical_name

# The laptop profile: a command run without --profile never starts a reference-sized run.
DEFAULT_PROFILE = "cpu"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends ``(default: X)`` to every flag whose help
    does not already say its default (a required flag, a switch or a ``None`` default that the
    help explains has nothing to add)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or action.required or default is None or default is False
                or default == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
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
    if with_config:
        parser.add_argument("--config", type=config_name, default=None,
                            required=required and reads is None and default_config is None,
                            metavar="CONFIG",
                            help=f"{config_help}: {names} (default: {config_default})")
    else:
        parser.set_defaults(config=None)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
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


def parse_key_values(pairs, flag: str) -> dict[str, str]:
    """``["k=v", ...]`` (a repeatable ``KEY=VALUE`` flag) as ``{k: v}``, values as text; a
    one-line ValueError naming ``flag`` for a malformed or repeated pair."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE")
        if key in out:
            raise ValueError(f"{flag}: {key} given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out
