"""The estimators: analytic-KL ELBO, sampled ELBO and the per-datapoint IWAE bound (with
the plain or the doubly-reparameterized gradient).

All three are computed from one guide trace and the model replayed on it, so the
reconstruction term, the KL term and the loss come from the *same* draws. For ppvae's own
VAE outside any Pyro handler the two traces' sites are computed directly, with the same
values and gradients (:mod:`.direct`); every other model/guide pair is traced. Every term is
first formed per datapoint (shape ``(K, B)`` for K particles and B points); the plate's
dataset scale N/B is applied only at the end. That order matters for the IWAE bound:
``log mean_k w_k`` must be taken per datapoint *before* anything is summed over the
batch, otherwise the result is a bound on the whole batch's likelihood, not a sum of
per-datapoint bounds (the pitfall behind Pyro issues 3104 and 2220 with ``RenyiELBO``).

β is read off the traces, as the ratio of the ``"z"`` site's scale to the ``"x"`` site's
scale; the guide's and the model's ``"z"`` must carry the same scale. A model with several
latent sites (a hierarchical VAE's ``"z1"`` ... ``"zL"``) has every term summed over them,
each carrying the same β.

``dreg`` has the IWAE bound's value but the doubly-reparameterized gradient (DReG): the
guide's parameters get ``sum_k c_k * dlog w_k/dz_k * dz_k/dphi`` with log q evaluated at
stopped guide parameters, where ``c_k = w~_k^2`` for β = 1 (``w~`` are the normalized
weights of one datapoint); the model's parameters get the plain IWAE gradient
``sum_k w~_k * grad log w_k``. The score-function term of the IWAE gradient, whose
variance grows with K, is gone; its expectation is carried by the ``w~_k^2`` reweighting
instead, so the expected gradient is the IWAE gradient. For β != 1,
``log w = log p(x|z) + β (log p(z) - log q(z|x))`` and the same derivation gives
``c_k = (1 - β) w~_k + β w~_k^2`` (which is what is used for every β).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from ppvae.errors import UsageError
from ppvae.inference import estimators
from ppvae.model.hierarchy import analytic_sites, dreg_refusal, nearest_to_x
from ppvae.backends.pyro.direct import direct_traces

__all__ = ["Terms", "terms", "elbo_parts", "log_densities", "log_weights", "latent_site_names", "VAEObjective"]


@dataclass
class Terms:
    """Per-datapoint objective terms of one minibatch (means over the batch, in nats).

    ``loss`` is the negative bound (what is minimized): ``reconstruction + beta * kl``
    for the ELBOs, ``-log mean_k w_k`` for IWAE and DReG (for DReG only ``loss`` carries
    the DReG gradient). ``data_scale`` is N / B, so
    ``loss * batch * data_scale`` is the dataset-scaled loss Pyro's ELBOs report.
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    beta: torch.Tensor
    data_scale: float
    batch: int


def _traces(model, guide, args, kwargs, num_particles: int):
    # ppvae's own VAE outside any handler: the same sites without the handler stack (see .direct).
    sites = direct_traces(model, guide, args, kwargs, num_particles)
    if sites is not None:
        return sites
    if num_particles > 1:
        # Particles are an outer batch dimension, left of the "data" plate (dim -1).
        model = pyro.plate("particles", num_particles, dim=-2)(model)
        guide = pyro.plate("particles", num_particles, dim=-2)(guide)
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return model_tr, guide_tr


def _site_log_prob(site) -> torch.Tensor:
    return site["fn"].log_prob(site["value"])


def latent_site_names(trace) -> list[str]:
    """The sample sites of a trace other than ``"x"``, in the order they were sampled (plates left out).

    Of a guide's trace, these are the latent sites. A site conditioned on a value
    (``poutine.condition``, as when two backends are compared on one draw of z) is observed
    in the trace but stays a latent site of the objective.
    """
    names = []
    for name, site in trace.nodes.items():
        if name == "x" or site.get("type", "sample") != "sample":
            continue
        if "type" in site and site_is_subsample(site):  # a plate's subsample site
            continue
        names.append(name)
    return names


def _latent_sites(model_tr, guide_tr) -> list[str]:
    """The guide's latent sites, checked against the model's; the contract's error where one is missing."""
    names = latent_site_names(guide_tr)
    if "x" not in model_tr.nodes:
        raise UsageError("the model/guide pair has no sample site 'x'; ppvae needs sites 'z' and 'x'")
    if not names:
        raise UsageError("the model/guide pair has no sample site 'z'; ppvae needs sites 'z' and 'x'")
    missing = [n for n in names if n not in model_tr.nodes]
    if missing:
        raise UsageError(
            f"the guide samples {missing[0]!r} but the model has no such site; name the latent sites alike"
        )
    return names


def _closed_form_sites(model_tr, names) -> set[str]:
    """The sites among ``names`` (the guide's order) whose KL may be taken in closed form."""
    return analytic_sites([n for n in model_tr.nodes if n in names], names)


def _beta(model_tr, guide_tr, names, data_scale):
    """β of the latent sites: each site's scale over the data scale, the same in model and guide and for every site."""
    betas = []
    for name in names:
        zm, zg = model_tr.nodes[name], guide_tr.nodes[name]
        if not torch.is_tensor(zm["scale"]) and not torch.is_tensor(zg["scale"]) and zm["scale"] != zg["scale"]:
            raise UsageError(
                "the {!r} site has scale {} in the model but {} in the guide: wrap it in "
                "poutine.scale(scale=beta) in both".format(name, zm["scale"], zg["scale"])
            )
        betas.append(zg["scale"] / data_scale)
    if any(torch.is_tensor(b) for b in betas) or len(set(betas)) == 1:
        return betas[0]
    raise UsageError(
        f"the latent sites {', '.join(names)} carry different β scales ({', '.join(str(b) for b in betas)}); "
        "wrap every latent site in the same poutine.scale(scale=beta)"
    )


def _parts(model_tr, guide_tr, analytic_kl: bool, by_site: dict | None = None):
    """Per-datapoint log p(x|z), KL part, log p(z) - log q(z|x), β and the data scale.

    Summed over every latent site. With ``analytic_kl``, a site's KL is taken in closed form
    where one exists and the orders of the two traces allow it
    (:func:`ppvae.model.hierarchy.analytic_sites`), and sampled otherwise; ``log p(z) -
    log q(z|x)`` is then ``None`` (it is computed only when used). ``by_site``, a dict, receives
    each latent site's part of the KL.
    """
    names = _latent_sites(model_tr, guide_tr)
    x_site = model_tr.nodes["x"]
    data_scale = x_site["scale"]
    beta = _beta(model_tr, guide_tr, names, data_scale)
    log_px = _site_log_prob(x_site)
    closed_form = _closed_form_sites(model_tr, names) if analytic_kl else set()
    kl, log_ratio = 0.0, 0.0
    for name in names:
        zm, zg = model_tr.nodes[name], guide_tr.nodes[name]
        if name in closed_form:
            try:
                site_kl = kl_divergence(zg["fn"], zm["fn"]).expand_as(log_px)
                kl = kl + site_kl
                if by_site is not None:
                    by_site[name] = site_kl
                continue
            except NotImplementedError:
                pass  # no closed form: fall back to the sampled estimate
        sampled = _site_log_prob(zg) - _site_log_prob(zm)
        kl, log_ratio = kl + sampled, log_ratio - sampled
        if by_site is not None:
            by_site[name] = sampled
    return log_px, kl, None if analytic_kl else log_ratio, beta, float(data_scale)


def _factors(fn, what: str):
    """The per-dimension distribution of a latent site that factorizes over its last axis."""
    if isinstance(fn, Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist
    raise UsageError(estimators.free_bits_factor_refusal(what, type(fn).__name__))


def _kl_per_dimension(model_tr, guide_tr, analytic_kl: bool) -> list[torch.Tensor]:
    """KL(q || p) of each latent dimension per datapoint, ``(..., B, D)`` per latent site: closed form, else sampled."""
    names = _latent_sites(model_tr, guide_tr)
    closed_form = _closed_form_sites(model_tr, names) if analytic_kl else set()
    out = []
    for name in names:
        zg, zm = guide_tr.nodes[name], model_tr.nodes[name]
        q, p = _factors(zg["fn"], "guide"), _factors(zm["fn"], "prior")
        if name in closed_form:
            try:
                out.append(kl_divergence(q, p).expand(zg["value"].shape))
                continue
            except NotImplementedError:
                pass
        out.append(q.log_prob(zg["value"]) - p.log_prob(zg["value"]))
    return out


def _refuse(fn, name: str) -> UsageError:
    return estimators.dreg_unsupported(type(fn).__name__, name)


def _stopped(fn, name: str = "z"):
    """A copy of the guide's distribution with its parameters cut from the graph."""
    if isinstance(fn, Independent):
        return dist.Independent(_stopped(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.ExpandedDistribution):
        return dist.ExpandedDistribution(_stopped(fn.base_dist), fn.batch_shape)
    if isinstance(fn, Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach())
    if isinstance(fn, LowRankMultivariateNormal):
        return dist.LowRankMultivariateNormal(fn.loc.detach(), fn.cov_factor.detach(), fn.cov_diag.detach())
    if isinstance(fn, MultivariateNormal):
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    raise _refuse(fn, name)


def _with_dreg_gradient(loss, log_w, model_tr, guide_tr, beta):
    """``loss`` (the negative IWAE bound per datapoint) with the DReG gradient attached.

    One backward pass: the surrogate ``-sum_k stop(w~_k) log w'_k``, with ``log w'`` using
    log q at stopped guide parameters, gives the model's parameters their IWAE gradient;
    the guide's parameters see ``z`` only, and a hook on ``z`` multiplies the gradient
    that reaches it by ``(1 - β) + β w~_k`` (known once the forward pass is done).
    """
    names = _latent_sites(model_tr, guide_tr)
    if len(names) > 1:
        raise UsageError(dreg_refusal(names))
    zg = guide_tr.nodes[names[0]]
    fn, z = zg["fn"], zg["value"]
    if not fn.has_rsample:
        raise UsageError(f"estimator 'dreg' needs a reparameterized guide; {type(fn).__name__} has no rsample")
    q_stopped = _stopped(fn)
    log_w_stopped = _site_log_prob(model_tr.nodes["x"]) + beta * (
        _site_log_prob(model_tr.nodes[names[0]]) - q_stopped.log_prob(z)
    )
    log_w_stopped = log_w_stopped.reshape(log_w.shape)
    w = torch.softmax(log_w.detach(), 0)
    if z.requires_grad:  # not under torch.no_grad()
        coef = ((1.0 - beta) + beta * w).reshape(fn.batch_shape + (1,) * len(fn.event_shape))
        z.register_hook(lambda grad: grad * coef)
    surrogate = -(w * log_w_stopped).sum(0)
    # The value stays the IWAE bound exactly: surrogate - surrogate.detach() is 0.
    return loss.detach() + (surrogate - surrogate.detach())


def terms(
    model, guide, *args, estimator: str = "meanfield", num_particles: int = 1, free_bits: float = 0.0, **kwargs
) -> Terms:
    """Compute the objective's terms for one minibatch.

    Parameters
    ----------
    model, guide : callable
        A model/guide pair following the contract (sites ``"z"``, ``"x"``, plate ``"data"``).
    *args, **kwargs
        Passed to both (typically the batch ``x`` and ``beta``).
    estimator : {"meanfield", "trace", "iwae", "dreg"}
        Which bound; ``dreg`` is the IWAE bound with the doubly-reparameterized gradient
        (its guide must be a Normal, MultivariateNormal or LowRankMultivariateNormal).
    num_particles : int
        K: samples of z per datapoint.
    free_bits : float
        λ > 0 replaces the ELBO's KL term by ``sum_d max(λ, mean over the batch of KL_d)``
        (:func:`ppvae.inference.estimators.free_bits_refusal`); ``kl`` stays the true KL.
    """
    entry = estimators.estimator(estimator)
    if free_bits and estimators.free_bits_refusal(estimator):
        raise UsageError(estimators.free_bits_refusal(estimator))
    model_tr, guide_tr = _traces(model, guide, args, kwargs, num_particles)
    log_px, kl, log_ratio, beta, data_scale = _parts(model_tr, guide_tr, entry.analytic_kl)
    if log_px.dim() == 1:  # one particle: add the particle dimension
        log_px, kl = log_px[None], kl[None]
        log_ratio = None if log_ratio is None else log_ratio[None]
    reconstruction = -log_px.mean(0)
    kl_mean = kl.mean(0)
    if entry.importance_weighted:
        log_w = log_px + beta * log_ratio
        loss = -(torch.logsumexp(log_w, 0) - math.log(log_w.shape[0]))
        if estimator == "dreg":
            loss = _with_dreg_gradient(loss, log_w, model_tr, guide_tr, beta)
    elif free_bits:
        floored = sum(
            per_dim.reshape(-1, per_dim.shape[-1]).mean(0).clamp(min=free_bits).sum()
            for per_dim in _kl_per_dimension(model_tr, guide_tr, entry.analytic_kl)
        )
        loss = reconstruction + beta * floored
    else:
        loss = reconstruction + beta * kl_mean
    batch = loss.shape[0]
    beta_t = torch.as_tensor(beta, dtype=loss.dtype, device=loss.device)
    return Terms(loss.mean(), reconstruction.mean(), kl_mean.mean(), beta_t, data_scale, batch)


def elbo_parts(model, guide, *args, num_particles: int = 1, **kwargs) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Per-datapoint ``(log p(x|z), KL, KL by latent site)`` of one draw (of each of ``num_particles``).

    The KL is summed over every latent site; each site's is in closed form where
    :func:`terms`' ``meanfield`` takes it so, and sampled otherwise. All are unscaled by the
    plate, shape ``(B,)``, or ``(K, B)`` for K > 1 particles.
    """
    model_tr, guide_tr = _traces(model, guide, args, kwargs, num_particles)
    by_site: dict = {}
    log_px, kl, _, _, _ = _parts(model_tr, guide_tr, analytic_kl=True, by_site=by_site)
    return log_px, kl, by_site


def log_densities(model, guide, *args, num_particles: int, **kwargs) -> dict[str, torch.Tensor]:
    """The log densities of ``num_particles`` draws per datapoint, each ``(K, B)``, and the draws of z_1.

    ``log_lik`` is log p(x|z), ``log_prior`` the model's log density of every latent site at
    the draw (log p(z_L) + ... + log p(z_1|z_2) for a hierarchical VAE), ``log_q`` the
    guide's, and ``z`` the draws of the latent site next to x (z_1), ``(K, B, Z)``.
    """
    model_tr, guide_tr = _traces(model, guide, args, kwargs, num_particles)
    names = _latent_sites(model_tr, guide_tr)
    out = {
        "log_lik": _site_log_prob(model_tr.nodes["x"]),
        "log_prior": sum(_site_log_prob(model_tr.nodes[n]) for n in names),
        "log_q": sum(_site_log_prob(guide_tr.nodes[n]) for n in names),
        "z": guide_tr.nodes[nearest_to_x(names)]["value"],
    }
    if num_particles == 1:
        out = {k: v[None] for k, v in out.items()}
    return out


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
    ``"dreg"`` has the same loss as ``"iwae"`` and the doubly-reparameterized gradient.

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import SVI
    >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
    ...           VAEObjective("iwae", num_particles=5))  # doctest: +SKIP
    """

    def __init__(self, estimator: str = "meanfield", num_particles: int = 1):
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        estimators.estimator(estimator)  # an unknown name fails here, listing the valid ones
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
