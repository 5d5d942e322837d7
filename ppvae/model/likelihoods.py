"""Built-in likelihoods p(x|z), written once for both backends.

Each is a :class:`~ppvae.model.portable.Portable` likelihood: ``distribution(dist, ops, p,
out)`` turns the decoder's output ``out`` into a distribution over one datapoint (event
shape ``event_shape``). ``param_shape`` tells the decoder how many outputs to produce:
``event_shape`` for one parameter per value, ``(k, *event_shape)`` for k parameters per
value (they come first, as the convolutional decoder expects). ``support`` tells the data
checks which values are valid: ``"unit_interval"`` ([0, 1]), ``"real"`` or ``"count"``
(non-negative integers, never rescaled). The registry registers :data:`BUILT_IN` for
every backend; the backends hold only the translation (:mod:`ppvae.backends.pyro.portable`,
:mod:`ppvae.backends.numpyro.portable`) and three distributions that subclass their
library's own classes (``SqueezedBeta``, ``GreyLevels``, and NumPyro's missing
``ContinuousBernoulli``).
"""

from __future__ import annotations

import numpy as np

from ppvae.model import settings
from ppvae.model.portable import Portable

__all__ = [
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "NormalLikelihood",
    "LaplaceLikelihood",
    "BetaLikelihood",
    "CategoricalLikelihood",
    "PoissonLikelihood",
    "NegativeBinomialLikelihood",
    "ZINBLikelihood",
    "BUILT_IN",
    "MIN_POSITIVE",
]

#: Added to softplus outputs that must be strictly positive (rates, means, concentrations):
#: softplus underflows to exactly 0 for very negative inputs, where log densities break.
MIN_POSITIVE = 1e-6


def _positive(ops, out):
    return ops.softplus(out) + MIN_POSITIVE


class _Likelihood(Portable):
    """One datapoint of ``event_shape``; one decoder output per value unless ``param_shape`` says more."""

    def __init__(self, event_shape):
        self.event_shape = tuple(event_shape)
        self.event_dim = len(self.event_shape)
        self.param_shape = self.event_shape

    def _split(self, ops, out):
        """The k parameters per value of a ``(k, *event_shape)`` output, first axis first."""
        axis = -self.event_dim - 1
        return [ops.take(out, i, axis) for i in range(self.param_shape[0])]


class BernoulliLikelihood(_Likelihood):
    """Bernoulli on each value (binary data; on grey levels it is the cross-entropy loss)."""

    support = "unit_interval"

    def distribution(self, dist, ops, p, out):
        # validate_args=False: grey levels in [0, 1] are scored by cross-entropy, as many
        # VAE papers do; the data checks have already rejected values outside [0, 1].
        return dist.Bernoulli(logits=out, validate_args=False).to_event(self.event_dim)

    def mean(self, dist, ops, p, out):
        return ops.sigmoid(out)


class ContinuousBernoulliLikelihood(_Likelihood):
    """Continuous Bernoulli: a proper density for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    support = "unit_interval"

    def distribution(self, dist, ops, p, out):
        return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(self.event_dim)


class _LocScaleLikelihood(_Likelihood):
    """The decoder output is the location; the scale is fixed, learned shared, or learned per value."""

    _name = ""

    def __init__(self, event_shape, scale_mode="shared", scale=1.0):
        super().__init__(event_shape)
        self.scale_mode = settings.choice("likelihood", self._name, "scale_mode", scale_mode, settings.SCALE_MODES)
        settings.positive("likelihood", self._name, "scale", scale)
        log_scale = np.full(self.event_shape if scale_mode == "per_dim" else (), np.log(scale))
        (self.constant if scale_mode == "fixed" else self.param)("log_scale", log_scale)

    def _scale(self, ops, p):
        return ops.broadcast_to(ops.exp(p["log_scale"]), self.event_shape)

    def mean(self, dist, ops, p, out):
        return out


class NormalLikelihood(_LocScaleLikelihood):
    """Gaussian with the decoder output as mean; scale fixed, learned shared, or learned per dimension."""

    _name = "normal"

    def distribution(self, dist, ops, p, out):
        return dist.Normal(out, self._scale(ops, p)).to_event(self.event_dim)


class LaplaceLikelihood(_LocScaleLikelihood):
    """Laplace with the decoder output as location (an L1 reconstruction loss); scale as for 'normal'."""

    _name = "laplace"

    def distribution(self, dist, ops, p, out):
        return dist.Laplace(out, self._scale(ops, p)).to_event(self.event_dim)


class BetaLikelihood(_Likelihood):
    """Beta on each value in [0, 1]: two concentrations per value from the decoder (softplus).

    Parameters
    ----------
    event_shape : tuple of int
        Shape of one datapoint.
    eps : float, default 1e-4
        Values are clamped into ``[eps, 1 - eps]`` before they are scored: exact 0 and 1
        (blank or saturated pixels) have zero or infinite Beta density. Reported log
        densities are those of the clamped values.
    """

    support = "unit_interval"

    def __init__(self, event_shape, eps=1e-4):
        super().__init__(event_shape)
        self.eps = settings.probability_margin("likelihood", "beta", "eps", eps)
        self.param_shape = (2, *self.event_shape)

    def distribution(self, dist, ops, p, out):
        c1, c0 = self._split(ops, _positive(ops, out))
        return dist.SqueezedBeta(c1, c0, self.eps).to_event(self.event_dim)


class CategoricalLikelihood(_Likelihood):
    """Categorical over num_levels grey levels per value: x in [0, 1] is level round((num_levels - 1) x).

    The decoder gives ``num_levels`` logits per value (``param_shape`` is
    ``(num_levels, *event_shape)``); the mean is the expected level / (num_levels - 1).
    """

    support = "unit_interval"

    def __init__(self, event_shape, num_levels=256):
        super().__init__(event_shape)
        self.num_levels = settings.count("likelihood", "categorical", "num_levels", num_levels, minimum=2)
        self.param_shape = (self.num_levels, *self.event_shape)

    def distribution(self, dist, ops, p, out):
        logits = ops.moveaxis(out, -self.event_dim - 1, -1)
        return dist.GreyLevels(logits=logits).to_event(self.event_dim)


class PoissonLikelihood(_Likelihood):
    """Poisson counts with rate softplus(decoder output)."""

    support = "count"

    def distribution(self, dist, ops, p, out):
        return dist.Poisson(_positive(ops, out)).to_event(self.event_dim)


class _DispersionLikelihood(_Likelihood):
    """Negative-binomial family: a learned inverse dispersion theta > 0, per feature or shared.

    ``log_theta`` holds log(theta); the variance is ``mu + mu^2 / theta``, so a large theta
    approaches the Poisson.
    """

    support = "count"
    _name = ""

    def __init__(self, event_shape, dispersion="per_feature"):
        super().__init__(event_shape)
        self.dispersion = settings.choice("likelihood", self._name, "dispersion", dispersion, settings.DISPERSIONS)
        self.param("log_theta", np.zeros(self.event_shape if dispersion == "per_feature" else ()))

    def _negative_binomial(self, dist, ops, p, mu):
        # NB(total_count=theta, logits=log(mu / theta)) has mean mu and inverse dispersion theta.
        theta = ops.broadcast_to(ops.exp(p["log_theta"]), self.event_shape)
        return dist.NegativeBinomial(total_count=theta, logits=ops.log(mu) - ops.log(theta))


class NegativeBinomialLikelihood(_DispersionLikelihood):
    """Negative binomial counts: mean softplus(decoder output), inverse dispersion learned per feature or shared."""

    _name = "negative_binomial"

    def distribution(self, dist, ops, p, out):
        return self._negative_binomial(dist, ops, p, _positive(ops, out)).to_event(self.event_dim)


class ZINBLikelihood(_DispersionLikelihood):
    """Zero-inflated negative binomial: mean and zero-gate logits from the decoder, learned dispersion.

    ``param_shape`` is ``(2, *event_shape)``: the mean (through softplus) first, then the
    logits of the probability of an extra zero.
    """

    _name = "zinb"

    def __init__(self, event_shape, dispersion="per_feature"):
        super().__init__(event_shape, dispersion)
        self.param_shape = (2, *self.event_shape)

    def distribution(self, dist, ops, p, out):
        mu, gate_logits = self._split(ops, out)
        counts = self._negative_binomial(dist, ops, p, _positive(ops, mu))
        return dist.ZeroInflatedDistribution(counts, gate_logits=gate_logits).to_event(self.event_dim)


#: Registered name -> likelihood, for every backend.
BUILT_IN = {
    "bernoulli": BernoulliLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
    "normal": NormalLikelihood,
    "laplace": LaplaceLikelihood,
    "beta": BetaLikelihood,
    "categorical": CategoricalLikelihood,
    "poisson": PoissonLikelihood,
    "negative_binomial": NegativeBinomialLikelihood,
    "zinb": ZINBLikelihood,
}
