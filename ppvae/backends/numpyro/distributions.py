"""The distributions ppvae adds to ``numpyro.distributions`` for its built-in likelihoods.

They subclass NumPyro's own distribution classes (their pytree, ``expand`` and
``log_prob`` machinery is the library's), so each backend writes them in its own library;
the likelihoods that use them are written once, in :mod:`ppvae.model.likelihoods`.
Where NumPyro's formulas differ from PyTorch's, the log densities still agree to float32
precision (tests/test_components.py checks it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = ["SqueezedBeta", "GreyLevels", "ContinuousBernoulli"]


class SqueezedBeta(dist.Beta):
    """A Beta distribution that scores values clamped into [eps, 1 - eps] (blank pixels are exactly 0)."""

    pytree_aux_fields = ("eps",)

    def __init__(self, concentration1, concentration0, eps, *, validate_args=None):
        self.eps = eps
        super().__init__(concentration1, concentration0, validate_args=validate_args)

    def log_prob(self, value):
        return super().log_prob(jnp.clip(value, self.eps, 1.0 - self.eps))


class GreyLevels(dist.CategoricalLogits):
    """A categorical over L grey levels, observed as values in [0, 1]: x is level round((L - 1) x)."""

    support = dist.constraints.unit_interval
    has_enumerate_support = False

    def _level(self, value):
        levels = jnp.shape(self.logits)[-1]
        return jnp.clip(jnp.round(value * (levels - 1)), 0, levels - 1).astype(jnp.int32)

    def log_prob(self, value):
        level = self._level(value)
        logits = self.logits - jax.scipy.special.logsumexp(self.logits, axis=-1, keepdims=True)
        batch = jax.lax.broadcast_shapes(jnp.shape(level), jnp.shape(logits)[:-1])
        level = jnp.broadcast_to(level[..., None], batch + (1,))
        log_pmf = jnp.broadcast_to(logits, batch + jnp.shape(logits)[-1:])
        return jnp.take_along_axis(log_pmf, level, axis=-1)[..., 0]

    @property
    def mean(self):
        levels = jnp.shape(self.logits)[-1]
        return (self.probs * jnp.arange(levels, dtype=self.probs.dtype)).sum(-1) / (levels - 1)

    def sample(self, key, sample_shape=()):
        levels = jnp.shape(self.logits)[-1]
        return super().sample(key, sample_shape).astype(self.logits.dtype) / (levels - 1)


class ContinuousBernoulli(dist.Distribution):
    """The continuous Bernoulli distribution on [0, 1] with logits (NumPyro has none).

    log p(x) = x log(p) + (1 - x) log(1 - p) + log C(p), with the normalizer
    C(p) = 2 atanh(1 - 2p) / (1 - 2p) for p != 1/2 and C = 2 at p = 1/2. As in
    torch.distributions.ContinuousBernoulli, a Taylor expansion is used for p near 1/2.
    """

    arg_constraints = {"logits": dist.constraints.real}
    support = dist.constraints.unit_interval
    # Half-width of the band around p = 1/2 where the Taylor expansion is used (torch's value).
    lims = (0.499, 0.501)

    def __init__(self, logits, *, validate_args=None):
        self.logits = logits
        super().__init__(batch_shape=jnp.shape(logits), validate_args=validate_args)

    def _probs(self):
        # Clamped away from 0 and 1 as torch does, so the normalizer stays finite.
        eps = jnp.finfo(jnp.result_type(self.logits)).eps
        return jnp.clip(jax.nn.sigmoid(self.logits), eps, 1 - eps)

    def _outside(self, probs):
        return (probs < self.lims[0]) | (probs > self.lims[1])

    def _log_normalizer(self):
        probs = self._probs()
        outside = self._outside(probs)
        safe = jnp.where(outside, probs, self.lims[0] * jnp.ones_like(probs))
        # Each branch of the where sees only values valid for it, so no NaN reaches the gradient.
        below = jnp.where(safe <= 0.5, safe, 0.0)
        above = jnp.where(safe >= 0.5, safe, 1.0)
        log_norm = jnp.log(jnp.abs(jnp.log1p(-safe) - jnp.log(safe))) - jnp.where(
            safe <= 0.5, jnp.log1p(-2.0 * below), jnp.log(2.0 * above - 1.0)
        )
        x = (probs - 0.5) ** 2
        taylor = jnp.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * x) * x
        return jnp.where(outside, log_norm, taylor)

    def log_prob(self, value):
        # x*logits - softplus(logits) is the Bernoulli cross-entropy term.
        bce = value * self.logits - jax.nn.softplus(self.logits)
        return bce + self._log_normalizer()

    @property
    def mean(self):
        probs = self._probs()
        outside = self._outside(probs)
        safe = jnp.where(outside, probs, self.lims[0] * jnp.ones_like(probs))
        mus = safe / (2.0 * safe - 1.0) + 1.0 / (jnp.log1p(-safe) - jnp.log(safe))
        x = probs - 0.5
        taylor = 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * x**2) * x
        return jnp.where(outside, mus, taylor)

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, sample_shape + self.batch_shape, minval=1e-6, maxval=1 - 1e-6)
        probs = self._probs()
        outside = self._outside(probs)
        safe = jnp.where(outside, probs, self.lims[0] * jnp.ones_like(probs))
        icdf = (jnp.log1p(-safe + u * (2.0 * safe - 1.0)) - jnp.log1p(-safe)) / (jnp.log(safe) - jnp.log1p(-safe))
        return jnp.where(outside, icdf, u)
