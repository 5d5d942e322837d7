"""The VAE as a NumPyro model/guide pair, following the same contract as the Pyro backend.

Sites ``"z"`` and ``"x"`` sit in one plate ``"data"`` sized to the full dataset;
``handlers.scale(scale=beta)`` wraps ``"z"`` in both the model and the guide. The networks
and components are Equinox modules registered with ``eqx_module``, so their arrays are
NumPyro params that ``numpyro.infer.SVI`` (or ppvae's trainer) optimizes.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.contrib.module import eqx_module
from numpyro.primitives import Messenger

from ... import registry
from ...config import ModelSpec

BACKEND = "numpyro"
PARTS = ("prior", "likelihood", "encoder", "decoder")


class _GivenSubsample(Messenger):
    """Hands the ``"data"`` plate its subsample indices (the batch rows, in order).

    Without it NumPyro would draw a random subsample of the whole dataset at every step
    (a shuffle of all N indices); the batch is already a subsample, so only the scale
    N / B is wanted.
    """

    def __init__(self, indices):
        self.indices = indices
        super().__init__()

    def process_message(self, msg):
        if msg["type"] == "plate" and msg["name"] == "data":
            msg["value"] = self.indices


def _has_params(module) -> bool:
    return bool(jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array)))


class VAE:
    """A VAE built from registered components (NumPyro backend).

    Parameters
    ----------
    prior, likelihood, encoder, decoder : equinox.Module
        Components with their initial parameters.
    event_shape : tuple of int
        Shape of one datapoint.
    latent_dim : int
        Size of z.
    dataset_size : int, optional
        Full dataset size N; a batch of B points is scaled by N / B.
    """

    def __init__(self, prior, likelihood, encoder, decoder, event_shape, latent_dim, dataset_size=None):
        self.modules = {"prior": prior, "likelihood": likelihood, "encoder": encoder, "decoder": decoder}
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.dataset_size = dataset_size

    # -- registration -------------------------------------------------------------------
    def _part(self, name: str):
        module = self.modules[name]
        return eqx_module(name, module) if _has_params(module) else module

    def with_params(self, params: dict) -> dict:
        """The modules with parameter values from a params dict (``"<part>$params"`` keys)."""
        out = {}
        for name, module in self.modules.items():
            key = f"{name}$params"
            out[name] = eqx.combine(params[key], eqx.partition(module, eqx.is_inexact_array)[1]) \
                if key in params else module
        return out

    def _plate(self, x):
        batch = x.shape[0]
        size = self.dataset_size or batch
        with _GivenSubsample(jnp.arange(batch)):
            return numpyro.plate("data", size, subsample_size=batch, dim=-1)

    # -- the probabilistic program ----------------------------------------------------------------
    def model(self, x, beta=1.0):
        """p(z) p(x|z): decoder likelihood with the prior, β around ``"z"``."""
        prior, likelihood, decoder = self._part("prior"), self._part("likelihood"), self._part("decoder")
        with self._plate(x):
            with handlers.scale(scale=beta):
                z = numpyro.sample("z", prior())
            numpyro.sample("x", likelihood(decoder(z)), obs=x)
        return z

    def guide(self, x, beta=1.0):
        """q(z|x): the amortized encoder, β around ``"z"`` as in the model."""
        encoder = self._part("encoder")
        with self._plate(x):
            loc, scale = encoder(x)
            with handlers.scale(scale=beta):
                return numpyro.sample("z", dist.Normal(loc, scale).to_event(1))


def build_vae(spec: ModelSpec, event_shape, key, dataset_size: int | None = None) -> VAE:
    """Build a :class:`VAE` from a spec; ``key`` seeds the initial weights."""
    event_shape = tuple(event_shape)
    keys = dict(zip(PARTS, jax.random.split(key, len(PARTS))))

    def make(kind: str, **structural):
        comp = registry.get(kind, getattr(spec, kind), BACKEND)
        options = registry.resolve_options(kind, comp.name, BACKEND, spec.options(kind))
        return comp.factory(**structural, **options, key=keys[kind])

    likelihood = make("likelihood", event_shape=event_shape)
    prior = make("prior", latent_dim=spec.latent_dim)
    encoder = make("encoder", event_shape=event_shape, latent_dim=spec.latent_dim)
    decoder = make("decoder", latent_dim=spec.latent_dim, param_shape=likelihood.param_shape)
    return VAE(prior, likelihood, encoder, decoder, event_shape, spec.latent_dim, dataset_size=dataset_size)


def initial_params(vae: VAE) -> dict:
    """The params dict (``"<part>$params"`` -> parameter pytree) of the initial modules."""
    return {f"{name}$params": eqx.filter(module, eqx.is_inexact_array)
            for name, module in vae.modules.items() if _has_params(module)}
