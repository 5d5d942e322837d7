"""A spec's components resolved and built: the one assembly both backends' VAEs start from.

:func:`build_parts` builds every part of a VAE from the registry in the order that makes
sizes line up (the guide family first, since the encoder's outputs depend on it; the
likelihood before the decoder, whose outputs it sizes; the prior after the likelihood,
whose support a VampPrior can take). Each backend's ``build_vae`` calls it with its name
and a function giving each part its framework's extra arguments (NumPyro's PRNG keys),
then wraps the parts in its own VAE class.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ppvae.errors import UsageError
from ppvae.model.conditioning import conditional_classes, conditional_encoder
from ppvae.model.hierarchy import LayerPlan, plan_layers
from ppvae.model.priors import uses_encoder
from ppvae.model.settings import prior_arguments
from ppvae.spec import registry

__all__ = ["GuidePlan", "plan_guide", "encoder_structural", "Parts", "build_parts"]


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
        raise UsageError(
            f"guide {comp.name!r}: extra_outputs(...) must return a non-negative integer, "
            f"got {extra!r}; fix the guide family's extra_outputs method"
        )
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
            '(loc, scale, extra) when it is positive, or use model.guide = "diagonal"'
        )
    return {"extra_outputs": plan.extra_outputs}


@dataclass(frozen=True)
class Parts:
    """The built parts of a VAE, before a backend wraps them in its VAE class.

    Attributes
    ----------
    prior, likelihood, encoder, decoder, guide_family
        The backend's modules.
    num_classes : int
        C of a conditional VAE (the encoder and decoder are built for ``one_hot(y)`` too), or 0.
    label_layout : {"flat", "channels"}
        How the label is attached to x for the encoder.
    layers : LayerPlan
        The stochastic layers (one for the plain VAE).
    up, down : list
        For each pair of consecutive layers (z_l, z_{l+1}): the network giving the loc and
        scale of q(z_{l+1} | z_l), and the one giving those of p(z_l | z_{l+1}); empty for
        one layer. Both are the backend's ``mlp`` encoder, built for the layers' sizes.
    """

    prior: Any
    likelihood: Any
    encoder: Any
    decoder: Any
    guide_family: Any
    num_classes: int
    label_layout: str
    layers: LayerPlan | None = None
    up: list = field(default_factory=list)
    down: list = field(default_factory=list)


def build_parts(spec, event_shape, backend: str, extra: Callable[[str], dict] = lambda part: {}) -> Parts:
    """Build the parts ``spec`` names for ``backend``, each with ``extra(part)`` added to its arguments.

    Component names and settings are validated against the registry; unknown ones raise
    :class:`~ppvae.errors.UsageError` listing the valid choices. ``part`` is ``"prior"``,
    ``"likelihood"``, ``"encoder"``, ``"decoder"`` or ``"guide"``, and for a hierarchical
    spec ``"up1"``, ``"down1"``, ... (the networks between layers 1 and 2, ...). The prior is
    the top layer's, of that layer's size.
    """
    event_shape = tuple(event_shape)
    layers = plan_layers(spec)
    guide_plan = plan_guide(spec, backend)  # before the networks: the encoder's size depends on it

    def make(kind: str, **structural):
        comp = registry.get(kind, getattr(spec, kind), backend)
        options = registry.resolve_options(kind, comp.name, backend, spec.options(kind))
        if kind == "encoder":
            structural.update(encoder_structural(guide_plan, comp))
        return comp.factory(**structural, **options, **extra(kind))

    likelihood = make("likelihood", event_shape=event_shape)
    prior_comp = registry.get("prior", spec.prior, backend)
    prior = prior_comp.factory(
        **prior_arguments(
            prior_comp.factory,
            registry.resolve_options("prior", prior_comp.name, backend, spec.options("prior")),
            latent_dim=layers.sizes[-1],
            event_shape=event_shape,
            likelihood_support=likelihood.support,
        ),
        **extra("prior"),
    )
    num_classes = conditional_classes(spec)
    if num_classes and uses_encoder(prior):
        raise UsageError(
            f"prior {spec.prior!r} is built from the encoder, which a conditional VAE feeds labels "
            "too; use another prior or set model.conditional = false"
        )
    encoder, layout = conditional_encoder(make, event_shape, spec.latent_dim, num_classes)
    decoder = make("decoder", latent_dim=spec.latent_dim + num_classes, param_shape=likelihood.param_shape)
    guide_family = guide_plan.factory(latent_dim=spec.latent_dim, **guide_plan.options, **extra("guide"))
    up, down = [], []
    if layers.hierarchical:
        mlp = registry.get("encoder", "mlp", backend).factory
        for i, (lower, upper) in enumerate(zip(layers.sizes[:-1], layers.sizes[1:]), start=1):
            net = {"hidden": layers.hidden, "activation": layers.activation}
            up.append(mlp(event_shape=(lower,), latent_dim=upper, **net, **extra(f"up{i}")))
            down.append(mlp(event_shape=(upper,), latent_dim=lower, **net, **extra(f"down{i}")))
    return Parts(prior, likelihood, encoder, decoder, guide_family, num_classes, layout, layers, up, down)
