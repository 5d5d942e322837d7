"""Built-in priors and likelihoods for the NumPyro backend (mirrors of the Pyro ones).

Components are Equinox modules: their array fields are the parameters NumPyro learns
(registered with ``numpyro.contrib.module.eqx_module``). Constants such as a prior's
loc and scale are arrays too, wrapped in ``stop_gradient`` where they are used, so
they stay fixed; their names match the Pyro backend's buffers for weight conversion.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ...errors import UsageError
from ...registry import register

BACKEND = "numpyro"
SCALE_MODES = ("fixed", "shared", "per_dim")


@register("prior", "normal", backend=BACKEND)
class NormalPrior(eqx.Module):
    """Standard (or shifted and scaled) diagonal Normal prior."""

    loc: jax.Array
    scale: jax.Array

    def __init__(self, latent_dim, loc=0.0, scale=1.0, *, key=None):
        if not scale > 0:
            raise UsageError(f"prior 'normal' needs scale > 0, got {scale!r}")
        self.loc = jnp.full((latent_dim,), float(loc))
        self.scale = jnp.full((latent_dim,), float(scale))

    def __call__(self) -> dist.Distribution:
        return dist.Normal(jax.lax.stop_gradient(self.loc), jax.lax.stop_gradient(self.scale)).to_event(1)


class Likelihood(eqx.Module):
    """Base class: ``__call__(params)`` returns a distribution over one datapoint."""

    event_shape: tuple = eqx.field(static=True)

    support = "real"

    @property
    def param_shape(self) -> tuple:
        return self.event_shape

    def mean(self, params):
        """Mean of p(x|z), used for reconstructions and samples."""
        return self(params).mean


@register("likelihood", "bernoulli", backend=BACKEND)
class BernoulliLikelihood(Likelihood):
    """Bernoulli on each value (binary data; on grey levels it is the cross-entropy loss)."""

    support = "unit_interval"

    def __init__(self, event_shape, *, key=None):
        self.event_shape = tuple(event_shape)

    def __call__(self, params):
        # validate_args off: grey levels in [0, 1] are scored by cross-entropy, as in the
        # Pyro backend; the data checks reject values outside [0, 1].
        return dist.BernoulliLogits(params, validate_args=False).to_event(len(self.event_shape))

    def mean(self, params):
        return jax.nn.sigmoid(params)


@register("likelihood", "continuous_bernoulli", backend=BACKEND)
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli: a proper density for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    support = "unit_interval"

    def __init__(self, event_shape, *, key=None):
        self.event_shape = tuple(event_shape)

    def __call__(self, params):
        return _ContinuousBernoulli(params, validate_args=False).to_event(len(self.event_shape))


@register("likelihood", "normal", backend=BACKEND)
class NormalLikelihood(Likelihood):
    """Gaussian with the decoder output as mean; scale fixed, learned shared, or learned per dimension."""

    log_scale: jax.Array
    scale_mode: str = eqx.field(static=True)

    def __init__(self, event_shape, scale_mode="shared", scale=1.0, *, key=None):
        if scale_mode not in SCALE_MODES:
            raise UsageError(
                f"likelihood 'normal' scale_mode = {scale_mode!r} is not valid; choose one of: {', '.join(SCALE_MODES)}"
            )
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise UsageError(f"likelihood 'normal' needs scale > 0, got {scale!r}")
        self.event_shape = tuple(event_shape)
        self.scale_mode = scale_mode
        shape = self.event_shape if scale_mode == "per_dim" else ()
        self.log_scale = jnp.full(shape, math.log(scale), dtype=jnp.float32)

    @property
    def scale(self):
        log_scale = jax.lax.stop_gradient(self.log_scale) if self.scale_mode == "fixed" else self.log_scale
        return jnp.exp(log_scale)

    def __call__(self, params):
        return dist.Normal(params, jnp.broadcast_to(self.scale, self.event_shape)).to_event(len(self.event_shape))

    def mean(self, params):
        return params


class _ContinuousBernoulli(dist.Distribution):
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
            safe <= 0.5, jnp.log1p(-2.0 * below), jnp.log(2.0 * above - 1.0))
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
