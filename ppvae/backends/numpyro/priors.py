"""Built-in priors p(z) for the NumPyro backend (mirrors of the Pyro ones).

Priors are Equinox modules: their array fields are parameters that NumPyro learns
(registered with ``numpyro.contrib.module.eqx_module``). Constants such as a prior's loc
and scale are arrays too, wrapped in ``stop_gradient`` where they are used, so they stay
fixed; their names match the Pyro backend's parameters and buffers for weight
conversion. A prior whose class attribute ``uses_encoder`` is true (the VampPrior) is
called ``prior(encoder)`` with the VAE's own encoder; :func:`prior_distribution` makes the
right call for any prior.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ppvae.spec.registry import register
from ppvae.model import settings

__all__ = ["NormalPrior", "LaplacePrior", "StudentTPrior", "MixturePrior", "VampPrior",
           "prior_distribution", "uses_encoder"]

BACKEND = "numpyro"
_fixed = jax.lax.stop_gradient


def uses_encoder(prior) -> bool:
    """Whether ``prior`` is called with the VAE's encoder (``prior(encoder)``)."""
    return bool(getattr(prior, "uses_encoder", False))


def prior_distribution(prior, encoder) -> dist.Distribution:
    """p(z) of a VAE: ``prior(encoder)`` for a prior that uses the encoder, else ``prior()``.

    Parameters
    ----------
    prior, encoder : equinox.Module
        The VAE's prior and encoder, e.g. ``m["prior"], m["encoder"]`` for
        ``m = vae.with_params(params)``.

    Returns
    -------
    numpyro.distributions.Distribution
        A distribution over one latent vector, event shape ``(latent_dim,)``.
    """
    return prior(encoder) if uses_encoder(prior) else prior()


@register("prior", "normal", backend=BACKEND)
class NormalPrior(eqx.Module):
    """Standard (or shifted and scaled) diagonal Normal prior."""

    loc: jax.Array
    scale: jax.Array

    def __init__(self, latent_dim, loc=0.0, scale=1.0, *, key=None):
        settings.positive("prior", "normal", "scale", scale)
        self.loc = jnp.full((latent_dim,), float(loc))
        self.scale = jnp.full((latent_dim,), float(scale))

    def __call__(self) -> dist.Distribution:
        return dist.Normal(_fixed(self.loc), _fixed(self.scale)).to_event(1)


@register("prior", "laplace", backend=BACKEND)
class LaplacePrior(eqx.Module):
    """Laplace(loc, scale) on every latent dimension (heavier tails and sparser codes than a Normal)."""

    loc: jax.Array
    scale: jax.Array

    def __init__(self, latent_dim, loc=0.0, scale=1.0, *, key=None):
        settings.positive("prior", "laplace", "scale", scale)
        self.loc = jnp.full((latent_dim,), float(loc))
        self.scale = jnp.full((latent_dim,), float(scale))

    def __call__(self) -> dist.Distribution:
        return dist.Laplace(_fixed(self.loc), _fixed(self.scale)).to_event(1)


@register("prior", "student_t", backend=BACKEND)
class StudentTPrior(eqx.Module):
    """Student-t(df, 0, scale) on every latent dimension; df fixed, or learned with learn_df = true."""

    loc: jax.Array
    scale: jax.Array
    log_df: jax.Array
    learn_df: bool = eqx.field(static=True)

    def __init__(self, latent_dim, df=3.0, scale=1.0, learn_df=False, *, key=None):
        settings.positive("prior", "student_t", "df", df)
        settings.positive("prior", "student_t", "scale", scale)
        self.learn_df = settings.boolean("prior", "student_t", "learn_df", learn_df)
        self.loc = jnp.zeros((latent_dim,))
        self.scale = jnp.full((latent_dim,), float(scale))
        # One df shared by every dimension, kept positive as exp(log_df).
        self.log_df = jnp.asarray(math.log(df), dtype=jnp.float32)

    @property
    def df(self) -> jax.Array:
        return jnp.exp(self.log_df if self.learn_df else _fixed(self.log_df))

    def __call__(self) -> dist.Distribution:
        return dist.StudentT(self.df, _fixed(self.loc), _fixed(self.scale)).to_event(1)


@register("prior", "mog", backend=BACKEND)
class MixturePrior(eqx.Module):
    """Learned mixture of diagonal Gaussians: means, log-scales and mixture logits are trained."""

    means: jax.Array
    log_scales: jax.Array
    logits: jax.Array

    def __init__(self, latent_dim, num_components=10, init_spread=1.0, *, key=None):
        k = settings.count("prior", "mog", "num_components", num_components)
        spread = settings.positive("prior", "mog", "init_spread", init_spread)
        key = jax.random.PRNGKey(0) if key is None else key
        # Means start spread out (N(0, init_spread^2)) so the components do not all see the
        # same gradient and stay on top of each other.
        self.means = spread * jax.random.normal(key, (k, latent_dim))
        self.log_scales = jnp.zeros((k, latent_dim))
        self.logits = jnp.zeros((k,))

    def __call__(self) -> dist.Distribution:
        components = dist.Normal(self.means, jnp.exp(self.log_scales)).to_event(1)
        return dist.MixtureSameFamily(dist.CategoricalLogits(self.logits), components)


@register("prior", "vamp", backend=BACKEND)
class VampPrior(eqx.Module):
    """VampPrior: p(z) = 1/K sum_k q(z|u_k), a mixture of the encoder's posteriors at K learned pseudo-inputs.

    The settings and the parameter ``raw_inputs`` (K, *event_shape) are those of the Pyro
    backend's ``VampPrior``: ``num_components`` (K, default 50) and ``data_support``
    (``"auto"``: the likelihood's support; pseudo-inputs are ``sigmoid(raw)`` for
    ``"unit_interval"``, ``softplus(raw)`` for ``"count"``, ``raw`` for ``"real"``). It is
    called as ``prior(encoder)`` with the VAE's encoder, whose parameters it shares.
    """

    raw_inputs: jax.Array
    data_support: str = eqx.field(static=True)

    uses_encoder = True

    def __init__(self, latent_dim, event_shape, num_components=50, data_support="auto", *, key=None):
        k = settings.count("prior", "vamp", "num_components", num_components)
        self.data_support = settings.pseudo_input_support(data_support)
        key = jax.random.PRNGKey(0) if key is None else key
        # raw ~ N(0, 1): sigmoid(raw) spreads over mid-grey images, different for every u_k.
        self.raw_inputs = jax.random.normal(key, (k, *tuple(event_shape)))

    @property
    def pseudo_inputs(self) -> jax.Array:
        """The pseudo-inputs u_k in the data's space, shape (K, *event_shape)."""
        if self.data_support == "unit_interval":
            return jax.nn.sigmoid(self.raw_inputs)
        if self.data_support == "count":
            return jax.nn.softplus(self.raw_inputs)
        return self.raw_inputs

    def __call__(self, encoder) -> dist.Distribution:
        # The encoder's diagonal Normal at each u_k, as in the Pyro backend.
        loc, scale = encoder(self.pseudo_inputs)[:2]
        weights = jnp.zeros(loc.shape[0], dtype=loc.dtype)  # uniform 1/K
        return dist.MixtureSameFamily(dist.CategoricalLogits(weights), dist.Normal(loc, scale).to_event(1))
