"""Hierarchical latent variables: the layers of a VAE with several stochastic layers (backend-neutral part).

A spec with ``model.latent_layers = [d2, ..., dL]`` describes the model

    p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1)

with ``z_1`` of size ``model.latent_dim``, the spec's prior as p(z_L) and a diagonal Normal
for every conditional p(z_l | z_{l+1}), its loc and scale from a network ("down" network).
The guide is bottom-up (``model.inference = "bottom_up"``, the IWAE paper's two-layer
model): q(z_1 | x) from the spec's encoder and guide family, then q(z_{l+1} | z_l), a
diagonal Normal from an "up" network. Or it is the ladder's top-down guide
(``model.inference = "ladder"``, Sønderby et al. 2016): a deterministic bottom-up pass
gives each layer a Normal N(mu_hat_l, sigma_hat_l) (the encoder's for z_1, then each "up"
network at the loc below), and the guide draws z_L ~ N(mu_hat_L, sigma_hat_L), then each
z_l from the precision-weighted combination of N(mu_hat_l, sigma_hat_l) with the model's
own p(z_l | z_{l+1}) (:func:`precision_weighted`): the generative top-down pass is shared
with inference, and every site's KL has a closed form. The sample sites are ``"z1"`` ... ``"zL"`` and
``"x"`` in the plate ``"data"``, β through ``poutine.scale`` around every latent site in the
model and in the guide, so each backend's estimators sum their terms over all the sites.

This module holds what both backends share: the sites' names, the layers' sizes, the
settings of the networks between layers and what a hierarchical spec cannot combine.

Examples
--------
>>> latent_sites(1), latent_sites(3)
(('z',), ('z1', 'z2', 'z3'))
"""

from __future__ import annotations

from dataclasses import dataclass

from ppvae.errors import UsageError

__all__ = [
    "LAYER_DEFAULTS",
    "latent_sites",
    "LayerPlan",
    "plan_layers",
    "analytic_sites",
    "training_refusal",
    "dreg_refusal",
    "precision_weighted",
    "nearest_to_x",
]

#: Settings of the networks between two latent layers (``model.latent_layer_options``).
LAYER_DEFAULTS = {"hidden": [100, 100], "activation": "tanh"}


def latent_sites(num_layers: int) -> tuple[str, ...]:
    """The latent sites' names: ``("z",)`` for one layer, ``("z1", ..., "zL")`` for several."""
    return ("z",) if num_layers == 1 else tuple(f"z{i}" for i in range(1, num_layers + 1))


@dataclass(frozen=True)
class LayerPlan:
    """The stochastic layers of a spec, checked.

    Attributes
    ----------
    sizes : tuple of int
        ``(latent_dim, *latent_layers)``: the size of z_1 first, the top layer's last.
    sites : tuple of str
        Their sample sites, in the same order.
    hidden : list of int
        Hidden sizes of every network between two layers (up and down).
    activation : str
        Their activation.
    inference : {"bottom_up", "ladder"}
        The guide's order (``model.inference``, see :func:`precision_weighted`).
    """

    sizes: tuple
    sites: tuple
    hidden: list
    activation: str
    inference: str = "bottom_up"

    @property
    def hierarchical(self) -> bool:
        """Whether there is more than one stochastic layer."""
        return len(self.sizes) > 1


def plan_layers(spec) -> LayerPlan:
    """The layers of ``spec`` (a :class:`~ppvae.spec.config.ModelSpec`), refusing what cannot be combined.

    Raises
    ------
    UsageError
        Unknown layer settings, a guide family other than ``diagonal``, a prior built from
        the encoder (the VampPrior's pseudo-inputs would need the whole bottom-up chain) or a
        conditional model together with ``latent_layers``.
    """
    sizes = (int(spec.latent_dim), *spec.latent_layers)
    options = dict(spec.latent_layer_options)
    unknown = sorted(set(options) - set(LAYER_DEFAULTS))
    if unknown:
        raise UsageError(
            f"model.latent_layer_options has no setting {unknown[0]!r}; valid settings: {', '.join(LAYER_DEFAULTS)}"
        )
    if not spec.latent_layers and options:
        raise UsageError(
            "model.latent_layer_options sets the networks between latent layers, but model.latent_layers "
            "is empty; add layers (e.g. --set model.latent_layers=[50]) or drop the options"
        )
    if not spec.latent_layers and spec.inference != "bottom_up":
        raise UsageError(
            f"model.inference = {spec.inference!r} orders the latent layers, but model.latent_layers is empty; "
            "add layers (e.g. --set model.latent_layers=[50]) or drop model.inference"
        )
    hidden = options.get("hidden", LAYER_DEFAULTS["hidden"])
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if not (isinstance(hidden, list) and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
        raise UsageError(
            f"model.latent_layer_options.hidden must be a list of positive layer sizes ([] for a linear map), "
            f"got {hidden!r}"
        )
    activation = options.get("activation", LAYER_DEFAULTS["activation"])
    plan = LayerPlan(sizes, latent_sites(len(sizes)), list(hidden), activation, spec.inference)
    if plan.hierarchical:
        if spec.guide != "diagonal":
            raise UsageError(
                f"model.guide = {spec.guide!r} cannot be combined with model.latent_layers yet: every layer "
                'of a hierarchical VAE has a diagonal Normal guide; use model.guide = "diagonal"'
            )
        if spec.prior == "vamp":
            raise UsageError(
                "prior 'vamp' cannot be the top layer of a hierarchical VAE (its pseudo-inputs would need the "
                "whole bottom-up chain); use another prior or drop model.latent_layers"
            )
        if spec.conditional:
            raise UsageError(
                "a conditional model cannot have model.latent_layers yet; set model.conditional = false "
                "or drop model.latent_layers"
            )
    return plan


def nearest_to_x(names) -> str:
    """The latent site next to x among ``names``: ``"z1"`` of a hierarchical VAE (whichever order
    its guide samples the layers in), else the only or first site."""
    return "z1" if "z1" in names else names[0]


def analytic_sites(model_order, guide_order) -> set[str]:
    """The latent sites whose KL may be taken in closed form, given the order the model and the guide sample them.

    The closed form KL(q(z_s | ...) || p(z_s | ...)) replaces the expectation over z_s with
    every other site held at its draw. That is exact only when the model's distribution of
    z_s is computed from sites the guide drew *before* z_s: a site the guide draws after
    z_s depends on z_s, so holding it fixed would drop part of the expectation. A model's
    distribution of z_s can only depend on sites the model samples before it, which gives
    a rule that needs nothing but the two orders: z_s qualifies when every site the model
    samples before z_s is sampled before z_s by the guide too.

    Examples
    --------
    Bottom-up inference (the guide samples z1 first, the model z2 first): only z2.

    >>> sorted(analytic_sites(["z2", "z1"], ["z1", "z2"]))
    ['z2']
    >>> sorted(analytic_sites(["z"], ["z"]))
    ['z']
    """
    position = {name: i for i, name in enumerate(guide_order)}
    allowed = set()
    for i, name in enumerate(model_order):
        if name in position and all(position.get(before, len(position)) < position[name] for before in model_order[:i]):
            allowed.add(name)
    return allowed


def dreg_refusal(sites) -> str:
    """Why ``dreg`` does not train a model with the latent sites ``sites``."""
    return (
        f"estimator 'dreg' trains a model with one latent site; this one has {len(sites)} "
        f"({', '.join(sites)}): train it with --elbo iwae (the same bound) or meanfield"
    )


def training_refusal(spec, elbo: str, backend: str) -> str | None:
    """Why a hierarchical ``spec`` cannot be trained with ``elbo`` on ``backend``, or ``None``.

    Checked with the rest of a configuration, before any run folder is written. Both
    backends train hierarchical VAEs; ``backend`` stays in the signature for refusals that
    hold on one of them only.
    """
    if not spec.latent_layers:
        return None
    if elbo == "dreg":
        return dreg_refusal(latent_sites(1 + len(spec.latent_layers)))
    return None


def precision_weighted(loc_a, scale_a, loc_b, scale_b, sqrt):
    """The (loc, scale) of the Normal proportional to N(loc_a, scale_a^2) N(loc_b, scale_b^2), per dimension.

    The ladder guide's combination of the bottom-up estimate with the model's top-down
    prior: precisions add, and the loc is the precision-weighted mean. Written once for both
    backends on their arrays (``sqrt`` is the backend's square root).

    Examples
    --------
    >>> import math
    >>> precision_weighted(0.0, 1.0, 2.0, 1.0, math.sqrt)
    (1.0, 0.7071067811865476)
    """
    precision_a, precision_b = scale_a**-2, scale_b**-2
    variance = 1.0 / (precision_a + precision_b)
    return (loc_a * precision_a + loc_b * precision_b) * variance, sqrt(variance)
