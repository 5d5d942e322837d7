"""Held-out evaluation for the NumPyro backend: ELBO terms and chunked IWAE log p(x).

Mirrors :mod:`ppvae.backends.pyro.evaluation`; jitted functions are built once per VAE
and reused, so repeated evaluations do not recompile.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.kl import kl_divergence

from ppvae.backends.numpyro.guides import is_diagonal, location, sample_with_log_prob
from ppvae.backends.numpyro.model import VAE
from ppvae.model import linear_gaussian
from ppvae.model.linear_gaussian import is_linear_gaussian
from ppvae.model.priors import prior_distribution
from ppvae.backends.numpyro.objectives import elbo_parts, log_weights

# Bound on the largest per-chunk tensor (chunk, batch, features), as in the Pyro backend.
MAX_ELEMENTS = 2**20


class Evaluator:
    """Jitted evaluation functions for one VAE (parameters are arguments, not constants)."""

    def __init__(self, vae: VAE):
        self.vae = vae
        self._terms = jax.jit(self._elbo_terms)
        self._log_px_batch = jax.jit(self._log_px_batch_fn, static_argnums=(3, 4))

    def _layered_terms(self, params, key, x):
        """:meth:`_elbo_terms` of a hierarchical VAE, from the traces, summed over the layers.

        The KL per dimension has no single meaning across layers (NaN), and the codes are z_1's,
        every layer's the locs of q (:meth:`~ppvae.backends.numpyro.model.VAE.posterior_layers`:
        for a ladder VAE those of its top-down pass, not the encoder's).
        """
        model = handlers.substitute(self.vae.model, data=params)
        guide = handlers.substitute(self.vae.guide, data=params)
        log_px, kl, by_site = elbo_parts(model, guide, key, x, 1.0)
        modules = self.vae.with_params(params)
        layers = self.vae.posterior_layers(modules, *modules["encoder"](self.vae.encoder_input(x, None))[:2])
        loc = layers[0][0]
        above = {site: layer_loc for site, (layer_loc, _) in zip(self.vae.sites[1:], layers[1:])}
        return -log_px, kl, jnp.full(loc.shape, jnp.nan), loc, by_site, above

    def _elbo_terms(self, params, key, x, y=None):
        if self.vae.hierarchical:  # no conditional hierarchical VAE: plan_layers refuses it
            return self._layered_terms(params, key, x)
        m = self.vae.with_params(params)
        q_z = self.vae.posterior(m, x, y)
        p = prior_distribution(m["prior"], m["encoder"])
        if not is_diagonal(q_z):  # a correlated or flow q: its KL does not split by dimension
            z, log_q = sample_with_log_prob(q_z, key)
            rec = -m["likelihood"](m["decoder"](self.vae.decoder_input(z, y))).log_prob(x)
            return rec, log_q - p.log_prob(z), jnp.full(z.shape, jnp.nan), location(q_z)
        q = q_z.base_dist
        loc, scale = q.loc, q.scale
        z = loc + scale * jax.random.normal(key, loc.shape)
        rec = -m["likelihood"](m["decoder"](self.vae.decoder_input(z, y))).log_prob(x)
        try:
            per_dim = kl_divergence(q, p.base_dist)
            kl = per_dim.sum(-1)
        except (NotImplementedError, AttributeError):
            kl = q.to_event(1).log_prob(z) - p.log_prob(z)
            per_dim = jnp.full(z.shape, jnp.nan)
        return rec, kl, per_dim, loc

    def _log_px_batch_fn(self, params, key, x, num_samples, chunk, y=None):
        """log mean_k w_k for one batch: a scan over chunks of samples, in one compiled call.

        The last chunk may run past ``num_samples``; its extra samples get weight zero.
        ``y``: the labels of a conditional VAE (then it is log p(x|y)).
        """
        model = handlers.substitute(self.vae.model, data=params)
        guide = handlers.substitute(self.vae.guide, data=params)
        n_chunks = -(-num_samples // chunk)

        def body(total, inputs):
            i, k = inputs
            lw = log_weights(model, guide, k, x, 1.0, num_particles=chunk, y=y)
            valid = (i * chunk + jnp.arange(chunk)) < num_samples
            lw = jnp.where(valid[:, None], lw, -jnp.inf)
            return jnp.logaddexp(total, jax.scipy.special.logsumexp(lw, 0)), None

        start = jnp.full(x.shape[0], -jnp.inf)
        total, _ = jax.lax.scan(body, start, (jnp.arange(n_chunks), jax.random.split(key, n_chunks)))
        return total - math.log(num_samples)

    def elbo_terms(self, params, x: jax.Array, key, batch_size: int = 500, y=None) -> dict[str, np.ndarray]:
        """Per-datapoint reconstruction (one draw), KL (analytic where it exists), KL per dim, loc.

        ``y``: the labels of a conditional VAE. A hierarchical VAE adds ``kl_sites`` (each
        latent site's part of the KL) and ``loc_sites`` (the codes of the layers above z_1).
        """
        outs = []
        for i, start in enumerate(range(0, x.shape[0], batch_size)):
            yb = None if y is None else y[start : start + batch_size]
            outs.append(self._terms(params, jax.random.fold_in(key, i), x[start : start + batch_size], yb))
        rec, kl, per_dim, loc = (np.concatenate([np.asarray(o[j], dtype=np.float64) for o in outs]) for j in range(4))
        terms = {"reconstruction": rec, "kl": kl, "kl_per_dim": per_dim, "loc": loc}
        if self.vae.hierarchical:  # each layer's KL, and the codes of the layers above z_1
            terms["kl_sites"] = {s: np.concatenate([np.asarray(o[4][s], np.float64) for o in outs]) for s in outs[0][4]}
            terms["loc_sites"] = {
                s: np.concatenate([np.asarray(o[5][s], np.float64) for o in outs]) for s in outs[0][5]
            }
        return terms

    def log_px(
        self,
        params,
        x: jax.Array,
        num_samples: int,
        key,
        batch_size: int = 100,
        max_elements: int = MAX_ELEMENTS,
        y=None,
    ) -> np.ndarray:
        """Per-datapoint IWAE estimate of log p(x) (log p(x|y) given labels ``y``), chunked."""
        features = max(1, math.prod(self.vae.modules["likelihood"].param_shape))
        out = []
        chunk = max(1, min(num_samples, max_elements // (features * min(batch_size, x.shape[0]))))
        for i, start in enumerate(range(0, x.shape[0], batch_size)):
            xb = x[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            out.append(
                np.asarray(
                    self._log_px_batch(params, jax.random.fold_in(key, i), xb, num_samples, chunk, yb), dtype=np.float64
                )
            )
        return np.concatenate(out)


def exact_log_px(vae: VAE, params, x, y=None) -> np.ndarray | None:
    """Exact log p(x) (log p(x|y) when conditional) for the linear-Gaussian model, else ``None``.

    See :mod:`ppvae.model.linear_gaussian`. A hierarchical VAE gets ``None``: the formula is
    the one-layer model's, and p(z_1|z_2) need not be linear-Gaussian.
    """
    from ppvae.backends.numpyro.nets import LinearDecoder

    if vae.hierarchical:
        return None
    m = vae.with_params(params)
    if not (isinstance(m["decoder"], LinearDecoder) and is_linear_gaussian(m["prior"], m["likelihood"])):
        return None
    return linear_gaussian.exact_log_px(
        x,
        m["decoder"].linear.weight,
        m["decoder"].linear.bias,
        m["prior"].loc,
        m["prior"].scale,
        np.exp(np.asarray(m["likelihood"].log_scale, np.float64)),
        None if y is None else np.asarray(y),
    )
