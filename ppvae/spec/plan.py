"""A spec's components resolved before any network is built: what both backends build from.

The model builder of each backend asks this module which guide family a spec names, with
which settings, and what that family needs of the encoder; the backend then translates the
plan into its framework.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ppvae.errors import UsageError
from ppvae.spec import registry

__all__ = ["GuidePlan", "plan_guide", "encoder_structural"]


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

    ``encoder`` is the encoder's :class:`~ppvae.spec.registry.Component`. Only encoders whose
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
