"""Guide families of the NumPyro backend: the distribution of z built from the encoder's outputs.

The same families, settings and call as the Pyro backend's (see
:mod:`ppvae.backends.pyro.guides`): ``family(loc, scale, extra)`` returns a distribution
with event shape ``(latent_dim,)``. Families are Equinox modules; the VAE keeps them as its
``"guide"`` part, so a family with weights (``iaf``) has its params under
``"guide$params"``. The flows' masked networks mirror ``pyro.nn.ConditionalAutoRegressiveNN``
name for name and mask for mask, so a Pyro run's weights convert mechanically.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> family = FullRankGuide(latent_dim=3, key=jax.random.PRNGKey(0))
>>> q = family(jnp.zeros((5, 3)), jnp.ones((5, 3)), jnp.zeros((5, 3)))
>>> q.batch_shape, q.event_shape
((5,), (3,))
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions.flows import InverseAutoregressiveTransform

from ppvae.model.guides import fullrank_outputs, iaf_permutation, iaf_settings, lowrank_outputs, missing_extra
from ppvae.spec import registry
from ppvae.errors import UsageError
from ppvae.spec.registry import register

BACKEND = "numpyro"

__all__ = [
    "DiagonalGuide",
    "LowRankGuide",
    "FullRankGuide",
    "IAFGuide",
    "made_masks",
    "location",
    "is_diagonal",
    "sample_with_log_prob",
    "log_prob",
    "family_name",
    "require_diagonal",
]


def is_diagonal(q) -> bool:
    """Whether ``q`` is a diagonal Normal (its KL and moments factorize over dimensions)."""
    return isinstance(q, dist.Independent) and isinstance(q.base_dist, dist.Normal)


def location(q) -> jax.Array:
    """The mean of a Normal q; for a flow, the mean of the Normal it transforms (the encoder's loc)."""
    if isinstance(q, (dist.TransformedDistribution, dist.Independent)):
        return location(q.base_dist)
    return q.loc if hasattr(q, "loc") else q.mean


def log_prob(q, z, intermediates=None) -> jax.Array:
    """log q(z), reusing a flow's intermediates from sampling when given (no inversion)."""
    return q.log_prob(z, intermediates) if intermediates else q.log_prob(z)


def sample_with_log_prob(q, key, sample_shape=()) -> tuple[jax.Array, jax.Array]:
    """Reparameterized draws z ~ q and their exact log q(z)."""
    z, intermediates = q.sample_with_intermediates(key, sample_shape)
    return z, log_prob(q, z, intermediates)


def family_name(family) -> str:
    """The registered name of a guide family module (its class name if it is not registered)."""
    for name, comp in registry.components("guide", BACKEND).items():
        if comp.factory is type(family):
            return name
    return type(family).__name__


def require_diagonal(vae, what: str, fix: str) -> None:
    """A one-line UsageError unless ``vae``'s guide family is the diagonal Normal.

    For analyses that are defined in terms of the encoder's diagonal Normal only.
    """
    family = vae.modules.get("guide")
    if family is not None and not isinstance(family, DiagonalGuide):
        raise UsageError(f"{what} needs guide 'diagonal', but this model's guide is {family_name(family)!r}; {fix}")


def _extra(name: str, extra, needed: int, loc):
    if needed == 0:
        return jnp.zeros(loc.shape[:-1] + (0,), loc.dtype)
    if extra is None:
        raise missing_extra(name, needed)
    return extra


@register("guide", "diagonal", backend=BACKEND)
class DiagonalGuide(eqx.Module):
    """Diagonal Normal N(loc, diag(scale^2)): the mean-field family (the default)."""

    latent_dim: int = eqx.field(static=True)

    def __init__(self, latent_dim, *, key=None):
        self.latent_dim = int(latent_dim)

    @classmethod
    def extra_outputs(cls, latent_dim: int) -> int:
        """No values besides loc and scale."""
        return 0

    def __call__(self, loc, scale, extra=None):
        return dist.Normal(loc, scale).to_event(1)


@register("guide", "lowrank", backend=BACKEND)
class LowRankGuide(eqx.Module):
    """Low-rank plus diagonal Normal: covariance S (I + G G^T) S, S = diag(scale), G (latent_dim x rank) from the encoder."""

    latent_dim: int = eqx.field(static=True)
    rank: int = eqx.field(static=True)

    def __init__(self, latent_dim, rank=2, *, key=None):
        lowrank_outputs(latent_dim, rank)
        self.latent_dim, self.rank = int(latent_dim), rank

    @classmethod
    def extra_outputs(cls, latent_dim: int, rank: int = 2) -> int:
        """``latent_dim * rank``: the entries of G, row by row."""
        return lowrank_outputs(latent_dim, rank)

    def __call__(self, loc, scale, extra=None):
        shape = _extra("lowrank", extra, self.latent_dim * self.rank, loc).reshape(loc.shape + (self.rank,))
        return dist.LowRankMultivariateNormal(loc, cov_factor=scale[..., None] * shape, cov_diag=scale * scale)


@register("guide", "fullrank", backend=BACKEND)
class FullRankGuide(eqx.Module):
    """Full-covariance Normal: Cholesky factor diag(scale) (I + M), M strictly lower triangular from the encoder."""

    latent_dim: int = eqx.field(static=True)

    def __init__(self, latent_dim, *, key=None):
        self.latent_dim = int(latent_dim)

    @classmethod
    def extra_outputs(cls, latent_dim: int) -> int:
        """``latent_dim * (latent_dim - 1) / 2``: the strictly lower triangle, row by row."""
        return fullrank_outputs(latent_dim)

    def scale_tril(self, scale, extra):
        """The Cholesky factor ``diag(scale) (I + M)``, M strictly lower with ``extra`` row by row (as Pyro's)."""
        z = self.latent_dim
        rows, cols = np.tril_indices(z, -1)
        lower = jnp.zeros(scale.shape + (z,), scale.dtype)
        if rows.size:
            lower = lower.at[..., rows, cols].set(extra)
        return scale[..., :, None] * (lower + jnp.eye(z, dtype=scale.dtype))

    def __call__(self, loc, scale, extra=None):
        extra = _extra("fullrank", extra, fullrank_outputs(self.latent_dim), loc)
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril(scale, extra))


# ------------------------------------------------------------------------ inverse autoregressive flow
def made_masks(latent_dim: int, context_dim: int, hidden, permutation) -> list[np.ndarray]:
    """The masks of a MADE network, as ``pyro.nn.auto_reg_nn.create_mask`` builds them.

    Inputs are ``[context, z]``; hidden unit ``k`` of a layer gets a degree ``d_k`` spread
    evenly over the variables; a weight is kept where the receiving degree allows it, so
    output ``i`` (for mean and log scale alike) sees only the variables before ``i`` in
    ``permutation`` (and all of the context). Returns boolean ``(out, in)`` arrays.
    """
    var_index = np.empty(latent_dim, np.float32)
    var_index[np.asarray(permutation)] = np.arange(latent_dim, dtype=np.float32)
    input_indices = np.concatenate([np.zeros(context_dim, np.float32), 1 + var_index])

    def degrees(top, size):
        # torch.linspace's float32 kernel: start + step * i for the first half, end - step *
        # (size - 1 - i) for the second, each a fused multiply-add (one rounding, emulated in
        # float64). Values near k + 0.5 round differently with numpy's linspace, so copy it.
        # Rounding is half to even in both libraries.
        i = np.arange(size)
        step = np.float64(np.float32(np.float32(top) - np.float32(1)) / np.float32(max(size - 1, 1)))
        lo = (1.0 + step * i).astype(np.float32)
        hi = (np.float64(np.float32(top)) - step * (size - 1 - i)).astype(np.float32)
        return np.round(np.where((i < size // 2) | (size == 1), lo, hi))

    if context_dim > 0:
        hidden_indices = [degrees(latent_dim, h) - 1 for h in hidden]
    else:
        hidden_indices = [degrees(latent_dim - 1, h) for h in hidden]
    output_indices = np.tile(var_index + 1, 2)
    masks = [hidden_indices[0][:, None] >= input_indices[None, :]]
    for prev, cur in zip(hidden_indices[:-1], hidden_indices[1:]):
        masks.append(cur[:, None] >= prev[None, :])
    masks.append(output_indices[:, None] > hidden_indices[-1][None, :])
    return masks


class _MaskedLinear(eqx.Module):
    """``x @ (weight * mask).T + bias``; the mask (boolean, not a parameter) is never trained."""

    weight: jax.Array
    bias: jax.Array
    mask: jax.Array

    def __init__(self, mask: np.ndarray, key):
        n_out, n_in = mask.shape
        k1, k2 = jax.random.split(key)
        # The default initialization of torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        lim = 1.0 / math.sqrt(n_in)
        self.weight = jax.random.uniform(k1, (n_out, n_in), minval=-lim, maxval=lim)
        self.bias = jax.random.uniform(k2, (n_out,), minval=-lim, maxval=lim)
        self.mask = jnp.asarray(mask, dtype=bool)

    def __call__(self, x):
        return x @ (self.weight * self.mask).T + self.bias


class _MADE(eqx.Module):
    """Masked autoregressive network returning ``(mean, log_scale)``; mirrors ConditionalAutoRegressiveNN."""

    layers: list
    permutation: jax.Array
    latent_dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)

    def __init__(self, latent_dim, context_dim, hidden, permutation, key):
        masks = made_masks(latent_dim, context_dim, hidden, permutation)
        keys = jax.random.split(key, len(masks))
        self.layers = [_MaskedLinear(m, k) for m, k in zip(masks, keys)]
        self.permutation = jnp.asarray(permutation, dtype=jnp.int32)
        self.latent_dim, self.context_dim = latent_dim, context_dim

    def __call__(self, x, context):
        h = x
        if self.context_dim:
            h = jnp.concatenate([jnp.broadcast_to(context, x.shape[:-1] + context.shape[-1:]), x], axis=-1)
        for layer in self.layers[:-1]:
            h = jax.nn.relu(layer(h))
        h = self.layers[-1](h).reshape(x.shape[:-1] + (2, self.latent_dim))
        return h[..., 0, :], h[..., 1, :]


class _Flow(eqx.Module):
    """One flow; its network sits under ``nn`` as in ``pyro``'s ConditionalAffineAutoregressive."""

    nn: _MADE


@register("guide", "iaf", backend=BACKEND)
class IAFGuide(eqx.Module):
    """Inverse autoregressive flow: the encoder's diagonal Normal through num_flows masked affine flows.

    See the Pyro backend's ``IAFGuide`` for the construction; with ``context_dim > 0``
    (default 8) every flow is conditioned on a context vector the encoder computes from x.
    NumPyro's :class:`~numpyro.distributions.flows.InverseAutoregressiveTransform` applies
    each flow with the same log-scale clipping as Pyro's ``AffineAutoregressive``.
    """

    flows: list
    latent_dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)

    def __init__(self, latent_dim, num_flows=2, hidden=(64,), context_dim=8, *, key):
        self.latent_dim = int(latent_dim)
        num_flows, hidden, self.context_dim = iaf_settings(self.latent_dim, num_flows, hidden, context_dim)
        keys = jax.random.split(key, num_flows)
        self.flows = [
            _Flow(_MADE(self.latent_dim, self.context_dim, hidden, iaf_permutation(self.latent_dim, i), keys[i]))
            for i in range(num_flows)
        ]

    @classmethod
    def extra_outputs(cls, latent_dim: int, num_flows: int = 2, hidden=(64,), context_dim: int = 8) -> int:
        """``context_dim``: the context vector the flows are conditioned on."""
        return iaf_settings(latent_dim, num_flows, hidden, context_dim)[2]

    def __call__(self, loc, scale, extra=None):
        context = _extra("iaf", extra, self.context_dim, loc)
        base = dist.Normal(loc, scale).to_event(1)
        transforms = [
            InverseAutoregressiveTransform(functools.partial(flow.nn, context=context)) for flow in self.flows
        ]
        return dist.TransformedDistribution(base, transforms)
