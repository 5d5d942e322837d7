"""The VAE as a Pyro model/guide pair, following the ppvae model contract.

- Sample sites ``"z"`` (latent) and ``"x"`` (observed) sit in one plate ``"data"`` whose
  size is the full dataset, so a minibatch objective is scaled to the whole dataset.
- β weights the KL through ``poutine.scale(scale=beta)`` around ``"z"`` in **both** the
  model and the guide, so the objective is ``reconstruction + β·KL`` (wrapping only the
  model's site would give ``β·log p(z) - log q(z|x)``, which is not β·KL).

``model`` and ``guide`` are ordinary Pyro callables: pass them to ``pyro.infer.SVI``,
``Predictive`` or ``Importance``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ...config import ModelSpec
from ... import registry

BACKEND = "pyro"


class VAE(nn.Module):
    """A VAE built from registered components.

    Parameters
    ----------
    prior, likelihood, encoder, decoder : torch.nn.Module
        Components (see :mod:`ppvae.registry`).
    event_shape : tuple of int
        Shape of one datapoint.
    latent_dim : int
        Size of z.
    dataset_size : int, optional
        Full dataset size N; a minibatch of B points is scaled by N / B. Defaults to the
        batch size (no scaling).
    register_params : bool
        Register the networks' parameters with Pyro's param store inside ``model`` and
        ``guide`` (``pyro.module``), as ``pyro.infer.SVI`` with a ``pyro.optim`` optimizer
        needs. ppvae's own trainer optimizes ``self.parameters()`` directly and turns this
        off to skip the param-store round trip on every step.

    Examples
    --------
    >>> import pyro, torch
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from ppvae.config import ModelSpec
    >>> vae = build_vae(ModelSpec(latent_dim=2), event_shape=(4,), support_check=False)
    >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    >>> loss = svi.step(torch.rand(8, 4).round())
    """

    def __init__(self, prior: nn.Module, likelihood: nn.Module, encoder: nn.Module,
                 decoder: nn.Module, event_shape, latent_dim: int, dataset_size: int | None = None,
                 register_params: bool = True):
        super().__init__()
        self.prior = prior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.dataset_size = dataset_size
        self.register_params = register_params
        self.beta = 1.0

    # -- pieces -------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """The amortized q(z|x): a diagonal Normal with the encoder's loc and scale."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """p(x|z) for a batch of latents."""
        return self.likelihood(self.decoder(z))

    def _plate(self, x: torch.Tensor):
        batch = x.shape[0]
        size = self.dataset_size or batch
        # An explicit subsample of the batch rows: the plate scales by size / batch
        # without drawing random indices of its own.
        return pyro.plate("data", size=size, subsample=torch.arange(batch, device=x.device), dim=-1)

    # -- the probabilistic program ------------------------------------------------------------
    def model(self, x: torch.Tensor, beta: float | torch.Tensor | None = None) -> torch.Tensor:
        """p(z) p(x|z): decoder likelihood with the prior, β around ``"z"``."""
        beta = self.beta if beta is None else beta
        if self.register_params:
            pyro.module("ppvae_decoder", self.decoder)
            pyro.module("ppvae_likelihood", self.likelihood)
            pyro.module("ppvae_prior", self.prior)
        with self._plate(x):
            with poutine.scale(scale=beta):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.observation(z), obs=x)
        return z

    def guide(self, x: torch.Tensor, beta: float | torch.Tensor | None = None) -> torch.Tensor:
        """q(z|x): the amortized encoder, β around ``"z"`` as in the model."""
        beta = self.beta if beta is None else beta
        if self.register_params:
            pyro.module("ppvae_encoder", self.encoder)
        with self._plate(x):
            q = self.posterior(x)
            with poutine.scale(scale=beta):
                return pyro.sample("z", q)

    # -- everyday uses -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of p(x|z) for ``n`` draws z ~ p(z)."""
        z = self.prior().sample((n,))
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) for given latents."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at the posterior mean of z."""
        loc, _ = self.encoder(x)
        return self.decode(loc)


def build_vae(spec: ModelSpec, event_shape, dataset_size: int | None = None,
              register_params: bool = True, support_check: bool = True) -> VAE:
    """Build a :class:`VAE` from a :class:`~ppvae.config.ModelSpec`.

    Component names and settings are validated against the registry; unknown ones raise
    :class:`~ppvae.errors.UsageError` listing the valid choices.
    """
    event_shape = tuple(event_shape)

    def make(kind: str, **structural):
        comp = registry.get(kind, getattr(spec, kind), BACKEND)
        options = registry.resolve_options(kind, comp.name, BACKEND, spec.options(kind))
        return comp.factory(**structural, **options)

    likelihood = make("likelihood", event_shape=event_shape)
    prior = make("prior", latent_dim=spec.latent_dim)
    encoder = make("encoder", event_shape=event_shape, latent_dim=spec.latent_dim)
    decoder = make("decoder", latent_dim=spec.latent_dim, param_shape=likelihood.param_shape)
    return VAE(prior, likelihood, encoder, decoder, event_shape, spec.latent_dim,
               dataset_size=dataset_size, register_params=register_params)

