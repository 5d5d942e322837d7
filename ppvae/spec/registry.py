"""Name -> component registries: priors, likelihoods, encoders, decoders and guide families.

A component is registered once per backend under a lowercase name. Its settings are the
keyword arguments of its constructor (with their defaults); a spec stores only names and
settings, so it serializes. Backends register their built-in components when they are
first loaded, so listing or looking up names for a backend imports that backend.

Examples
--------
A custom prior for the Pyro backend (the module returns a distribution over z)::

    import torch, pyro.distributions as dist
    import ppvae

    @ppvae.register("prior", "laplace", backend="pyro")
    class LaplacePrior(torch.nn.Module):
        "Laplace(0, scale) on every latent dimension."
        def __init__(self, latent_dim, scale=1.0):
            super().__init__()
            self.register_buffer("loc", torch.zeros(latent_dim))
            self.register_buffer("scale", torch.full((latent_dim,), float(scale)))
        def forward(self):
            return dist.Laplace(self.loc, self.scale).to_event(1)
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # the registry names backends by module path and imports them on demand
    from ppvae.backends.base import Backend
from ppvae.errors import BackendUnavailableError, UsageError, unknown_name

__all__ = [
    "KINDS",
    "BACKENDS",
    "PORTABLE",
    "Component",
    "register",
    "get",
    "names",
    "components",
    "resolve_options",
    "likelihood_support",
    "load_backend",
    "registration_count",
    "registered_since",
    "portable",
]

#: ``guide``: the family of q(z|x) built from the encoder's outputs (diagonal, low-rank, ...).
KINDS = ("prior", "likelihood", "encoder", "decoder", "guide")

#: backend name -> (module that registers its components, pip extra that installs it)
BACKENDS: dict[str, tuple[str, str]] = {
    "pyro": ("ppvae.backends.pyro", "ppvae"),
    "numpyro": ("ppvae.backends.numpyro", "ppvae[numpyro]"),
}

# Constructor arguments that the model builder supplies (``key``: a JAX PRNG key for
# backends that need one; ``extra_outputs``: how many values per datapoint an encoder
# returns besides loc and scale, for guide families that need them); not user settings.
_STRUCTURAL = {"latent_dim", "event_shape", "param_shape", "key", "extra_outputs"}

_REGISTRY: dict[tuple[str, str], dict[str, "Component"]] = {}
#: Backend key under which portable components (one definition, every backend) are kept.
PORTABLE = "*"
_ORDER = [0]  # registration counter: a later registration of a name wins
_BUILT_INS_REGISTERED = [False]


def _register_built_ins() -> None:
    """Register the portable built-in priors and likelihoods (:mod:`ppvae.model`), once.

    Done on first use rather than at import, and before anything else is registered, so
    the built-ins always have the lowest order and any plug-in of the same name wins.
    """
    if _BUILT_INS_REGISTERED[0]:
        return
    _BUILT_INS_REGISTERED[0] = True
    from ppvae.model import likelihoods, priors

    for kind, table in (("prior", priors.BUILT_IN), ("likelihood", likelihoods.BUILT_IN)):
        for name, cls in table.items():
            register(kind, name)(cls)


@dataclass(frozen=True)
class Component:
    """One registered component implementation.

    Attributes
    ----------
    kind, name, backend : str
        Where it is registered.
    factory : callable
        Called as ``factory(**structural, **settings)`` to build the component.
    description : str
        One line shown by listings.
    defaults : dict
        User-settable keyword arguments and their defaults.
    """

    kind: str
    name: str
    backend: str
    factory: Callable[..., Any]
    description: str
    defaults: Mapping[str, Any]
    order: int = 0


def _settings_of(factory: Callable) -> dict:
    sig = inspect.signature(factory)
    out = {}
    for pname, param in sig.parameters.items():
        if pname in _STRUCTURAL or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname == "self":
            continue
        out[pname] = None if param.default is inspect.Parameter.empty else param.default
    return out


def register(kind: str, name: str, *, backend: str | None = None, description: str | None = None):
    """Register a component class or factory under ``name`` for ``backend``.

    Parameters
    ----------
    kind : {"prior", "likelihood", "encoder", "decoder", "guide"}
        What the component is.
    name : str
        Lowercase name used in specs and on the command line.
    backend : str, optional
        The backend it is implemented for (``"pyro"``, ``"numpyro"``). Leave it out for a
        :class:`ppvae.Portable` prior or likelihood, which then runs on every backend.
    description : str, optional
        One line for listings; defaults to the first line of the docstring.

    Returns
    -------
    callable
        A decorator that registers and returns its argument unchanged.

    Notes
    -----
    The constructor receives the structural arguments it names among ``latent_dim``,
    ``event_shape`` and ``param_shape``, plus the user's settings as keyword arguments.
    Registering an existing name replaces it (so a plug-in can override a built-in).
    """
    _register_built_ins()
    if kind not in KINDS:
        raise unknown_name("component kind", kind, KINDS)
    if not name or name != name.lower():
        raise UsageError(f"component names are lowercase, got {name!r}")

    def decorator(factory):
        from ppvae.model.portable import is_portable

        if backend is None and not (is_portable(factory) and kind in ("prior", "likelihood")):
            raise UsageError(
                f"registering {kind} {name!r} without backend= needs a ppvae.Portable prior or likelihood; "
                "for a backend-specific component pass backend='pyro' or backend='numpyro'"
            )
        doc = description or (inspect.getdoc(factory) or "").strip().splitlines()
        text = doc if isinstance(doc, str) else (doc[0] if doc else "")
        table = _REGISTRY.setdefault((kind, backend or PORTABLE), {})
        if _is_builtin(factory) and name in table and not _is_builtin(table[name].factory):
            # A backend imported after a plug-in registered this name: the plug-in's wins.
            return factory
        _ORDER[0] += 1
        table[name] = Component(
            kind=kind,
            name=name,
            backend=backend or PORTABLE,
            factory=factory,
            description=text,
            defaults=_settings_of(factory),
            order=_ORDER[0],
        )
        return factory

    return decorator


def _is_builtin(factory) -> bool:
    return getattr(factory, "__module__", "").startswith("ppvae.")


def registration_count() -> int:
    """A counter that every registration raises; pass it to :func:`registered_since`."""
    _register_built_ins()  # so a plug-in's first registration does not also count them
    return _ORDER[0]


def registered_since(count: int) -> list[Component]:
    """The components registered after :func:`registration_count` returned ``count``."""
    found = [c for table in _REGISTRY.values() for c in table.values() if c.order > count]
    return sorted(found, key=lambda c: c.order)


def load_backend(backend: str) -> Backend:
    """Import a backend's package (which registers its built-in components) and return it.

    The package implements :class:`ppvae.backends.base.Backend`; callers use nothing else of it.

    Raises
    ------
    UsageError
        For an unknown backend name (the message lists the valid ones).
    BackendUnavailableError
        When the backend's libraries are not installed (the message names the extra).
    """
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    module, extra = BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the {backend} backend needs libraries that are not installed ({exc.name or exc}); "
            f"install them with: pip install '{extra}'"
        ) from None


def components(kind: str, backend: str) -> dict[str, Component]:
    """All components of ``kind`` usable with ``backend``, by name (portable ones included)."""
    module = load_backend(backend)
    _register_built_ins()
    found = dict(_REGISTRY.get((kind, backend), {}))
    for name, comp in _REGISTRY.get((kind, PORTABLE), {}).items():
        if name not in found or found[name].order < comp.order:
            found[name] = Component(
                kind=kind,
                name=name,
                backend=backend,
                factory=module.adapt_portable(kind, comp.factory),
                description=comp.description,
                defaults=comp.defaults,
                order=comp.order,
            )
    return found


def portable(kind: str) -> dict[str, Component]:
    """The :class:`ppvae.Portable` components of ``kind`` (one definition, every backend), by name."""
    _register_built_ins()
    return dict(_REGISTRY.get((kind, PORTABLE), {}))


def names(kind: str, backend: str) -> list[str]:
    """Sorted registered names of ``kind`` for ``backend``."""
    return sorted(components(kind, backend))


def get(kind: str, name: str, backend: str) -> Component:
    """Look up a component; an unknown name raises a UsageError listing the valid ones."""
    found = components(kind, backend)
    if name not in found:
        raise _not_registered(kind, name, backend, found)
    return found[name]


def _not_registered(kind: str, name: str, backend: str, found) -> UsageError:
    """The message for a missing component: what exists, where it exists, and the fix."""
    elsewhere = sorted(
        b for (k, b), table in _REGISTRY.items() if k == kind and b not in (backend, PORTABLE) and name in table
    )
    writable_once = kind in ("prior", "likelihood")  # the kinds a ppvae.Portable can be
    if elsewhere:
        where = f"it is registered for backend {', '.join(elsewhere)} only"
        fix = (
            f"write it as a ppvae.Portable to run on both backends, or register a {backend} version"
            if writable_once
            else f"register a {backend} version with backend={backend!r}"
        )
    else:
        where = "it is not registered"
        fix = 'load its plug-in with --plugin FILE (or plugins = ["FILE"] in the spec)' + (
            "; write it as a ppvae.Portable to run on both backends" if writable_once else ""
        )
    choices = ", ".join(sorted(found)) or "(none registered)"
    return UsageError(f"unknown {kind} {name!r} for backend {backend} ({where}); valid {kind} names: {choices}; {fix}")


def likelihood_support(name: str, backend: str) -> str:
    """The values a likelihood accepts: ``"unit_interval"``, ``"real"`` or ``"count"`` (data preparation reads it)."""
    return getattr(get("likelihood", name, backend).factory, "support", "real")


def resolve_options(kind: str, name: str, backend: str, options: Mapping[str, Any]) -> dict:
    """Fill a component's settings with its defaults; reject unknown settings.

    Returns
    -------
    dict
        Every setting of the component, the user's values over the defaults; this is
        what ``config.toml`` records so the run can be reproduced exactly.
    """
    comp = get(kind, name, backend)
    unknown = sorted(set(options) - set(comp.defaults))
    if unknown:
        valid = ", ".join(sorted(comp.defaults)) or "(it takes none)"
        raise UsageError(f"{kind} {name!r} has no setting {', '.join(unknown)}; valid settings: {valid}")
    resolved = {**comp.defaults, **options}
    missing = sorted(
        k
        for k, v in resolved.items()
        if v is None
        and k not in options
        and inspect.signature(comp.factory).parameters[k].default is inspect.Parameter.empty
    )
    if missing:
        raise UsageError(
            f"{kind} {name!r} needs the setting(s) {', '.join(missing)}; "
            f"set them with --set model.{kind}_options.{missing[0]}=VALUE"
        )
    # None cannot be written to TOML; settings left at None keep their default implicitly.
    return {k: v for k, v in resolved.items() if v is not None}
