"""Built-in priors p(z) for the Pyro backend.

A prior is a module that returns a distribution over one latent vector (event shape
``(latent_dim,)``). Most priors are called ``prior()``. A prior whose class attribute
``uses_encoder`` is true (the VampPrior) is called ``prior(encoder)`` with the VAE's own
encoder, whose parameters it shares and never copies; :func:`prior_distribution` makes
the right call for any prior. Parameter and buffer names match the NumPyro backend's
fields, so weights convert between the backends.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.spec.registry import register
from ppvae.model import settings

__all__ = ["NormalPrior", "LaplacePrior", "StudentTPrior", "MixturePrior", "VampPrior",
           "prior_distribution", "uses_encoder"]

BACKEND = "pyro"


def uses_encoder(prior) -> bool:
    """Whether ``prior`` is called with the VAE's encoder (``prior(encoder)``)."""
    return bool(getattr(prior, "uses_encoder", False))


def prior_distribution(prior: nn.Module, encoder: nn.Module) -> dist.Distribution:
    """p(z) of a VAE: ``prior(encoder)`` for a prior that uses the encoder, else ``prior()``.

    Parameters
    ----------
    prior, encoder : torch.nn.Module
        The VAE's prior and encoder (``vae.prior``, ``vae.encoder``).

    Returns
    -------
    pyro.distributions.Distribution
        A distribution over one latent vector, event shape ``(latent_dim,)``.
    """
    return prior(encoder) if uses_encoder(prior) else prior()


@register("prior", "normal", backend=BACKEND)
class NormalPrior(nn.Module):
    """Standard (or shifted and scaled) diagonal Normal prior."""

    def __init__(self, latent_dim, loc=0.0, scale=1.0):
        super().__init__()
        settings.positive("prior", "normal", "scale", scale)
        self.register_buffer("loc", torch.full((latent_dim,), float(loc)))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@register("prior", "laplace", backend=BACKEND)
class LaplacePrior(nn.Module):
    """Laplace(loc, scale) on every latent dimension (heavier tails and sparser codes than a Normal)."""

    def __init__(self, latent_dim, loc=0.0, scale=1.0):
        super().__init__()
        settings.positive("prior", "laplace", "scale", scale)
        self.register_buffer("loc", torch.full((latent_dim,), float(loc)))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def forward(self) -> dist.Distribution:
        return dist.Laplace(self.loc, self.scale).to_event(1)


@register("prior", "student_t", backend=BACKEND)
class StudentTPrior(nn.Module):
    """Student-t(df, 0, scale) on every latent dimension; df fixed, or learned with learn_df = true."""

    def __init__(self, latent_dim, df=3.0, scale=1.0, learn_df=False):
        super().__init__()
        settings.positive("prior", "student_t", "df", df)
        settings.positive("prior", "student_t", "scale", scale)
        settings.boolean("prior", "student_t", "learn_df", learn_df)
        self.learn_df = bool(learn_df)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))
        # One df shared by every dimension, kept positive as exp(log_df).
        log_df = torch.tensor(math.log(df))
        if self.learn_df:
            self.log_df = nn.Parameter(log_df)
        else:
            self.register_buffer("log_df", log_df)

    @property
    def df(self) -> torch.Tensor:
        return self.log_df.exp()

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)


@register("prior", "mog", backend=BACKEND)
class MixturePrior(nn.Module):
    """Learned mixture of diagonal Gaussians: means, log-scales and mixture logits are trained."""

    def __init__(self, latent_dim, num_components=10, init_spread=1.0):
        super().__init__()
        settings.count("prior", "mog", "num_components", num_components)
        settings.positive("prior", "mog", "init_spread", init_spread)
        # Means start spread out (N(0, init_spread^2)) so the components do not all see the
        # same gradient and stay on top of each other.
        self.means = nn.Parameter(float(init_spread) * torch.randn(int(num_components), latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(int(num_components), latent_dim))
        self.logits = nn.Parameter(torch.zeros(int(num_components)))

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.means, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


@register("prior", "vamp", backend=BACKEND)
class VampPrior(nn.Module):
    """VampPrior: p(z) = 1/K sum_k q(z|u_k), a mixture of the encoder's posteriors at K learned pseudo-inputs.

    Parameters
    ----------
    latent_dim : int
        Size of z.
    event_shape : tuple of int
        Shape of one datapoint (and of one pseudo-input).
    num_components : int, default 50
        K, the number of pseudo-inputs.
    data_support : {"auto", "unit_interval", "real", "count"}, default "auto"
        Where the pseudo-inputs live. ``"auto"`` takes the likelihood's support (the model
        builder resolves it). For ``"unit_interval"`` a pseudo-input is ``sigmoid(raw)``, so
        it stays in [0, 1] like the data; for ``"count"`` it is ``softplus(raw)`` (>= 0);
        for ``"real"`` it is ``raw`` itself.

    Notes
    -----
    The prior holds only the raw pseudo-inputs ``raw_inputs`` (K, *event_shape); it is
    called as ``prior(encoder)`` with the VAE's encoder, so the encoder's weights are
    shared (gradients of log p(z) reach them) and never copied. The mixture components
    are the encoder's diagonal Normals N(loc(u_k), scale(u_k)), whichever guide family
    the VAE uses. A conditional VAE cannot use it (its encoder also needs a label).
    """

    uses_encoder = True

    def __init__(self, latent_dim, event_shape, num_components=50, data_support="auto"):
        super().__init__()
        settings.count("prior", "vamp", "num_components", num_components)
        self.data_support = settings.pseudo_input_support(data_support)
        self.latent_dim = int(latent_dim)
        # raw ~ N(0, 1): sigmoid(raw) spreads over mid-grey images, different for every u_k.
        self.raw_inputs = nn.Parameter(torch.randn(int(num_components), *tuple(event_shape)))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_k in the data's space, shape (K, *event_shape)."""
        if self.data_support == "unit_interval":
            return torch.sigmoid(self.raw_inputs)
        if self.data_support == "count":
            return F.softplus(self.raw_inputs)
        return self.raw_inputs

    def forward(self, encoder: nn.Module) -> dist.Distribution:
        # The encoder's diagonal Normal at each u_k; outputs a guide family asked for
        # beyond loc and scale (low-rank factors, flow context) are not used.
        loc, scale = encoder(self.pseudo_inputs)[:2]
        weights = torch.zeros(loc.shape[0], dtype=loc.dtype, device=loc.device)  # uniform 1/K
        return dist.MixtureSameFamily(dist.Categorical(logits=weights), dist.Normal(loc, scale).to_event(1))
