"""Held-out evaluation: ELBO, its terms, log p(x) by the IWAE bound, active units.

Everything is computed per datapoint and in chunks: a batch of points and a chunk of
the K importance samples at a time, so peak memory is bounded by ``max_elements``
whatever K is. The running log-sum-exp over chunks is exact.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.kl import kl_divergence

from ppvae.backends.pyro.guides import is_diagonal, location
from ppvae.backends.pyro.model import VAE
from ppvae.backends.pyro.objectives import elbo_parts, log_weights
from ppvae.model import linear_gaussian
from ppvae.model.linear_gaussian import is_linear_gaussian
from ppvae.model.priors import prior_distribution

# Upper bound on the elements of the largest per-chunk tensor, (chunk, batch, features):
# 2**20 float32 values are 4 MiB: small chunks stay in cache and beat large ones on CPU.
MAX_ELEMENTS = 2**20


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def log_px_iwae(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 100,
    max_elements: int = MAX_ELEMENTS,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-datapoint IWAE estimate of log p(x) with ``num_samples`` samples of q(z|x).

    Returns a float64 tensor of shape ``(n,)``: ``log (1/K) sum_k p(x, z_k) / q(z_k|x)``.
    For a conditional VAE, ``y`` holds the labels and the estimate is of log p(x|y).
    """
    return _unscaled(vae, lambda: _log_px_iwae(vae, x, num_samples, batch_size, max_elements, y))


def _unscaled(vae: VAE, compute):
    """``compute()`` with the VAE's plate unscaled and Pyro's param store left alone."""
    saved = vae.dataset_size, vae.register_params
    vae.dataset_size, vae.register_params = None, False
    try:
        return compute()
    finally:
        vae.dataset_size, vae.register_params = saved


def _log_px_iwae(vae, x, num_samples, batch_size, max_elements, y):
    features = max(1, math.prod(vae.likelihood.param_shape))
    out = []
    for sl in _batches(x.shape[0], batch_size):
        xb = x[sl]
        labels = {} if y is None else {"y": y[sl]}
        chunk = max(1, min(num_samples, max_elements // (features * xb.shape[0])))
        total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            lw = log_weights(vae.model, vae.guide, xb, beta=1.0, num_particles=k, **labels).double()
            total = torch.logaddexp(total, torch.logsumexp(lw, 0))
            done += k
        out.append(total - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def elbo_terms(
    vae: VAE, x: torch.Tensor, batch_size: int = 500, y: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-datapoint reconstruction (one draw), KL (analytic where it exists) and latent stats.

    ``y``: the labels of a conditional VAE (the terms are then those of log p(x|y)'s ELBO).

    Returns float64 tensors: ``reconstruction`` (n,), ``kl`` (n,), ``kl_per_dim`` (n, Z) where
    the KL factorizes over dimensions (else NaN), and ``loc`` (n, Z), the posterior means
    (for a flow guide, the means of the Normal it transforms). A hierarchical VAE adds
    ``kl_sites``, each latent site's part of the KL (``{"z1": (n,), ...}``), and
    ``loc_sites``, the codes of the layers above z_1 (``{"z2": (n, Z2), ...}``).
    """
    recs, kls, kl_dims, locs = [], [], [], []
    kl_sites: dict[str, list] = {}
    loc_sites: dict[str, list] = {}
    for sl in _batches(x.shape[0], batch_size):
        xb = x[sl]
        yb = None if y is None else y[sl]
        if vae.hierarchical:
            # Several latent sites: the terms of the traces, summed over the layers; the KL
            # per dimension has no single meaning and the codes are z_1's.
            log_px, kl, by_site = _unscaled(vae, lambda: elbo_parts(vae.model, vae.guide, xb, beta=1.0))
            recs.append(-log_px.double())
            kls.append(kl.double())
            for site, site_kl in by_site.items():
                kl_sites.setdefault(site, []).append(site_kl.double())
            layers = vae.encode_layers(xb)
            loc = layers[0][0]
            for site, (layer_loc, _) in zip(vae.sites[1:], layers[1:]):
                loc_sites.setdefault(site, []).append(layer_loc.double())
            kl_dims.append(torch.full(loc.shape, math.nan, dtype=torch.float64, device=x.device))
            locs.append(loc.double())
            continue
        q = vae.posterior(xb, yb)
        p = prior_distribution(vae.prior, vae.encoder)
        z = q.rsample()
        recs.append(-vae.observation(z, yb).log_prob(xb).double())
        per_dim = None
        if is_diagonal(q):  # only a diagonal q's KL splits over dimensions
            try:
                per_dim = kl_divergence(q.base_dist, p.base_dist.expand(q.base_dist.batch_shape))
            except (NotImplementedError, AttributeError):
                pass
        if per_dim is not None:
            kl_dims.append(per_dim.double())
            kls.append(per_dim.sum(-1).double())
        else:
            kls.append((q.log_prob(z) - p.log_prob(z)).double())
            kl_dims.append(torch.full(z.shape, math.nan, dtype=torch.float64, device=x.device))
        locs.append(location(q).double())
    return {
        "reconstruction": torch.cat(recs),
        "kl": torch.cat(kls),
        "kl_per_dim": torch.cat(kl_dims),
        "loc": torch.cat(locs),
        **({"kl_sites": {site: torch.cat(parts) for site, parts in kl_sites.items()}} if kl_sites else {}),
        **({"loc_sites": {site: torch.cat(parts) for site, parts in loc_sites.items()}} if loc_sites else {}),
    }


def exact_log_px(vae: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
    """Exact log p(x) (log p(x|y) when conditional) for the linear-Gaussian model, else ``None``.

    See :mod:`ppvae.model.linear_gaussian`; float64, on the CPU.
    """
    from ppvae.backends.pyro.nets import LinearDecoder

    # One stochastic layer only: a hierarchical VAE's marginal is not the one-layer formula's.
    if vae.hierarchical or not (
        isinstance(vae.decoder, LinearDecoder) and is_linear_gaussian(vae.prior, vae.likelihood)
    ):
        return None
    with torch.no_grad():

        def host(t):
            return t.detach().cpu().double().numpy()

        scale = host(vae.likelihood.log_scale.exp())
        out = linear_gaussian.exact_log_px(
            host(x),
            host(vae.decoder.linear.weight),
            host(vae.decoder.linear.bias),
            host(vae.prior.loc),
            host(vae.prior.scale),
            scale,
            None if y is None else y.cpu().numpy(),
        )
    return torch.from_numpy(out)
