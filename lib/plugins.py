"""The user's own files: methods, datasets (with their configs) and models registered outside
``lib``, named by the ``CUT_PLUGINS`` environment variable.

    CUT_PLUGINS=my_methods.py:my_data.py python -m lib train --config my_data ...

``CUT_PLUGINS`` holds files (``*.py``) or module names, separated by ``os.pathsep``.
:func:`load_plugins` imports each once. Every registry calls it before refusing a name it does
not know (``lib.pruning.registry.method_spec``, ``lib.datasets.dataset_spec``,
``lib.config.canonical_name``, ``lib.models.model_from_config`` / ``build_model``) and before
listing its names, and the command line calls it before building a command's choices; so a
user's file reaches every command, the study (its Ray workers inherit the variable) and the
explorer. This module imports nothing of ``lib``: a registry at any layer may call it.

A file that Python can import by a module name (it lies under a ``sys.path`` folder, e.g.
``examples/custom_model.py`` run from the repository) is imported under that name, so
``import examples.custom_model`` in another plugin gives the same module (no second
registration) and its classes unpickle in a worker; any other file under ``cut_plugin_<stem>``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

PLUGINS_ENV = "CUT_PLUGINS"


class PluginError(ImportError, ValueError):
    """An entry of ``CUT_PLUGINS`` is missing or raised while imported: one line naming it (a
    ValueError too, so every command reports it as a one-line error)."""


_loaded: set[str] = set()   # the entries imported (or being imported), by resolved path / name


def load_plugins(paths: str | None = None) -> list[str]:
    """Import the files or modules of ``paths`` (default ``$CUT_PLUGINS``) not imported yet;
    returns those imported now. A missing file, a missing module or an exception raised by the
    import is a one-line :class:`PluginError` naming the entry."""
    paths = os.environ.get(PLUGINS_ENV, "") if paths is None else paths
    loaded = []
    for entry in [p.strip() for p in paths.split(os.pathsep) if p.strip()]:
        is_file = entry.endswith(".py")
        key = str(Path(entry).resolve()) if is_file else entry
        if key in _loaded:
            continue
        _loaded.add(key)     # before importing: a registry the file calls must not re-enter it
        try:
            if is_file:
                _import_file(Path(key), entry)
            else:
                importlib.import_module(entry)
        except PluginError:
            _loaded.discard(key)
            raise
        except Exception as exc:
            _loaded.discard(key)
            detail = " ".join(str(exc).split()) or "(no message)"
            raise PluginError(f"{PLUGINS_ENV}: {entry}: {type(exc).__name__}: {detail}") from exc
        loaded.append(entry)
    return loaded


def _import_file(path: Path, entry: str) -> None:
    if not path.is_file():
        raise PluginError(f"{PLUGINS_ENV}: plugin file {entry} does not exist")
    name = _module_name(path)
    if name is not None:
        importlib.import_module(name)
        return
    name = f"cut_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _module_name(path: Path) -> str | None:
    """The dotted name under which ``import`` finds the file ``path``, or None."""
    for folder in sys.path:
        try:
            parts = path.with_suffix("").relative_to(Path(folder or ".").resolve()).parts
        except (ValueError, OSError):
            continue
        if not parts or not all(p.isidentifier() for p in parts):
            continue
        name = ".".join(parts)
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if found is not None and found.origin and Path(found.origin).resolve() == path:
            return name
    return None
