"""The estimators for the NumPyro backend: analytic-KL ELBO, sampled ELBO, per-datapoint IWAE
(with the plain or the doubly-reparameterized gradient).

The same mathematics as :mod:`ppvae.backends.pyro.objectives`: one guide trace, the model
replayed on it, every term formed per datapoint (``(K, B)``) before the dataset scale is
applied, β read off the ``"z"`` site's scale relative to the ``"x"`` site's. A model with
several latent sites (a hierarchical VAE's ``"z1"`` ... ``"zL"``) has every term summed over
them, each carrying the same β, a site's KL in closed form only where
:func:`ppvae.model.hierarchy.analytic_sites` allows it.

``dreg`` is the IWAE bound with the doubly-reparameterized gradient, as in the Pyro backend
(see there for the formula). JAX has no gradient hooks, so the weights ``(1 - β) + β w~_k``
enter the gradient that reaches ``z`` through a custom-VJP identity, applied to ``z`` in a
second replay of the model on the same draws. Its forward computation repeats the first
replay's operation for operation, and XLA merges the two under ``jit`` (common
subexpressions): a compiled DReG step costs what an IWAE step costs.
"""

from __future__ import annotations

import math
import operator
from functools import reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions.kl import kl_divergence
from numpyro.infer.elbo import ELBO
from numpyro.primitives import Messenger

from ppvae.errors import UsageError
from ppvae.inference import estimators
from ppvae.model.hierarchy import analytic_sites, dreg_refusal, nearest_to_x

__all__ = [
    "Terms",
    "LossKeys",
    "loss_keys",
    "terms",
    "elbo_parts",
    "log_densities",
    "log_weights",
    "latent_site_names",
    "VAEObjective",
]


class Terms(NamedTuple):
    """Per-datapoint means over the batch (nats); see the Pyro backend's ``Terms``."""

    loss: jax.Array
    reconstruction: jax.Array
    kl: jax.Array
    beta: jax.Array
    data_scale: float
    batch: int


def _with_particles(fn, num_particles: int):
    if num_particles == 1:
        return fn

    def wrapped(*args, **kwargs):
        with numpyro.plate("particles", num_particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


class LossKeys(NamedTuple):
    """The keys that the estimators' seed handlers derive from one ``rng_key``, split ahead of time.

    ``loss_keys(rng_key)`` gives exactly the keys that ``handlers.seed`` would derive inside
    the loss (the guide's key, split once for its first sample site, and the model's key),
    so passing them instead of ``rng_key`` changes no draw. Computed for a whole epoch in one
    batched call (``jax.vmap(loss_keys)``) outside the compiled loop, they leave no key
    split (a threefry loop in XLA) inside the loop's body.
    """

    guide_chain: jax.Array  # what the guide's seed handler keeps after its first split
    guide_first: jax.Array  # the key of the guide's first sample site ("z")
    model: jax.Array


def loss_keys(rng_key) -> LossKeys:
    """The :class:`LossKeys` of ``rng_key`` (the same splits, in the same order, as the seed handlers)."""
    guide_key, model_key = jax.random.split(rng_key)
    guide_chain, guide_first = jax.random.split(guide_key)  # seed: self.rng_key, sample_key = split(...)
    return LossKeys(guide_chain, guide_first, model_key)


class _PresplitSeed(Messenger):
    """``handlers.seed(fn, key)`` with its first split done ahead of time.

    The first site that needs a key gets ``first``; later ones split ``chain`` as the seed
    handler would have; sites that need no key (observed, replayed, given) are skipped by
    the same test. One instance seeds one call.
    """

    def __init__(self, fn, chain, first):
        self.rng_key, self.first = chain, first
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] not in ("sample", "prng_key", "plate", "control_flow"):
            return
        if msg["kwargs"]["rng_key"] is not None or msg["value"] is not None:
            return
        if self.first is not None:
            msg["kwargs"]["rng_key"], self.first = self.first, None
        else:
            self.rng_key, msg["kwargs"]["rng_key"] = jax.random.split(self.rng_key)


def _traces(model, guide, rng_key, args, kwargs, num_particles: int):
    keys = rng_key if isinstance(rng_key, LossKeys) else loss_keys(rng_key)
    guide = _with_particles(guide, num_particles)
    guide_tr = handlers.trace(_PresplitSeed(guide, keys.guide_chain, keys.guide_first)).get_trace(*args, **kwargs)
    return _replayed(model, keys.model, guide_tr, args, kwargs, num_particles), guide_tr


def _replayed(model, model_key, guide_tr, args, kwargs, num_particles: int):
    model = _with_particles(model, num_particles)
    return handlers.trace(handlers.replay(handlers.seed(model, model_key), guide_tr)).get_trace(*args, **kwargs)


def _site_log_prob(site) -> jax.Array:
    """``log p`` of a sample site's value, summed over the site's event.

    A Bernoulli over a multi-dimensional event (an image's ``(H, W)``) is scored on rows
    flattened to ``(..., H * W)``: NumPyro's own log-probability on the same numbers, so the
    same terms and gradients (the sum over the event may round differently in float32), but
    XLA's elementwise loops (forward and backward) then run over rows of H * W values
    instead of W (28 for MNIST), which vectorize better.
    """
    fn, value = site["fn"], site["value"]
    if isinstance(fn, dist.Independent) and type(fn.base_dist) is dist.BernoulliLogits:
        k, logits = fn.reinterpreted_batch_ndims, fn.base_dist.logits
        if k > 1 and jnp.ndim(value) >= k and logits.shape[-k:] == jnp.shape(value)[-k:]:
            rows = dist.BernoulliLogits(
                logits.reshape(logits.shape[:-k] + (-1,)), validate_args=fn.base_dist._validate_args
            )
            return rows.log_prob(jnp.reshape(value, jnp.shape(value)[:-k] + (-1,))).sum(-1)
    return fn.log_prob(value)


def latent_site_names(trace) -> list[str]:
    """The sample sites of a trace other than ``"x"``, in the order they were sampled (plates and params left out).

    Of a guide's trace, these are the latent sites. A site conditioned on a value
    (``handlers.condition``, as when two backends are compared on one draw of z) is
    observed in the trace but stays a latent site of the objective.
    """
    return [name for name, site in trace.items() if name != "x" and site.get("type") == "sample"]


def _model_order(model_tr, names) -> list[str]:
    """The order in which the model samples the latent sites ``names`` (its other sites are data)."""
    return [name for name in latent_site_names(model_tr) if name in names]


def _latent_sites(model_tr, guide_tr) -> list[str]:
    """The guide's latent sites, checked against the model's; the contract's error where one is missing."""
    names = latent_site_names(guide_tr)
    if "x" not in model_tr:
        raise UsageError("the model/guide pair has no sample site 'x'; ppvae needs sites 'z' and 'x'")
    if not names:
        raise UsageError("the model/guide pair has no sample site 'z'; ppvae needs sites 'z' and 'x'")
    missing = [n for n in names if n not in model_tr]
    if missing:
        raise UsageError(
            f"the guide samples {missing[0]!r} but the model has no such site; name the latent sites alike"
        )
    return names


def _scale(site):
    return 1.0 if site["scale"] is None else site["scale"]


def _beta(model_tr, guide_tr, names, data_scale):
    """β of the latent sites: each site's scale over the data scale, the same in model and guide and for every site.

    Scales known only while tracing (a β passed into a compiled function) cannot be
    compared; plain numbers are.
    """
    betas = []
    for name in names:
        z_scale, zm_scale = _scale(guide_tr[name]), _scale(model_tr[name])
        if isinstance(z_scale, float) and isinstance(zm_scale, float) and z_scale != zm_scale:
            raise UsageError(
                f"the {name!r} site has scale {zm_scale} in the model but {z_scale} in the guide: "
                "wrap it in handlers.scale(scale=beta) in both"
            )
        betas.append(z_scale / data_scale)
    if not all(isinstance(b, float) for b in betas) or len(set(betas)) == 1:
        return betas[0]
    raise UsageError(
        f"the latent sites {', '.join(names)} carry different β scales ({', '.join(str(b) for b in betas)}); "
        "wrap every latent site in the same handlers.scale(scale=beta)"
    )


def _total(values):
    """The sum of a non-empty list, starting from its first element: one site's term is that term, bit for bit."""
    return reduce(operator.add, values)


def _guide_log_prob(site) -> jax.Array:
    # A flow guide (guide "iaf") records its intermediates when sampling: scoring with them
    # needs no inversion of the flow.
    if site.get("intermediates"):
        return site["fn"].log_prob(site["value"], site["intermediates"])
    return site["fn"].log_prob(site["value"])


def _parts(model_tr, guide_tr, analytic_kl: bool, by_site: dict | None = None):
    """Per-datapoint log p(x|z), KL part, log p(z) - log q(z|x), β and the data scale.

    Summed over every latent site. With ``analytic_kl``, a site's KL is taken in closed form
    where one exists and the orders of the two traces allow it
    (:func:`ppvae.model.hierarchy.analytic_sites`), and sampled otherwise; the third value
    is always the sampled log-ratio. ``by_site``, a dict, receives each latent site's part of
    the KL.
    """
    names = _latent_sites(model_tr, guide_tr)
    x_site = model_tr["x"]
    data_scale = _scale(x_site)
    beta = _beta(model_tr, guide_tr, names, data_scale)
    log_px = _site_log_prob(x_site)
    closed_form = analytic_sites(_model_order(model_tr, names), names) if analytic_kl else set()
    kls, sampled = [], []
    for name in names:
        zm, zg = model_tr[name], guide_tr[name]
        sampled_kl = _guide_log_prob(zg) - zm["fn"].log_prob(zm["value"])
        sampled.append(sampled_kl)
        kl = sampled_kl
        if name in closed_form:
            try:
                kl = jnp.broadcast_to(kl_divergence(zg["fn"], zm["fn"]), log_px.shape)
            except NotImplementedError:
                pass  # no closed form: the sampled estimate
        kls.append(kl)
        if by_site is not None:
            by_site[name] = kl
    return log_px, _total(kls), -_total(sampled), beta, data_scale


def _factors(fn, what: str):
    """The per-dimension distribution of a latent site that factorizes over its last axis."""
    if isinstance(fn, dist.Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist
    raise UsageError(estimators.free_bits_factor_refusal(what, type(fn).__name__))


def _kl_per_dimension(model_tr, guide_tr, analytic_kl: bool) -> list[jax.Array]:
    """KL(q || p) of each latent dimension per datapoint, ``(..., B, D)`` per latent site: closed form, else sampled."""
    names = _latent_sites(model_tr, guide_tr)
    closed_form = analytic_sites(_model_order(model_tr, names), names) if analytic_kl else set()
    out = []
    for name in names:
        zg, zm = guide_tr[name], model_tr[name]
        q, p = _factors(zg["fn"], "guide"), _factors(zm["fn"], "prior")
        if name in closed_form:
            try:
                out.append(jnp.broadcast_to(kl_divergence(q, p), jnp.shape(zg["value"])))
                continue
            except NotImplementedError:
                pass
        out.append(q.log_prob(zg["value"]) - p.log_prob(zg["value"]))
    return out


@jax.custom_vjp
def _scale_gradient(z, coef):
    """``z`` itself; the gradient that reaches it is multiplied by ``coef`` on the way back."""
    return z


def _scale_gradient_fwd(z, coef):
    return z, coef


def _scale_gradient_bwd(coef, grad):
    return grad * coef, jnp.zeros_like(coef)


_scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)

# Distributions whose parameters are all array leaves of the pytree, so that stopping the
# leaves stops every path from the guide's parameters into log q (a distribution holding a
# network, like an autoregressive flow, would keep a path open).
_STOPPABLE = (dist.Normal, dist.MultivariateNormal, dist.LowRankMultivariateNormal)
_WRAPPERS = (dist.Independent, dist.ExpandedDistribution)


def _refuse(fn, name: str) -> UsageError:
    return estimators.dreg_unsupported(type(fn).__name__, name)


def _stopped(fn, name: str = "z"):
    """A copy of the guide's distribution with its parameters cut from the gradient."""
    base = fn
    while isinstance(base, _WRAPPERS):
        base = base.base_dist
    if not isinstance(base, _STOPPABLE):
        raise _refuse(base, name)
    return jax.tree_util.tree_map(jax.lax.stop_gradient, fn)


def _with_dreg_gradient(loss, log_w, model, rng_key, args, kwargs, num_particles, guide_tr, beta):
    """``loss`` (the negative IWAE bound per datapoint) with the DReG gradient attached.

    The surrogate ``-sum_k stop(w~_k) log w'_k`` is formed on a second replay of the model
    whose ``z`` passes through :func:`_scale_gradient` (weights ``(1 - β) + β w~_k``), with
    log q at stopped guide parameters: the model's parameters get the IWAE gradient, the
    guide's parameters (reached through ``z`` only) the DReG one.
    """
    names = latent_site_names(guide_tr)
    if len(names) > 1:
        raise UsageError(dreg_refusal(names))
    site = names[0]
    zg = guide_tr[site]
    fn, z = zg["fn"], zg["value"]
    if not fn.has_rsample:
        raise UsageError(f"estimator 'dreg' needs a reparameterized guide; {type(fn).__name__} has no rsample")
    q_stopped = _stopped(fn, site)
    w = jax.nn.softmax(jax.lax.stop_gradient(log_w), axis=0)
    coef = ((1.0 - beta) + beta * w).reshape(fn.batch_shape + (1,) * len(fn.event_shape))
    z_scaled = _scale_gradient(z, jax.lax.stop_gradient(coef))
    replay_tr = {**guide_tr, site: {**zg, "value": z_scaled}}
    model_key = (rng_key if isinstance(rng_key, LossKeys) else loss_keys(rng_key)).model  # the first replay's
    model_tr = _replayed(model, model_key, replay_tr, args, kwargs, num_particles)
    x_site, zm = model_tr["x"], model_tr[site]
    log_w_stopped = _site_log_prob(x_site) + beta * (zm["fn"].log_prob(z_scaled) - q_stopped.log_prob(z_scaled))
    surrogate = -(w * log_w_stopped.reshape(log_w.shape)).sum(0)
    # The value stays the IWAE bound exactly: surrogate - stop(surrogate) is 0.
    return jax.lax.stop_gradient(loss) + (surrogate - jax.lax.stop_gradient(surrogate))


def terms(
    model,
    guide,
    rng_key,
    *args,
    estimator: str = "meanfield",
    num_particles: int = 1,
    free_bits: float = 0.0,
    **kwargs,
) -> Terms:
    """The objective's terms for one minibatch (see :func:`ppvae.backends.pyro.terms`).

    ``rng_key`` is a JAX key or its :class:`LossKeys` (the same draws, split ahead of time);
    ``free_bits`` floors each latent dimension's KL as in the Pyro backend.
    """
    entry = estimators.estimator(estimator)
    if free_bits and estimators.free_bits_refusal(estimator):
        raise UsageError(estimators.free_bits_refusal(estimator))
    model_tr, guide_tr = _traces(model, guide, rng_key, args, kwargs, num_particles)
    log_px, kl, log_ratio, beta, data_scale = _parts(model_tr, guide_tr, entry.analytic_kl)
    if log_px.ndim == 1:
        log_px, kl, log_ratio = log_px[None], kl[None], log_ratio[None]
    reconstruction = -log_px.mean(0)
    kl_mean = kl.mean(0)
    if entry.importance_weighted:
        log_w = log_px + beta * log_ratio
        loss = -(jax.scipy.special.logsumexp(log_w, 0) - math.log(log_w.shape[0]))
        if estimator == "dreg":
            loss = _with_dreg_gradient(loss, log_w, model, rng_key, args, kwargs, num_particles, guide_tr, beta)
    elif free_bits:  # each site's dimensions floored, summed over the sites
        floored = _total(
            [
                jnp.maximum(per_dim.reshape(-1, per_dim.shape[-1]).mean(0), free_bits).sum()
                for per_dim in _kl_per_dimension(model_tr, guide_tr, entry.analytic_kl)
            ]
        )
        loss = reconstruction + beta * floored
    else:
        loss = reconstruction + beta * kl_mean
    return Terms(
        loss.mean(), reconstruction.mean(), kl_mean.mean(), jnp.asarray(beta, loss.dtype), data_scale, loss.shape[0]
    )


def elbo_parts(model, guide, rng_key, *args, num_particles: int = 1, **kwargs) -> tuple[jax.Array, jax.Array, dict]:
    """Per-datapoint ``(log p(x|z), KL, KL by latent site)`` of one draw (of each of ``num_particles``).

    The KL is summed over every latent site; each site's is in closed form where
    :func:`terms`' ``meanfield`` takes it so, and sampled otherwise. All are unscaled by the
    plate, shape ``(B,)``, or ``(K, B)`` for K > 1 particles.
    """
    model_tr, guide_tr = _traces(model, guide, rng_key, args, kwargs, num_particles)
    by_site: dict = {}
    log_px, kl, _, _, _ = _parts(model_tr, guide_tr, analytic_kl=True, by_site=by_site)
    return log_px, kl, by_site


def log_densities(model, guide, rng_key, *args, num_particles: int, **kwargs) -> dict[str, jax.Array]:
    """The log densities of ``num_particles`` draws per datapoint, each ``(K, B)``, and the draws of z_1.

    ``log_lik`` is log p(x|z), ``log_prior`` the model's log density of every latent site at
    the draw (log p(z_L) + ... + log p(z_1|z_2) for a hierarchical VAE), ``log_q`` the
    guide's, and ``z`` the draws of the latent site next to x (z_1), ``(K, B, Z)``.
    """
    model_tr, guide_tr = _traces(model, guide, rng_key, args, kwargs, num_particles)
    names = _latent_sites(model_tr, guide_tr)
    out = {
        "log_lik": _site_log_prob(model_tr["x"]),
        "log_prior": _total([model_tr[n]["fn"].log_prob(model_tr[n]["value"]) for n in names]),
        "log_q": _total([_guide_log_prob(guide_tr[n]) for n in names]),
        "z": guide_tr[nearest_to_x(names)]["value"],
    }
    if num_particles == 1:
        out = {k: v[None] for k, v in out.items()}
    return out


def log_weights(model, guide, rng_key, *args, num_particles: int, **kwargs) -> jax.Array:
    """``log p(x, z_k) - log q(z_k|x)`` per particle and datapoint, shape ``(K, B)``."""
    model_tr, guide_tr = _traces(model, guide, rng_key, args, kwargs, num_particles)
    log_px, _, log_ratio, beta, _ = _parts(model_tr, guide_tr, analytic_kl=False)
    log_w = log_px + beta * log_ratio
    return log_w if log_w.ndim == 2 else log_w[None]


class VAEObjective(ELBO):
    """A ppvae estimator as a ``numpyro.infer.ELBO``, usable with ``numpyro.infer.SVI``.

    Its loss is the dataset-scaled negative bound, like NumPyro's own ELBOs.
    ``"dreg"`` has the loss of ``"iwae"`` and the doubly-reparameterized gradient.
    """

    def __init__(self, estimator: str = "meanfield", num_particles: int = 1):
        estimators.estimator(estimator)  # an unknown name fails here, listing the valid ones
        super().__init__(num_particles=num_particles)
        self.estimator = estimator

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        model = handlers.substitute(model, data=param_map)
        guide = handlers.substitute(guide, data=param_map)
        t = terms(model, guide, rng_key, *args, estimator=self.estimator, num_particles=self.num_particles, **kwargs)
        return {"loss": t.loss * t.batch * t.data_scale, "mutable_state": None}
