"""What is there to run: the ready-made specs in ``models/`` and every registered component.

``ppvae models`` prints this catalogue. A spec's description is its first comment line;
a component's is the first line of its docstring (or the ``description=`` it was
registered with).

Examples
--------
>>> from ppvae.spec.catalog import list_specs, list_components
>>> [s["name"] for s in list_specs()][:2]                                  # doctest: +SKIP
['beta-vae', 'conditional']
>>> list_components()["prior"][0]                                          # doctest: +SKIP
{'name': 'normal', 'description': '...', 'backends': ['numpyro', 'pyro'], 'portable': False}
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from ppvae.spec import registry
from ppvae.errors import BackendUnavailableError, UsageError

__all__ = ["default_models_dir", "list_specs", "list_components", "spec_description"]


def default_models_dir() -> Path | None:
    """The ``models/`` folder beside the package source (a checkout), else ``./models``.

    Returns ``None`` when neither exists (an installed wheel ships no specs).
    """
    for candidate in (Path(__file__).resolve().parent.parent / "models", Path.cwd() / "models"):
        if candidate.is_dir():
            return candidate
    return None


def spec_description(path: Path) -> str:
    """The first comment line at the top of a TOML spec, without the ``#``."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                text = line.strip()
                if not text:
                    continue
                if not text.startswith("#"):
                    break
                text = text.lstrip("#").strip()
                if text:
                    return text
    except (OSError, UnicodeDecodeError):
        pass
    return ""


def list_specs(directory: str | os.PathLike | None = None) -> list[dict]:
    """The ``*.toml`` specs of a folder (default: :func:`default_models_dir`), sorted by name.

    Returns
    -------
    list of dict
        ``{"name", "path", "description", "plugins"}`` per spec (``plugins``: the
        plug-in files it names, as written in it).

    Raises
    ------
    UsageError
        When ``directory`` is given but is not a folder.
    """
    if directory is None:
        found = default_models_dir()
        if found is None:
            return []
        directory = found
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--dir {str(directory)!r} is not a folder; give the folder that holds the *.toml specs")
    return [
        {"name": p.stem, "path": str(p), "description": spec_description(p), "plugins": _spec_plugins(p)}
        for p in sorted(directory.glob("*.toml"))
    ]


def _spec_plugins(path: Path) -> list[str]:
    """The plug-in files a spec names (as written); listing never executes them."""
    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("plugins", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def list_components(backends: tuple[str, ...] | None = None) -> dict:
    """Every registered component per kind, with the backends that have it.

    Parameters
    ----------
    backends : tuple of str, optional
        Backends to look in (default: every known backend); one whose libraries are not
        installed is left out (see ``unavailable`` in the result).

    Returns
    -------
    dict
        ``{"components": {kind: [{"name", "description", "backends", "portable"}]},
        "unavailable": {backend: reason}}``; ``portable`` components (one
        :class:`ppvae.Portable` definition) list every available backend.
    """
    backends = tuple(registry.BACKENDS) if backends is None else backends
    available, unavailable = [], {}
    for b in backends:
        try:
            registry.load_backend(b)
            available.append(b)
        except BackendUnavailableError as exc:
            unavailable[b] = str(exc)
    out: dict = {}
    for kind in registry.KINDS:
        rows: dict[str, dict] = {}
        for b in available:
            for name, comp in registry.components(kind, b).items():
                row = rows.setdefault(
                    name, {"name": name, "description": comp.description, "backends": [], "portable": False}
                )
                row["backends"].append(b)
                if not row["description"]:
                    row["description"] = comp.description
        for name, comp in registry.portable(kind).items():
            # Portable unless a later backend-specific registration of the name replaced it.
            if name in rows and all(
                registry.components(kind, b)[name].order == comp.order for b in rows[name]["backends"]
            ):
                rows[name]["portable"] = True
        out[kind] = [rows[n] for n in sorted(rows)]
    return {"components": out, "unavailable": unavailable}
