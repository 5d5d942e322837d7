"""Closed-form KL divergences that torch has and NumPyro lacks, added to NumPyro's ``kl_divergence``.

With them the analytic-KL ELBO ("meanfield") of a Laplace prior is computed the same way
on both backends; pairs without a closed form fall back to the sampled estimate in
:mod:`.objectives`, as in the Pyro backend.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import erf
from numpyro.distributions.kl import kl_divergence

__all__ = ["kl_normal_laplace"]


def kl_normal_laplace(p: dist.Normal, q: dist.Laplace):
    """KL(N(mu, sigma^2) || Laplace(m, b)), elementwise (torch's formula).

    ``E_p |z - m| = sigma sqrt(2/pi) exp(-d^2 / (2 sigma^2)) + d erf(d / (sigma sqrt 2))``
    with ``d = mu - m``; the KL is ``log(b / sigma) + E_p |z - m| / b - (1 + log(pi / 2)) / 2``.
    """
    loc_diff = p.loc - q.loc
    ratio = loc_diff / p.scale
    abs_mean = math.sqrt(2 / math.pi) * p.scale * jnp.exp(-0.5 * ratio**2) + loc_diff * erf(math.sqrt(0.5) * ratio)
    return -jnp.log(p.scale / q.scale) + abs_mean / q.scale - 0.5 * (1 + math.log(0.5 * math.pi))


kl_divergence.add((dist.Normal, dist.Laplace), kl_normal_laplace)
