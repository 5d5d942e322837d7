"""The VampPrior for the NumPyro backend.

The priors of fixed form are written once, in :mod:`ppvae.model.priors`. The VampPrior
stays here because it passes its pseudo-inputs through the VAE's own encoder, an Equinox
network; it is called ``prior(encoder)`` (class attribute ``uses_encoder``), and
:func:`ppvae.model.priors.prior_distribution` makes the right call for any prior.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ppvae.model import settings
from ppvae.spec.registry import register

__all__ = ["VampPrior"]

BACKEND = "numpyro"


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
