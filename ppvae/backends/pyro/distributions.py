"""The distributions ppvae adds to ``pyro.distributions`` for its built-in likelihoods.

They subclass torch's own distribution classes (their ``expand`` and ``log_prob``
machinery is the library's), so each backend writes them in its own library; the
likelihoods that use them are written once, in :mod:`ppvae.model.likelihoods`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints

__all__ = ["SqueezedBeta", "GreyLevels"]


class SqueezedBeta(dist.Beta):
    """A Beta distribution that scores values clamped into [eps, 1 - eps].

    A Beta density is 0 or infinite at exactly 0 and 1 (depending on the concentrations),
    which real data in [0, 1] (blank pixels) hits all the time.
    """

    def __init__(self, concentration1, concentration0, eps, validate_args=None):
        self.eps = eps
        super().__init__(concentration1, concentration0, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SqueezedBeta, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.eps = self.eps
        return new

    def log_prob(self, value):
        return super().log_prob(value.clamp(self.eps, 1.0 - self.eps))


class GreyLevels(dist.Categorical):
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
