"""Built-in priors p(z) of fixed form, written once for both backends.

Each is a :class:`~ppvae.model.portable.Portable`: its arrays are declared here and each
backend wraps it in its native module (``torch.nn.Module`` parameters and buffers for
Pyro, Equinox fields for NumPyro), under the same names, so weights convert between the
backends. The registry registers :data:`BUILT_IN` for every backend.

The VampPrior is not here: it passes pseudo-inputs through the VAE's own encoder, a
network of the backend, so each backend implements it (``backends/*/priors.py``).
"""

from __future__ import annotations

import numpy as np

from ppvae.model import settings
from ppvae.model.portable import Portable

__all__ = [
    "NormalPrior",
    "LaplacePrior",
    "StudentTPrior",
    "MixturePrior",
    "BUILT_IN",
    "uses_encoder",
    "prior_distribution",
]


def uses_encoder(prior) -> bool:
    """Whether ``prior`` is called with the VAE's encoder (``prior(encoder)``), as the VampPrior is."""
    return bool(getattr(prior, "uses_encoder", False))


def prior_distribution(prior, encoder):
    """p(z) of a VAE on either backend: ``prior(encoder)`` for a prior that uses the encoder, else ``prior()``.

    Parameters
    ----------
    prior, encoder
        The VAE's prior and encoder modules (``vae.prior, vae.encoder`` for Pyro;
        ``m["prior"], m["encoder"]`` for ``m = vae.with_params(params)`` in NumPyro).

    Returns
    -------
    Distribution
        The backend's distribution over one latent vector, event shape ``(latent_dim,)``.
    """
    return prior(encoder) if uses_encoder(prior) else prior()


class _LocScalePrior(Portable):
    """A location-scale family with fixed ``loc`` and ``scale`` on every latent dimension."""

    _name = ""
    _family = ""  # the distribution's name in the backend's distributions module

    def __init__(self, latent_dim, loc=0.0, scale=1.0):
        settings.positive("prior", self._name, "scale", scale)
        self.constant("loc", np.full(latent_dim, float(loc)))
        self.constant("scale", np.full(latent_dim, float(scale)))

    def distribution(self, dist, ops, p):
        return getattr(dist, self._family)(p["loc"], p["scale"]).to_event(1)


class NormalPrior(_LocScalePrior):
    """Standard (or shifted and scaled) diagonal Normal prior."""

    _name, _family = "normal", "Normal"


class LaplacePrior(_LocScalePrior):
    """Laplace(loc, scale) on every latent dimension (heavier tails and sparser codes than a Normal)."""

    _name, _family = "laplace", "Laplace"


class StudentTPrior(Portable):
    """Student-t(df, 0, scale) on every latent dimension; df fixed, or learned with learn_df = true."""

    def __init__(self, latent_dim, df=3.0, scale=1.0, learn_df=False):
        settings.positive("prior", "student_t", "df", df)
        settings.positive("prior", "student_t", "scale", scale)
        self.learn_df = settings.boolean("prior", "student_t", "learn_df", learn_df)
        self.constant("loc", np.zeros(latent_dim))
        self.constant("scale", np.full(latent_dim, float(scale)))
        # One df shared by every dimension, kept positive as exp(log_df).
        (self.param if self.learn_df else self.constant)("log_df", np.log(df))

    def distribution(self, dist, ops, p):
        return dist.StudentT(ops.exp(p["log_df"]), p["loc"], p["scale"]).to_event(1)


class MixturePrior(Portable):
    """Learned mixture of diagonal Gaussians: means, log-scales and mixture logits are trained."""

    def __init__(self, latent_dim, num_components=10, init_spread=1.0):
        k = settings.count("prior", "mog", "num_components", num_components)
        spread = settings.positive("prior", "mog", "init_spread", init_spread)
        # Means start spread out (N(0, init_spread^2)) so the components do not all see the
        # same gradient and stay on top of each other.
        self.param("means", np.float32(spread) * self.standard_normal((k, latent_dim)))
        self.param("log_scales", np.zeros((k, latent_dim)))
        self.param("logits", np.zeros(k))

    def distribution(self, dist, ops, p):
        components = dist.Normal(p["means"], ops.exp(p["log_scales"])).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=p["logits"]), components)


#: Registered name -> prior, for every backend.
BUILT_IN = {"normal": NormalPrior, "laplace": LaplacePrior, "student_t": StudentTPrior, "mog": MixturePrior}
