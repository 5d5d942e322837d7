"""Approximation and amortization gaps per datapoint (Cremer, Li & Duvenaud 2018).

For a fixed generative model the inference gap log p(x) - ELBO(q) of the encoder's
q(z|x) splits in two:

* the **approximation gap** log p(x) - ELBO(q*), where q* is the best diagonal Normal for
  that point alone: what the variational family cannot express;
* the **amortization gap** ELBO(q*) - ELBO(q): what the encoder loses by predicting the
  parameters with one network for all points instead of optimizing them per point.

q* is found by stochastic variational inference started at the encoder's loc and scale,
for all points at once (their objectives do not interact) in one compiled loop. log p(x)
is estimated by importance sampling (IWAE bounds), with the amortized q and with q* as
proposals.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppvae.backends.numpyro.evaluation import MAX_ELEMENTS
from ppvae.backends.numpyro.guides import require_diagonal
from ppvae.errors import UsageError
from ppvae.model.priors import prior_distribution

__all__ = ["local_gaps"]

LOG_PX_CHOICES = ("max", "amortized", "local")


def _log_joint(modules, x, z):
    """log p(x_i, z) for z of shape (S, n, Z): prior plus likelihood, one value per (S, n).

    The same terms as the ``"z"`` and ``"x"`` sites of ``vae.model`` with β = 1 and no
    dataset scale: log-weights and ELBOs are per-datapoint quantities.
    """
    log_pz = prior_distribution(modules["prior"], modules["encoder"]).log_prob(z)
    return log_pz + modules["likelihood"](modules["decoder"](z)).log_prob(x)


def _log_q(loc, scale, z):
    return jnp.sum(-0.5 * ((z - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi), -1)


@eqx.filter_jit
def _bounds(modules, x, loc, scale, key, num_samples: int, chunk: int):
    """ELBO (mean log-weight), its standard error and the IWAE bound (log mean weight).

    Per point, under q = N(loc, scale). Samples are drawn ``chunk`` at a time in a
    ``lax.scan`` so that the decoder output (chunk, n, *param_shape) stays bounded; the
    last chunk may run past ``num_samples`` and its extra samples are masked out.
    """
    n_chunks = -(-num_samples // chunk)

    def body(carry, inputs):
        total, total_sq, lse = carry
        i, k = inputs
        z = loc + scale * jax.random.normal(k, (chunk, *loc.shape), loc.dtype)
        lw = _log_joint(modules, x, z) - _log_q(loc, scale, z)
        valid = ((i * chunk + jnp.arange(chunk)) < num_samples)[:, None]
        # Moments about a rough mean (``shift``): it keeps the float32 sum of squares from
        # cancelling when the log-weights are large and nearly equal.
        shifted = jnp.where(valid, lw - shift, 0.0)
        total = total + shifted.sum(0)
        total_sq = total_sq + (shifted**2).sum(0)
        lse = jnp.logaddexp(lse, jax.scipy.special.logsumexp(jnp.where(valid, lw, -jnp.inf), 0))
        return (total, total_sq, lse), None

    # The shift: the mean log-weight of a few draws (any value near the mean will do).
    key, key_shift = jax.random.split(key)
    z0 = loc + scale * jax.random.normal(key_shift, (min(chunk, 16), *loc.shape), loc.dtype)
    shift = (_log_joint(modules, x, z0) - _log_q(loc, scale, z0)).mean(0)
    zeros = jnp.zeros(x.shape[0], loc.dtype)
    start = (zeros, zeros, jnp.full(x.shape[0], -jnp.inf, loc.dtype))
    (total, total_sq, lse), _ = jax.lax.scan(body, start, (jnp.arange(n_chunks), jax.random.split(key, n_chunks)))
    mean = total / num_samples
    var = jnp.maximum(total_sq / num_samples - mean**2, 0.0) * num_samples / max(num_samples - 1, 1)
    return shift + mean, jnp.sqrt(var / num_samples), lse - math.log(num_samples)


@eqx.filter_jit
def _optimize(modules, x, loc0, scale0, key, num_steps: int, num_particles: int, lr: float, final_lr: float):
    """Maximize each point's ELBO over its own diagonal Normal (loc, log scale) with Adam.

    The loss is the sum of the points' negative ELBOs; each point's parameters enter only
    its own term and Adam is elementwise, so this is n independent optimizations run as
    one. The gradient uses the "sticking the landing" estimator (Roeder, Wu & Duvenaud
    2017): log q is evaluated with its parameters held fixed, which drops the score-function
    term whose expectation is zero. Where the posterior is in the family its variance
    vanishes as q approaches it, so the iterates settle on the optimum.
    """
    # log scale rather than the encoder's softplus: Adam's steps are then relative changes
    # of the scale, the same for a scale of 1e-2 as of 1.
    theta = {"loc": loc0, "log_scale": jnp.log(scale0)}
    # Where the noise does not vanish (a correlated posterior, which no diagonal q matches)
    # a constant step size leaves the iterates jittering: on the correlated pPCA of the
    # tests, at lr 0.05 the means wandered by ~0.25 posterior sd. A cosine decay to
    # ``final_lr`` keeps the early large steps and lets the last ones settle.
    opt = optax.adam(optax.cosine_decay_schedule(lr, num_steps, alpha=final_lr / lr))

    def neg_elbo(theta, k):
        loc, scale = theta["loc"], jnp.exp(theta["log_scale"])
        z = loc + scale * jax.random.normal(k, (num_particles, *loc.shape), loc.dtype)
        lw = _log_joint(modules, x, z) - _log_q(jax.lax.stop_gradient(loc), jax.lax.stop_gradient(scale), z)
        elbo = lw.mean(0)
        return -elbo.sum(), elbo.mean()

    def step(carry, k):
        theta, state = carry
        grads, elbo = jax.grad(neg_elbo, has_aux=True)(theta, k)
        updates, state = opt.update(grads, state, theta)
        return (optax.apply_updates(theta, updates), state), elbo

    (theta, _), trace = jax.lax.scan(step, (theta, opt.init(theta)), jax.random.split(key, num_steps))
    return theta["loc"], jnp.exp(theta["log_scale"]), trace


def _chunk(modules, n: int, num_samples: int, max_elements: int) -> int:
    features = max(1, math.prod(modules["likelihood"].param_shape))
    return max(1, min(num_samples, max_elements // (features * n)))


def local_gaps(
    vae,
    params,
    x,
    *,
    num_steps: int = 300,
    num_particles: int = 16,
    lr: float = 0.05,
    final_lr: float = 0.0005,
    elbo_samples: int = 1000,
    iwae_samples: int = 5000,
    seed: int = 0,
    log_px_from: str = "max",
    max_elements: int = MAX_ELEMENTS,
) -> dict:
    """Approximation and amortization gaps for every point of ``x``.

    Parameters
    ----------
    vae : ppvae.backends.numpyro.model.VAE
        The NumPyro-backend VAE (its decoder, prior and likelihood stay fixed).
    params : dict
        Its parameters (``"<part>$params"`` -> pytree).
    x : array_like, shape (n, *event_shape)
        The datapoints.
    num_steps : int, default 300
        Adam steps of the per-point optimization.
    num_particles : int, default 16
        Reparameterized draws per step for the ELBO gradient.
    lr : float, default 0.05
        Adam's initial learning rate (on loc and on log scale).
    final_lr : float, default 0.0005
        The learning rate reached at the last step by cosine decay (``final_lr = lr``
        keeps it constant).
    elbo_samples : int, default 1000
        Draws for each final ELBO estimate (amortized and local).
    iwae_samples : int, default 5000
        Draws for each IWAE estimate of log p(x).
    seed : int, default 0
        Seeds all the sampling.
    log_px_from : {"max", "amortized", "local"}, default "max"
        Which IWAE estimate is reported as ``log_px`` and enters the approximation gap:
        the one with the encoder's q as proposal, the one with q*, or the larger of the
        two per point. Both are stochastic lower bounds; the proposal closer to the
        posterior gives the tighter one, and a poor encoder can make the amortized IWAE
        fall below ELBO(q*), which would show as a negative approximation gap.
    max_elements : int
        Bound on the decoder output held at once (samples x points x features).

    Returns
    -------
    dict
        Per point (n,): ``"log_px"``, ``"log_px_amortized"`` and ``"log_px_local"`` (the
        IWAE bounds), ``"elbo_amortized"``, ``"elbo_local"``, ``"approximation_gap"``
        (log_px - elbo_local), ``"amortization_gap"`` (elbo_local - elbo_amortized; not
        clipped, so Monte-Carlo noise can make it slightly negative), ``"inference_gap"``
        (log_px - elbo_amortized), and the Monte-Carlo standard errors
        ``"elbo_amortized_se"``, ``"elbo_local_se"``, ``"amortization_gap_se"`` (the IWAE
        bounds have no simple standard error: they are biased low by an amount that
        shrinks with the samples). Per point and dimension (n, Z): ``"loc"``, ``"scale"``
        (the encoder's) and ``"local_loc"``, ``"local_scale"`` (q*'s). ``"elbo_trace"``
        (num_steps,): the mean over points of the per-step ELBO estimate, to check that
        the optimization has levelled off. ``"mean"``: the averages over points of the
        per-point entries. Values are float64 numpy arrays (computed in float32).
    """
    if vae.hierarchical:  # written for the one site "z": a hierarchical VAE's z1 alone is not its posterior
        raise UsageError(
            f"the inference gaps optimize one latent site per point; this VAE has {len(vae.sites)} "
            f"({', '.join(vae.sites)})"
        )
    if log_px_from not in LOG_PX_CHOICES:
        raise ValueError(f"log_px_from must be one of {', '.join(LOG_PX_CHOICES)}, got {log_px_from!r}")
    # q* is a diagonal Normal: against a richer amortized family the two gaps lose their meaning.
    require_diagonal(
        vae,
        "the inference gaps (the encoder's q against the best diagonal Normal per point)",
        "skip them (ppvae diagnose --gap-points 0)",
    )
    xj = jnp.asarray(np.asarray(x, dtype=np.float32))
    n = xj.shape[0]
    modules = vae.with_params(params)
    loc, scale = modules["encoder"](xj)
    k_opt, k_amort, k_local, k_iw_amort, k_iw_local = jax.random.split(jax.random.PRNGKey(seed), 5)

    local_loc, local_scale, trace = _optimize(
        modules, xj, loc, scale, k_opt, int(num_steps), int(num_particles), float(lr), float(final_lr)
    )
    c_elbo = _chunk(modules, n, elbo_samples, max_elements)
    c_iwae = _chunk(modules, n, iwae_samples, max_elements)
    elbo_amortized, se_amortized, _ = _bounds(modules, xj, loc, scale, k_amort, int(elbo_samples), c_elbo)
    elbo_local, se_local, _ = _bounds(modules, xj, local_loc, local_scale, k_local, int(elbo_samples), c_elbo)
    _, _, log_px_amortized = _bounds(modules, xj, loc, scale, k_iw_amort, int(iwae_samples), c_iwae)
    _, _, log_px_local = _bounds(modules, xj, local_loc, local_scale, k_iw_local, int(iwae_samples), c_iwae)

    def f64(a):
        return np.asarray(a, dtype=np.float64)

    elbo_amortized, elbo_local = f64(elbo_amortized), f64(elbo_local)
    se_amortized, se_local = f64(se_amortized), f64(se_local)
    log_px_amortized, log_px_local = f64(log_px_amortized), f64(log_px_local)
    log_px = {"max": np.maximum(log_px_amortized, log_px_local), "amortized": log_px_amortized, "local": log_px_local}[
        log_px_from
    ]
    out = {
        "log_px": log_px,
        "log_px_amortized": log_px_amortized,
        "log_px_local": log_px_local,
        "elbo_amortized": elbo_amortized,
        "elbo_local": elbo_local,
        "elbo_amortized_se": se_amortized,
        "elbo_local_se": se_local,
        # The two ELBOs use independent draws, so their standard errors add in quadrature.
        "amortization_gap_se": np.sqrt(se_amortized**2 + se_local**2),
        "approximation_gap": log_px - elbo_local,
        "amortization_gap": elbo_local - elbo_amortized,
        "inference_gap": log_px - elbo_amortized,
        "loc": f64(loc),
        "scale": f64(scale),
        "local_loc": f64(local_loc),
        "local_scale": f64(local_scale),
        "elbo_trace": f64(trace),
    }
    per_point = (
        "log_px",
        "log_px_amortized",
        "log_px_local",
        "elbo_amortized",
        "elbo_local",
        "approximation_gap",
        "amortization_gap",
        "inference_gap",
    )
    out["mean"] = {name: float(out[name].mean()) for name in per_point}
    return out
