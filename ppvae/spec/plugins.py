"""Plug-in files: Python files that register components.

A plug-in is an ordinary ``.py`` file that calls :func:`ppvae.register` (usually on a
:class:`ppvae.Portable` prior or likelihood, so it runs on every backend). It is loaded
from its path, never from ``sys.path``: ``ppvae fit --plugin FILE`` (on every command
that builds or opens a model), or a spec's top-level ``plugins = ["my_prior.py"]``, with
paths relative to the spec file. ``ppvae fit`` records the absolute paths in
``RUN/config.toml``, so every later command on the run loads them again by itself.

Loading the same file twice in one process executes it once.

Examples
--------
>>> from ppvae.spec.plugins import load_plugin
>>> load_plugin("models/plugins/student_t_prior.py")              # doctest: +SKIP
[('prior', 'heavy_tailed', 'portable')]
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Iterable

from ppvae.spec import registry
from ppvae.errors import PPVAEError, UsageError

__all__ = ["load_plugin", "load_plugins", "loaded_plugins", "with_plugins"]

# Resolved path -> (file stamp, what it registered). A plug-in defines classes; executing
# it again would register fresh, different classes under the same names for no gain.
_LOADED: dict[str, tuple[tuple[int, int], list[tuple[str, str, str]]]] = {}


def _module_name(path: Path) -> str:
    # Unique per file, so two plug-ins both called prior.py do not replace each other.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"ppvae_plugin_{stem}_{digest}"


def _where(exc: BaseException, path: Path) -> str:
    """The line of the plug-in file where ``exc`` happened, when it is known."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f", line {exc.lineno}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return f", line {line}" if line else ""


def _one_line(exc: BaseException) -> str:
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_plugin(path: str | os.PathLike, origin: str | None = None) -> list[tuple[str, str, str]]:
    """Execute one plug-in file and return what it registered.

    Parameters
    ----------
    path : path-like
        The ``.py`` file (relative paths are taken from the current folder).
    origin : str, optional
        Where the path was named (e.g. a run's ``config.toml``), for the message when the
        file is missing.

    Returns
    -------
    list of (kind, name, backend)
        Every component the file registered; ``backend`` is ``"portable"`` for a
        :class:`ppvae.Portable` component.

    Raises
    ------
    UsageError
        The file is missing or not a ``.py`` file, raises while it runs (the message gives
        the file, the line and the exception's message), or registers no component.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        if origin:
            raise UsageError(
                f"plug-in file {str(path)!r} named in {origin} does not exist; put the file back "
                "or correct the path in the plugins list there"
            )
        where = "" if path.is_absolute() else f" (relative to {os.getcwd()})"
        raise UsageError(
            f"plug-in file {str(path)!r} does not exist{where}; check the path "
            "(in a spec, plug-in paths are relative to the spec file)"
        )
    if path.suffix != ".py":
        raise UsageError(
            f"plug-in {str(path)!r} is not a Python file; a plug-in is a .py file that calls ppvae.register"
        )
    path = path.resolve()
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = str(path)
    if key in _LOADED and _LOADED[key][0] == stamp:
        return list(_LOADED[key][1])

    name = _module_name(path)
    loader = importlib.machinery.SourceFileLoader(name, key)
    spec = importlib.util.spec_from_file_location(name, key, loader=loader)
    module = importlib.util.module_from_spec(spec)
    before = registry.registration_count()
    # In sys.modules while it runs: dataclasses, pickling and inspect look the module up there.
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except PPVAEError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"plug-in {key}{_where(exc, path)}: {exc}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        sys.modules.pop(name, None)
        raise UsageError(
            f"plug-in {key} failed to load{_where(exc, path)}: {_one_line(exc)}; "
            "fix the file (run `python FILE` to see the full traceback)"
        ) from None
    added = registry.registered_since(before)
    if not added:
        sys.modules.pop(name, None)
        raise UsageError(
            f"plug-in {key} registered no component; decorate a class in it with "
            "@ppvae.register(kind, name) (see `ppvae models` for the kinds)"
        )
    found = [(c.kind, c.name, "portable" if c.backend == registry.PORTABLE else c.backend) for c in added]
    _LOADED[key] = (stamp, found)
    return list(found)


def load_plugins(paths: Iterable[str | os.PathLike], origin: str | None = None) -> list[str]:
    """Load several plug-in files in order; return their resolved absolute paths.

    Duplicates are loaded once and listed once. ``origin`` is passed to :func:`load_plugin`.
    """
    out: list[str] = []
    for path in paths:
        load_plugin(path, origin=origin)
        resolved = str(Path(path).expanduser().resolve())
        if resolved not in out:
            out.append(resolved)
    return out


def loaded_plugins() -> dict[str, list[tuple[str, str, str]]]:
    """Plug-in files loaded in this process and what each registered."""
    return {path: list(found) for path, (_, found) in _LOADED.items()}


def with_plugins(cfg, extra: Iterable[str | Path] = (), origin: str | None = None):
    """Load a Config's plug-ins and ``extra`` ones; the Config with all of them recorded as absolute paths.

    ``origin`` names where the spec came from, for messages about a missing file.
    """
    extra = tuple(extra)
    if not cfg.plugins and not extra:
        return cfg
    paths = tuple(load_plugins([*cfg.plugins, *extra], origin=origin))
    return dataclasses.replace(cfg, plugins=paths) if paths != cfg.plugins else cfg
