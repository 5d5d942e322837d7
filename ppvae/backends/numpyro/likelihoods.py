"""Built-in likelihoods p(x|z) for the NumPyro backend (mirrors of the Pyro ones).

A likelihood is an Equinox module whose ``__call__(params)`` turns the decoder's output
into a distribution over one datapoint; ``param_shape`` (``event_shape``, or
``(k, *event_shape)`` for k parameters per value, first) tells the decoder how many outputs
to produce and ``support`` (``"unit_interval"``, ``"real"`` or ``"count"``) which data is
valid. Array fields are parameters; their names match the Pyro backend's for weight
conversion. Where NumPyro's distributions differ from Pyro's formulas the log densities
still agree to float32 precision (tests/test_components.py checks it).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ppvae.spec.registry import register
from ppvae.model import settings

__all__ = ["Likelihood", "BernoulliLikelihood", "ContinuousBernoulliLikelihood", "NormalLikelihood",
           "LaplaceLikelihood", "BetaLikelihood", "CategoricalLikelihood", "PoissonLikelihood",
           "NegativeBinomialLikelihood", "ZINBLikelihood"]

BACKEND = "numpyro"
SCALE_MODES = settings.SCALE_MODES
#: Added to softplus outputs that must be strictly positive (as in the Pyro backend).
MIN_POSITIVE = 1e-6


def _positive(out):
    return jax.nn.softplus(out) + MIN_POSITIVE


class Likelihood(eqx.Module):
    """Base class: ``__call__(params)`` returns a distribution over one datapoint."""

    event_shape: tuple = eqx.field(static=True)

    support = "real"

    @property
    def param_shape(self) -> tuple:
        return self.event_shape

    @property
    def event_dim(self) -> int:
        return len(self.event_shape)

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
        return dist.BernoulliLogits(params, validate_args=False).to_event(self.event_dim)

    def mean(self, params):
        return jax.nn.sigmoid(params)


@register("likelihood", "continuous_bernoulli", backend=BACKEND)
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli: a proper density for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    support = "unit_interval"

    def __init__(self, event_shape, *, key=None):
        self.event_shape = tuple(event_shape)

    def __call__(self, params):
        return ContinuousBernoulliDistribution(params, validate_args=False).to_event(self.event_dim)


class _LocScaleLikelihood(Likelihood):
    """The decoder output is the location; the scale is fixed, learned shared, or learned per value."""

    log_scale: jax.Array
    scale_mode: str = eqx.field(static=True)

    support = "real"
    _name = ""

    def __init__(self, event_shape, scale_mode="shared", scale=1.0, *, key=None):
        settings.choice("likelihood", self._name, "scale_mode", scale_mode, SCALE_MODES)
        settings.positive("likelihood", self._name, "scale", scale)
        self.event_shape = tuple(event_shape)
        self.scale_mode = scale_mode
        shape = self.event_shape if scale_mode == "per_dim" else ()
        self.log_scale = jnp.full(shape, math.log(scale), dtype=jnp.float32)

    @property
    def scale(self):
        log_scale = jax.lax.stop_gradient(self.log_scale) if self.scale_mode == "fixed" else self.log_scale
        return jnp.exp(log_scale)

    def mean(self, params):
        return params


@register("likelihood", "normal", backend=BACKEND)
class NormalLikelihood(_LocScaleLikelihood):
    """Gaussian with the decoder output as mean; scale fixed, learned shared, or learned per dimension."""

    _name = "normal"

    def __call__(self, params):
        return dist.Normal(params, jnp.broadcast_to(self.scale, self.event_shape)).to_event(self.event_dim)


@register("likelihood", "laplace", backend=BACKEND)
class LaplaceLikelihood(_LocScaleLikelihood):
    """Laplace with the decoder output as location (an L1 reconstruction loss); scale as for 'normal'."""

    _name = "laplace"

    def __call__(self, params):
        return dist.Laplace(params, jnp.broadcast_to(self.scale, self.event_shape)).to_event(self.event_dim)


class _SqueezedBeta(dist.Beta):
    """A Beta distribution that scores values clamped into [eps, 1 - eps] (see the Pyro backend)."""

    pytree_aux_fields = ("eps",)

    def __init__(self, concentration1, concentration0, eps, *, validate_args=None):
        self.eps = eps
        super().__init__(concentration1, concentration0, validate_args=validate_args)

    def log_prob(self, value):
        return super().log_prob(jnp.clip(value, self.eps, 1.0 - self.eps))


@register("likelihood", "beta", backend=BACKEND)
class BetaLikelihood(Likelihood):
    """Beta on each value in [0, 1]: two concentrations per value from the decoder (softplus).

    Values are clamped into ``[eps, 1 - eps]`` before they are scored (exact 0 and 1 have
    zero or infinite Beta density); see the Pyro backend's ``BetaLikelihood``.
    """

    eps: float = eqx.field(static=True)

    support = "unit_interval"

    def __init__(self, event_shape, eps=1e-4, *, key=None):
        self.event_shape = tuple(event_shape)
        self.eps = settings.probability_margin("likelihood", "beta", "eps", eps)

    @property
    def param_shape(self) -> tuple:
        return (2, *self.event_shape)

    def __call__(self, params):
        conc = _positive(params)
        axis = -self.event_dim - 1
        c1 = jnp.take(conc, 0, axis=axis)
        c0 = jnp.take(conc, 1, axis=axis)
        return _SqueezedBeta(c1, c0, self.eps).to_event(self.event_dim)


class _GreyLevels(dist.CategoricalLogits):
    """A categorical over L grey levels, observed as values in [0, 1] (see the Pyro backend)."""

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


@register("likelihood", "categorical", backend=BACKEND)
class CategoricalLikelihood(Likelihood):
    """Categorical over num_levels grey levels per value: x in [0, 1] is level round((num_levels - 1) x).

    ``param_shape`` is ``(num_levels, *event_shape)``; the mean is the expected level /
    (num_levels - 1).
    """

    num_levels: int = eqx.field(static=True)

    support = "unit_interval"

    def __init__(self, event_shape, num_levels=256, *, key=None):
        self.event_shape = tuple(event_shape)
        self.num_levels = settings.count("likelihood", "categorical", "num_levels", num_levels, minimum=2)

    @property
    def param_shape(self) -> tuple:
        return (self.num_levels, *self.event_shape)

    def __call__(self, params):
        logits = jnp.moveaxis(params, -self.event_dim - 1, -1)
        return _GreyLevels(logits).to_event(self.event_dim)


@register("likelihood", "poisson", backend=BACKEND)
class PoissonLikelihood(Likelihood):
    """Poisson counts with rate softplus(decoder output)."""

    support = "count"

    def __init__(self, event_shape, *, key=None):
        self.event_shape = tuple(event_shape)

    def __call__(self, params):
        return dist.Poisson(_positive(params)).to_event(self.event_dim)


class _DispersionLikelihood(Likelihood):
    """Negative-binomial family: a learned inverse dispersion theta = exp(log_theta), per feature or shared."""

    log_theta: jax.Array
    dispersion: str = eqx.field(static=True)

    support = "count"
    _name = ""

    def __init__(self, event_shape, dispersion="per_feature", *, key=None):
        self.event_shape = tuple(event_shape)
        self.dispersion = settings.choice("likelihood", self._name, "dispersion", dispersion, settings.DISPERSIONS)
        self.log_theta = jnp.zeros(self.event_shape if dispersion == "per_feature" else ())

    @property
    def theta(self):
        return jnp.broadcast_to(jnp.exp(self.log_theta), self.event_shape)


@register("likelihood", "negative_binomial", backend=BACKEND)
class NegativeBinomialLikelihood(_DispersionLikelihood):
    """Negative binomial counts: mean softplus(decoder output), inverse dispersion learned per feature or shared."""

    _name = "negative_binomial"

    def __call__(self, params):
        return dist.NegativeBinomial2(_positive(params), self.theta).to_event(self.event_dim)


@register("likelihood", "zinb", backend=BACKEND)
class ZINBLikelihood(_DispersionLikelihood):
    """Zero-inflated negative binomial: mean and zero-gate logits from the decoder, learned dispersion.

    ``param_shape`` is ``(2, *event_shape)``: the mean (through softplus) first, then the
    logits of the probability of an extra zero.
    """

    _name = "zinb"

    @property
    def param_shape(self) -> tuple:
        return (2, *self.event_shape)

    def __call__(self, params):
        axis = -self.event_dim - 1
        mu = _positive(jnp.take(params, 0, axis=axis))
        gate_logits = jnp.take(params, 1, axis=axis)
        return dist.ZeroInflatedNegativeBinomial2(mu, self.theta, gate_logits=gate_logits).to_event(self.event_dim)


class ContinuousBernoulliDistribution(dist.Distribution):
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
