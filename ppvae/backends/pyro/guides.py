"""Guide families of the Pyro backend: the distribution of z built from the encoder's outputs.

Each family is a ``torch.nn.Module`` registered under kind ``"guide"``; the VAE holds it
as ``vae.guide_family`` and calls ``family(loc, scale, extra)`` inside its guide. ``loc``
and ``scale`` (shape ``(..., latent_dim)``) are the encoder's diagonal Normal; ``extra``
(shape ``(..., n)``, or ``None``) holds the ``n = family.extra_outputs(latent_dim,
**settings)`` further values per datapoint the family asked the encoder for. The
returned distribution has event shape ``(latent_dim,)`` and draws reparameterized samples.
See :mod:`ppvae.model.guides` for the families and their settings.

Examples
--------
>>> import torch
>>> family = LowRankGuide(latent_dim=3, rank=1)
>>> q = family(torch.zeros(5, 3), torch.ones(5, 3), torch.zeros(5, 3))
>>> tuple(q.batch_shape), tuple(q.event_shape)
((5,), (3,))
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import transforms as T
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ppvae.model.guides import fullrank_outputs, iaf_permutation, iaf_settings, lowrank_outputs, missing_extra
from ppvae.spec.registry import register

BACKEND = "pyro"

__all__ = ["DiagonalGuide", "LowRankGuide", "FullRankGuide", "IAFGuide", "location", "is_diagonal"]


def is_diagonal(q) -> bool:
    """Whether ``q`` is a diagonal Normal (its KL and moments factorize over dimensions)."""
    return isinstance(q, dist.Independent) and isinstance(q.base_dist, dist.Normal)


def location(q) -> torch.Tensor:
    """The mean of a Normal q; for a flow, the mean of the Normal it transforms.

    This is the encoder's ``loc`` for every built-in family (the posterior mean for the
    Gaussian ones).
    """
    if isinstance(q, dist.TransformedDistribution):
        return location(q.base_dist)
    if isinstance(q, dist.Independent):
        return location(q.base_dist)
    return q.loc if hasattr(q, "loc") else q.mean


def _extra(name: str, extra, needed: int, loc: torch.Tensor) -> torch.Tensor:
    if needed == 0:
        return loc.new_zeros(loc.shape[:-1] + (0,))
    if extra is None:
        raise missing_extra(name, needed)
    return extra


@register("guide", "diagonal", backend=BACKEND)
class DiagonalGuide(nn.Module):
    """Diagonal Normal N(loc, diag(scale^2)): the mean-field family (the default)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = int(latent_dim)

    @classmethod
    def extra_outputs(cls, latent_dim: int) -> int:
        """No values besides loc and scale."""
        return 0

    def forward(self, loc, scale, extra=None):
        return dist.Normal(loc, scale).to_event(1)


@register("guide", "lowrank", backend=BACKEND)
class LowRankGuide(nn.Module):
    """Low-rank plus diagonal Normal: covariance S (I + G G^T) S, S = diag(scale), G (latent_dim x rank) from the encoder.

    That is ``LowRankMultivariateNormal(loc, cov_factor=S G, cov_diag=scale**2)``. The factor
    is scaled by the encoder's scale, row by row, so G sets correlations and S sizes; an
    unscaled factor next to a small diagonal makes log q lose its precision to rounding,
    which the optimizer learns to exploit (the ELBO then climbs past log p(x)).
    """

    def __init__(self, latent_dim, rank=2):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.rank = rank
        self.num_extra = self.extra_outputs(latent_dim, rank)

    @classmethod
    def extra_outputs(cls, latent_dim: int, rank: int = 2) -> int:
        """``latent_dim * rank``: the entries of G, row by row."""
        return lowrank_outputs(latent_dim, rank)

    def forward(self, loc, scale, extra=None):
        shape = _extra("lowrank", extra, self.num_extra, loc).reshape(*loc.shape, self.rank)
        return dist.LowRankMultivariateNormal(loc, cov_factor=scale.unsqueeze(-1) * shape, cov_diag=scale * scale)


@register("guide", "fullrank", backend=BACKEND)
class FullRankGuide(nn.Module):
    """Full-covariance Normal: Cholesky factor diag(scale) (I + M), M strictly lower triangular from the encoder.

    ``MultivariateNormal(loc, scale_tril=L)`` with ``L = diag(scale) + diag(scale) M``: any
    covariance has such a factor. The strictly lower part is scaled by the row's scale for
    the reason given for ``lowrank``: otherwise entries far larger than the diagonal make
    the triangular solve in log q inaccurate, and training exploits the error.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.num_extra = self.extra_outputs(latent_dim)
        rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim, offset=-1)
        # Buffers that are not saved: they follow the module's device, and the
        # checkpoint holds only what training changes.
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @classmethod
    def extra_outputs(cls, latent_dim: int) -> int:
        """``latent_dim * (latent_dim - 1) / 2``: the strictly lower triangle, row by row."""
        return fullrank_outputs(latent_dim)

    def scale_tril(self, scale, extra):
        """The Cholesky factor ``diag(scale) (I + M)``, M strictly lower with ``extra`` row by row."""
        lower = scale.new_zeros(*scale.shape, self.latent_dim)
        if self.num_extra:
            lower[..., self.rows, self.cols] = extra
        return scale.unsqueeze(-1) * (lower + torch.eye(self.latent_dim, dtype=scale.dtype, device=scale.device))

    def forward(self, loc, scale, extra=None):
        extra = _extra("fullrank", extra, self.num_extra, loc)
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril(scale, extra))


@register("guide", "iaf", backend=BACKEND)
class IAFGuide(nn.Module):
    """Inverse autoregressive flow: the encoder's diagonal Normal through num_flows masked affine flows.

    Each flow maps ``u`` to ``mu(u, c) + exp(s(u, c)) * u``, where ``mu`` and ``s`` come
    from a masked (MADE) network, so output ``i`` depends on the inputs before ``i`` in
    the flow's order only; consecutive flows reverse the order. The density stays exact:
    log q(z|x) = log N(u_0; loc, scale) - sum over flows of sum_i s_i.

    **Conditioning on x**: with ``context_dim > 0`` (default 8) the encoder also returns a
    context vector ``c`` of that many values per datapoint, and every flow's network takes
    it as extra inputs, so the shape of q can change from one datapoint to the next (as in
    the inverse autoregressive flow paper). ``context_dim = 0`` gives flows shared by all
    datapoints, moving only the encoder's Normal.

    Parameters
    ----------
    latent_dim : int
        Size of z.
    num_flows : int
        Number of flows (at least 1).
    hidden : list of int
        Hidden layer sizes of each flow's masked network, each at least ``latent_dim``.
    context_dim : int
        Context values per datapoint from the encoder (0: unconditioned flows).
    """

    def __init__(self, latent_dim, num_flows=2, hidden=(64,), context_dim=8):
        super().__init__()
        self.latent_dim = int(latent_dim)
        num_flows, hidden, context_dim = iaf_settings(self.latent_dim, num_flows, hidden, context_dim)
        self.context_dim = context_dim
        self.flows = nn.ModuleList(
            [
                T.ConditionalAffineAutoregressive(
                    ConditionalAutoRegressiveNN(
                        self.latent_dim,
                        context_dim,
                        hidden,
                        permutation=torch.tensor(iaf_permutation(self.latent_dim, i), dtype=torch.int64),
                    )
                )
                for i in range(num_flows)
            ]
        )

    @classmethod
    def extra_outputs(cls, latent_dim: int, num_flows: int = 2, hidden=(64,), context_dim: int = 8) -> int:
        """``context_dim``: the context vector the flows are conditioned on."""
        return iaf_settings(latent_dim, num_flows, hidden, context_dim)[2]

    def forward(self, loc, scale, extra=None):
        context = _extra("iaf", extra, self.context_dim, loc)
        base = dist.Normal(loc, scale).to_event(1)
        # A conditioned transform caches its last (input, output) pair, so scoring the z it
        # just produced needs no inversion.
        return dist.TransformedDistribution(base, [flow.condition(context) for flow in self.flows])
