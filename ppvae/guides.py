"""Guide families: the shape of q(z|x) built from the encoder's outputs (backend-neutral part).

An encoder returns the ``(loc, scale)`` of a diagonal Normal; a *guide family* (registry
kind ``"guide"``, chosen with ``model.guide``) turns them into the distribution of z:

- ``diagonal`` (default): ``Normal(loc, scale)`` on every dimension, the mean-field family;
- ``lowrank``: a Normal with covariance ``S (I + G G^T) S``, ``S = diag(scale)`` and ``G``
  of shape ``(latent_dim, rank)``;
- ``fullrank``: a Normal with Cholesky factor ``S (I + M)``, ``M`` strictly lower
  triangular (any covariance);
- ``iaf``: the diagonal Normal pushed through inverse autoregressive flows.

A family that needs more than loc and scale per datapoint (``F``, ``L``, the flows'
context) says how many values through its class method ``extra_outputs(latent_dim,
**settings)``; the model builder then builds the encoder with ``extra_outputs=n`` and the
encoder returns ``(loc, scale, extra)``, ``extra`` of shape ``(..., n)``. This module holds
what both backends share: resolving the family of a spec, checking that the encoder can
deliver the extra outputs, and validating the built-in families' settings.

Examples
--------
>>> lowrank_outputs(latent_dim=4, rank=2)
8
>>> fullrank_outputs(latent_dim=4)
6
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from . import registry
from .errors import UsageError

__all__ = ["GuidePlan", "plan_guide", "encoder_structural", "lowrank_outputs", "fullrank_outputs",
           "iaf_settings", "iaf_permutation", "missing_extra"]


@dataclass(frozen=True)
class GuidePlan:
    """The guide family of a spec, resolved before any network is built.

    Attributes
    ----------
    name : str
        Registered name (``model.guide``).
    factory : callable
        Builds the family: ``factory(latent_dim=..., **options)`` (plus ``key`` in NumPyro).
    options : dict
        Its settings, defaults filled in.
    extra_outputs : int
        Values per datapoint the encoder must return besides loc and scale.
    """

    name: str
    factory: Callable[..., Any]
    options: dict = field(default_factory=dict)
    extra_outputs: int = 0


def plan_guide(spec, backend: str) -> GuidePlan:
    """Resolve ``spec.guide`` for ``backend``: the family, its settings and what it needs.

    Raises
    ------
    UsageError
        An unknown family (the message lists the valid ones) or bad settings.
    """
    comp = registry.get("guide", spec.guide, backend)
    options = registry.resolve_options("guide", comp.name, backend, spec.options("guide"))
    count = getattr(comp.factory, "extra_outputs", None)
    extra = 0 if count is None else count(spec.latent_dim, **options)
    if not (isinstance(extra, int) and not isinstance(extra, bool) and extra >= 0):
        raise UsageError(f"guide {comp.name!r}: extra_outputs(...) must return a non-negative integer, "
                         f"got {extra!r}; fix the guide family's extra_outputs method")
    return GuidePlan(comp.name, comp.factory, options, extra)


def encoder_structural(plan: GuidePlan, encoder) -> dict:
    """The ``extra_outputs`` argument for the encoder, or ``{}`` when the family needs none.

    ``encoder`` is the encoder's :class:`~ppvae.registry.Component`. Only encoders whose
    constructor takes ``extra_outputs`` can serve a family that needs extra outputs.
    """
    if not plan.extra_outputs:
        return {}
    params = inspect.signature(encoder.factory).parameters
    if "extra_outputs" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise UsageError(
            f"guide {plan.name!r} needs {plan.extra_outputs} extra encoder outputs per datapoint, but encoder "
            f"{encoder.name!r} takes no extra_outputs argument; give its constructor extra_outputs=0 and return "
            "(loc, scale, extra) when it is positive, or use model.guide = \"diagonal\""
        )
    return {"extra_outputs": plan.extra_outputs}


def missing_extra(name: str, needed: int) -> UsageError:
    """The error for an encoder that returned only (loc, scale) to a family that needs more."""
    return UsageError(f"guide {name!r} needs (loc, scale, extra) from the encoder with {needed} extra values "
                      "per datapoint, but the encoder returned only (loc, scale); build it with "
                      f"extra_outputs={needed} (ppvae's model builder does) or use model.guide = \"diagonal\"")


def _positive_int(guide: str, key: str, value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UsageError(f"guide {guide!r}: {key} must be a positive integer, got {value!r}; "
                         f"set it with --set model.guide_options.{key}=2")
    return value


def lowrank_outputs(latent_dim: int, rank: int) -> int:
    """Extra encoder outputs of the ``lowrank`` family: the ``latent_dim x rank`` factor G."""
    return latent_dim * _positive_int("lowrank", "rank", rank)


def fullrank_outputs(latent_dim: int) -> int:
    """Extra encoder outputs of the ``fullrank`` family: the strictly lower triangle of M."""
    return latent_dim * (latent_dim - 1) // 2


def iaf_settings(latent_dim: int, num_flows: int, hidden, context_dim: int) -> tuple[int, list[int], int]:
    """Validated ``(num_flows, hidden, context_dim)`` of the ``iaf`` family.

    Every hidden layer of the masked (MADE) networks needs at least ``latent_dim`` units, so
    that each output can see all the inputs that precede it.
    """
    num_flows = _positive_int("iaf", "num_flows", num_flows)
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if (not isinstance(hidden, (list, tuple)) or not hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden)
            or min(hidden) < latent_dim):
        raise UsageError(f"guide 'iaf': hidden must be a non-empty list of layer sizes of at least latent_dim "
                         f"= {latent_dim}, got {hidden!r}; set e.g. --set model.guide_options.hidden=[{max(64, latent_dim)}]")
    if not (isinstance(context_dim, int) and not isinstance(context_dim, bool) and context_dim >= 0):
        raise UsageError(f"guide 'iaf': context_dim must be a non-negative integer (0: flows not conditioned "
                         f"on x), got {context_dim!r}")
    return num_flows, list(hidden), context_dim


def iaf_permutation(latent_dim: int, index: int) -> list[int]:
    """Variable order of flow ``index``: natural for even flows, reversed for odd ones.

    Fixed rather than random so a model rebuilt from its spec (a reloaded run, a Pyro run
    converted to NumPyro) has the same autoregressive structure, and consecutive flows
    alternate which dimensions come first.
    """
    order = list(range(latent_dim))
    return order if index % 2 == 0 else order[::-1]
