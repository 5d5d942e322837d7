"""The estimators: analytic-KL ELBO, sampled ELBO and the per-datapoint IWAE bound.

All three are computed from one guide trace and the model replayed on it, so the
reconstruction term, the KL term and the loss come from the *same* draws. Every term is
first formed per datapoint (shape ``(K, B)`` for K particles and B points); the plate's
dataset scale N/B is applied only at the end. That order matters for the IWAE bound:
``log mean_k w_k`` must be taken per datapoint *before* anything is summed over the
batch, otherwise the result is a bound on the whole batch's likelihood, not a sum of
per-datapoint bounds (the pitfall behind Pyro issues 3104 and 2220 with ``RenyiELBO``).

β is read off the traces, as the ratio of the ``"z"`` site's scale to the ``"x"`` site's
scale; the guide's and the model's ``"z"`` must carry the same scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import ELBO

from ...errors import UsageError

__all__ = ["Terms", "terms", "log_weights", "VAEObjective", "OBJECTIVES"]

OBJECTIVES = ("meanfield", "trace", "iwae")


@dataclass
class Terms:
    """Per-datapoint objective terms of one minibatch (means over the batch, in nats).

    ``loss`` is the negative bound (what is minimized): ``reconstruction + beta * kl``
    for the ELBOs, ``-log mean_k w_k`` for IWAE. ``data_scale`` is N / B, so
    ``loss * batch * data_scale`` is the dataset-scaled loss Pyro's ELBOs report.
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    beta: torch.Tensor
    data_scale: float
    batch: int


def _traces(model, guide, args, kwargs, num_particles: int):
    if num_particles > 1:
        # Particles are an outer batch dimension, left of the "data" plate (dim -1).
        model = pyro.plate("particles", num_particles, dim=-2)(model)
        guide = pyro.plate("particles", num_particles, dim=-2)(guide)
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return model_tr, guide_tr


def _site_log_prob(site) -> torch.Tensor:
    return site["fn"].log_prob(site["value"])


def _parts(model_tr, guide_tr, analytic_kl: bool):
    """Per-datapoint log p(x|z), KL part, log p(z) - log q(z|x), β and the data scale."""
    try:
        x_site, zm, zg = model_tr.nodes["x"], model_tr.nodes["z"], guide_tr.nodes["z"]
    except KeyError as exc:  # a user's model without the contract's sites
        raise UsageError(f"the model/guide pair has no sample site {exc}; ppvae needs sites 'z' and 'x'") from None
    data_scale = x_site["scale"]
    if not torch.is_tensor(zm["scale"]) and not torch.is_tensor(zg["scale"]) and zm["scale"] != zg["scale"]:
        raise UsageError(
            "the 'z' site has scale {} in the model but {} in the guide: wrap it in "
            "poutine.scale(scale=beta) in both".format(zm["scale"], zg["scale"])
        )
    beta = zg["scale"] / data_scale
    log_px = _site_log_prob(x_site)
    log_pz = _site_log_prob(zm)
    log_qz = _site_log_prob(zg)
    sampled_kl = log_qz - log_pz
    kl = sampled_kl
    if analytic_kl:
        try:
            kl = kl_divergence(zg["fn"], zm["fn"]).expand_as(log_px)
        except NotImplementedError:
            kl = sampled_kl  # no closed form: fall back to the sampled estimate
    return log_px, kl, -sampled_kl, beta, float(data_scale)


def terms(model, guide, *args, estimator: str = "meanfield", num_particles: int = 1, **kwargs) -> Terms:
    """Compute the objective's terms for one minibatch.

    Parameters
    ----------
    model, guide : callable
        A model/guide pair following the contract (sites ``"z"``, ``"x"``, plate ``"data"``).
    *args, **kwargs
        Passed to both (typically the batch ``x`` and ``beta``).
    estimator : {"meanfield", "trace", "iwae"}
        Which bound.
    num_particles : int
        K: samples of z per datapoint.
    """
    if estimator not in OBJECTIVES:
        raise UsageError(f"unknown estimator {estimator!r}; valid: {', '.join(OBJECTIVES)}")
    model_tr, guide_tr = _traces(model, guide, args, kwargs, num_particles)
    log_px, kl, log_ratio, beta, data_scale = _parts(model_tr, guide_tr, estimator == "meanfield")
    if log_px.dim() == 1:  # one particle: add the particle dimension
        log_px, kl, log_ratio = log_px[None], kl[None], log_ratio[None]
    reconstruction = -log_px.mean(0)
    kl_mean = kl.mean(0)
    if estimator == "iwae":
        log_w = log_px + beta * log_ratio
        loss = -(torch.logsumexp(log_w, 0) - math.log(log_w.shape[0]))
    else:
        loss = reconstruction + beta * kl_mean
    batch = loss.shape[0]
    beta_t = torch.as_tensor(beta, dtype=loss.dtype, device=loss.device)
    return Terms(loss.mean(), reconstruction.mean(), kl_mean.mean(), beta_t, data_scale, batch)


def log_weights(model, guide, *args, num_particles: int, **kwargs) -> torch.Tensor:
    """Importance log-weights ``log p(x, z_k) - log q(z_k|x)`` per particle and datapoint.

    Returns a tensor of shape ``(num_particles, batch)``, with β as set by the caller
    (evaluation uses β = 1, the true joint).
    """
    model_tr, guide_tr = _traces(model, guide, args, kwargs, num_particles)
    log_px, _, log_ratio, beta, _ = _parts(model_tr, guide_tr, analytic_kl=False)
    log_w = log_px + beta * log_ratio
    return log_w if log_w.dim() == 2 else log_w[None]


class VAEObjective(ELBO):
    """A ppvae estimator as a ``pyro.infer.ELBO``, usable with ``pyro.infer.SVI``.

    Its loss is the dataset-scaled negative bound (like Pyro's own ELBOs): for
    ``"trace"`` it equals ``Trace_ELBO``'s loss on the same draws, for ``"meanfield"``
    ``TraceMeanField_ELBO``'s, and for ``"iwae"`` it is the sum over datapoints of the
    per-datapoint importance-weighted bound with ``num_particles`` samples.

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import SVI
    >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
    ...           VAEObjective("iwae", num_particles=5))  # doctest: +SKIP
    """

    def __init__(self, estimator: str = "meanfield", num_particles: int = 1):
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        if estimator not in OBJECTIVES:
            raise UsageError(f"unknown estimator {estimator!r}; valid: {', '.join(OBJECTIVES)}")
        self.estimator = estimator

    def _get_trace(self, model, guide, args, kwargs):
        # Required by ELBO's interface; the traces are built inside `terms`.
        return _traces(model, guide, args, kwargs, self.num_particles)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        t = terms(model, guide, *args, estimator=self.estimator, num_particles=self.num_particles, **kwargs)
        return t.loss * t.batch * t.data_scale

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())
