"""Built-in priors p(z) and likelihoods p(x|z) for the Pyro backend.

A prior is a module whose ``forward()`` returns a distribution over one latent vector
(event shape ``(latent_dim,)``). A likelihood is a module whose ``forward(params)`` turns
the decoder's output into a distribution over one datapoint (event shape
``event_shape``); its ``param_shape`` tells the decoder how many outputs to produce and
its ``support`` tells the data checks which values are valid.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from ...errors import UsageError
from ...registry import register

SCALE_MODES = ("fixed", "shared", "per_dim")


@register("prior", "normal", backend="pyro")
class NormalPrior(nn.Module):
    """Standard (or shifted and scaled) diagonal Normal prior."""

    def __init__(self, latent_dim, loc=0.0, scale=1.0):
        super().__init__()
        if not scale > 0:
            raise UsageError(f"prior 'normal' needs scale > 0, got {scale!r}")
        self.register_buffer("loc", torch.full((latent_dim,), float(loc)))
        self.register_buffer("scale", torch.full((latent_dim,), float(scale)))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class Likelihood(nn.Module):
    """Base class: ``forward(params)`` returns a distribution over one datapoint."""

    #: Values the data must take: ``"unit_interval"`` ([0, 1]) or ``"real"``.
    support = "real"

    def __init__(self, event_shape):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.param_shape = self.event_shape

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z), used for reconstructions and sample pictures."""
        return self(params).mean


@register("likelihood", "bernoulli", backend="pyro")
class BernoulliLikelihood(Likelihood):
    """Bernoulli on each value (binary data; on grey levels it is the cross-entropy loss)."""

    support = "unit_interval"

    def forward(self, params):
        # validate_args=False: grey levels in [0, 1] are scored by cross-entropy, as many
        # VAE papers do; the data checks have already rejected values outside [0, 1].
        return dist.Bernoulli(logits=params, validate_args=False).to_event(len(self.event_shape))

    def mean(self, params):
        return torch.sigmoid(params)


@register("likelihood", "continuous_bernoulli", backend="pyro")
class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli: a proper density for grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    support = "unit_interval"

    def forward(self, params):
        return dist.ContinuousBernoulli(logits=params, validate_args=False).to_event(len(self.event_shape))


@register("likelihood", "normal", backend="pyro")
class NormalLikelihood(Likelihood):
    """Gaussian with the decoder output as mean; scale fixed, learned shared, or learned per dimension."""

    support = "real"

    def __init__(self, event_shape, scale_mode="shared", scale=1.0):
        super().__init__(event_shape)
        if scale_mode not in SCALE_MODES:
            raise UsageError(
                f"likelihood 'normal' scale_mode = {scale_mode!r} is not valid; choose one of: {', '.join(SCALE_MODES)}"
            )
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise UsageError(f"likelihood 'normal' needs scale > 0, got {scale!r}")
        self.scale_mode = scale_mode
        shape = {"fixed": (), "shared": (), "per_dim": self.event_shape}[scale_mode]
        log_scale = torch.full(shape, math.log(scale))
        if scale_mode == "fixed":
            self.register_buffer("log_scale", log_scale)
        else:
            self.log_scale = nn.Parameter(log_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, params):
        return dist.Normal(params, self.scale.expand(params.shape[-len(self.event_shape):])).to_event(
            len(self.event_shape)
        )

    def mean(self, params):
        return params
