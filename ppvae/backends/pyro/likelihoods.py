"""Built-in likelihoods p(x|z) for the Pyro backend.

A likelihood is a module whose ``forward(params)`` turns the decoder's output into a
distribution over one datapoint (event shape ``event_shape``). Its ``param_shape`` tells
the decoder how many outputs to produce: ``event_shape`` for one parameter per value,
``(k, *event_shape)`` for k parameters per value (they come first, as the convolutional
decoder expects). Its ``support`` tells the data checks which values are valid:
``"unit_interval"`` ([0, 1]), ``"real"`` or ``"count"`` (non-negative integers).
Parameter and buffer names match the NumPyro backend's fields, so weights convert.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from ppvae.spec.registry import register
from ppvae.model import settings

__all__ = ["Likelihood", "BernoulliLikelihood", "ContinuousBernoulliLikelihood", "NormalLikelihood",
           "LaplaceLikelihood", "BetaLikelihood", "CategoricalLikelihood", "PoissonLikelihood",
           "NegativeBinomialLikelihood", "ZINBLikelihood"]

BACKEND = "pyro"
SCALE_MODES = settings.SCALE_MODES
#: Added to softplus outputs that must be strictly positive (rates, means, concentrations):
#: softplus underflows to exactly 0 for very negative inputs, where log densities break.
MIN_POSITIVE = 1e-6


def _positive(out: torch.Tensor) -> torch.Tensor:
    return F.softplus(out) + MIN_POSITIVE


class Likelihood(nn.Module):
    """Base class: ``forward(params)`` returns a distribution over one datapoint."""

    #: Values the data must take: ``"unit_interval"`` ([0, 1]), ``"real"`` or ``"count"``.
    support = "real"

    def __init__(self, event_shape):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.param_shape = self.event_shape

    @property
    def event_dim(self) -> int:
        return len(self.event_shape)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z), used for reconstructions and sample pictures."""
        return self(params).mean


@register("likelihood", "bernoulli", backend=BACKEND)
class BernoulliLikelihood(Likelihood):
    """Bernoulli on each value (binary data; on grey levels it is the cross-entropy loss)."""

    support = "unit_interval"

    def forward(self, params):
        # validate_args=False: grey levels in [0, 1] are scored by cross-entropy, as many
        # VAE papers do; the data checks have already rejected values outside [0, 1].
        return dist.Bernoulli(logits=params, validate_args=False).to_event(self.event_dim)

    def mean(self, params):
        return torch.sigmoid(params)


@register("likelihood", "continuous_bernoulli", backend=BACKEND)
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli: a proper density for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    support = "unit_interval"

    def forward(self, params):
        return dist.ContinuousBernoulli(logits=params, validate_args=False).to_event(self.event_dim)


class _LocScaleLikelihood(Likelihood):
    """The decoder output is the location; the scale is fixed, learned shared, or learned per value."""

    support = "real"
    _name = ""

    def __init__(self, event_shape, scale_mode="shared", scale=1.0):
        super().__init__(event_shape)
        settings.choice("likelihood", self._name, "scale_mode", scale_mode, SCALE_MODES)
        settings.positive("likelihood", self._name, "scale", scale)
        self.scale_mode = scale_mode
        shape = self.event_shape if scale_mode == "per_dim" else ()
        log_scale = torch.full(shape, math.log(scale))
        if scale_mode == "fixed":
            self.register_buffer("log_scale", log_scale)
        else:
            self.log_scale = nn.Parameter(log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def _scale_for(self, params: torch.Tensor) -> torch.Tensor:
        return self.scale.expand(params.shape[-self.event_dim:])

    def mean(self, params):
        return params


@register("likelihood", "normal", backend=BACKEND)
class NormalLikelihood(_LocScaleLikelihood):
    """Gaussian with the decoder output as mean; scale fixed, learned shared, or learned per dimension."""

    _name = "normal"

    def forward(self, params):
        return dist.Normal(params, self._scale_for(params)).to_event(self.event_dim)


@register("likelihood", "laplace", backend=BACKEND)
class LaplaceLikelihood(_LocScaleLikelihood):
    """Laplace with the decoder output as location (an L1 reconstruction loss); scale as for 'normal'."""

    _name = "laplace"

    def forward(self, params):
        return dist.Laplace(params, self._scale_for(params)).to_event(self.event_dim)


class _SqueezedBeta(dist.Beta):
    """A Beta distribution that scores values clamped into [eps, 1 - eps].

    A Beta density is 0 or infinite at exactly 0 and 1 (depending on the concentrations),
    which real data in [0, 1] (blank pixels) hits all the time.
    """

    def __init__(self, concentration1, concentration0, eps, validate_args=None):
        self.eps = eps
        super().__init__(concentration1, concentration0, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_SqueezedBeta, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.eps = self.eps
        return new

    def log_prob(self, value):
        return super().log_prob(value.clamp(self.eps, 1.0 - self.eps))


@register("likelihood", "beta", backend=BACKEND)
class BetaLikelihood(Likelihood):
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

    def forward(self, params):
        c1, c0 = _positive(params).unbind(-self.event_dim - 1)
        return _SqueezedBeta(c1, c0, self.eps).to_event(self.event_dim)


class _GreyLevels(dist.Categorical):
    """A categorical over L grey levels, observed as values in [0, 1].

    A value x is level ``round((L - 1) x)``; the mean and samples are levels / (L - 1), so
    they live in the data's space.
    """

    support = constraints.unit_interval
    has_enumerate_support = False

    def _level(self, value: torch.Tensor) -> torch.Tensor:
        levels = self.logits.shape[-1]
        return torch.round(value * (levels - 1)).long().clamp(0, levels - 1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        level, log_pmf = torch.broadcast_tensors(self._level(value).unsqueeze(-1), self.logits)
        return log_pmf.gather(-1, level[..., :1]).squeeze(-1)

    @property
    def mean(self):
        levels = self.logits.shape[-1]
        grid = torch.arange(levels, dtype=self.probs.dtype, device=self.probs.device)
        return (self.probs * grid).sum(-1) / (levels - 1)

    def sample(self, sample_shape=torch.Size()):
        return super().sample(sample_shape).to(self.logits.dtype) / (self.logits.shape[-1] - 1)


@register("likelihood", "categorical", backend=BACKEND)
class CategoricalLikelihood(Likelihood):
    """Categorical over num_levels grey levels per value: x in [0, 1] is level round((num_levels - 1) x).

    The decoder gives ``num_levels`` logits per value (``param_shape`` is
    ``(num_levels, *event_shape)``); the mean is the expected level / (num_levels - 1).
    """

    support = "unit_interval"

    def __init__(self, event_shape, num_levels=256):
        super().__init__(event_shape)
        self.num_levels = settings.count("likelihood", "categorical", "num_levels", num_levels, minimum=2)
        self.param_shape = (self.num_levels, *self.event_shape)

    def forward(self, params):
        logits = torch.movedim(params, -self.event_dim - 1, -1)
        return _GreyLevels(logits=logits).to_event(self.event_dim)


@register("likelihood", "poisson", backend=BACKEND)
class PoissonLikelihood(Likelihood):
    """Poisson counts with rate softplus(decoder output)."""

    support = "count"

    def forward(self, params):
        return dist.Poisson(_positive(params)).to_event(self.event_dim)


class _DispersionLikelihood(Likelihood):
    """Negative-binomial family: a learned inverse dispersion theta > 0, per feature or shared.

    ``log_theta`` holds log(theta); the variance is ``mu + mu^2 / theta``, so a large theta
    approaches the Poisson.
    """

    support = "count"
    _name = ""

    def __init__(self, event_shape, dispersion="per_feature"):
        super().__init__(event_shape)
        self.dispersion = settings.choice("likelihood", self._name, "dispersion", dispersion, settings.DISPERSIONS)
        shape = self.event_shape if dispersion == "per_feature" else ()
        self.log_theta = nn.Parameter(torch.zeros(shape))

    @property
    def theta(self) -> torch.Tensor:
        return self.log_theta.exp()

    def _nb_args(self, mu: torch.Tensor) -> dict:
        # NB(total_count=theta, logits=log(mu / theta)) has mean mu and inverse dispersion theta.
        theta = self.theta.expand(mu.shape[-self.event_dim:])
        return {"total_count": theta, "logits": mu.log() - theta.log()}


@register("likelihood", "negative_binomial", backend=BACKEND)
class NegativeBinomialLikelihood(_DispersionLikelihood):
    """Negative binomial counts: mean softplus(decoder output), inverse dispersion learned per feature or shared."""

    _name = "negative_binomial"

    def forward(self, params):
        return dist.NegativeBinomial(**self._nb_args(_positive(params))).to_event(self.event_dim)


@register("likelihood", "zinb", backend=BACKEND)
class ZINBLikelihood(_DispersionLikelihood):
    """Zero-inflated negative binomial: mean and zero-gate logits from the decoder, learned dispersion.

    ``param_shape`` is ``(2, *event_shape)``: the mean (through softplus) first, then the
    logits of the probability of an extra zero.
    """

    _name = "zinb"

    def __init__(self, event_shape, dispersion="per_feature"):
        super().__init__(event_shape, dispersion)
        self.param_shape = (2, *self.event_shape)

    def forward(self, params):
        out, gate_logits = params.unbind(-self.event_dim - 1)
        return dist.ZeroInflatedNegativeBinomial(**self._nb_args(_positive(out)),
                                                 gate_logits=gate_logits).to_event(self.event_dim)
