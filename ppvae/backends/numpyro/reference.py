"""Reference posteriors p(z | x) by NUTS with the generative model frozen (NumPyro backend).

The amortized encoder q(z|x) is only an approximation; to judge it we need samples from
the exact posterior of the trained decoder. :func:`nuts_reference` draws them with
NumPyro's NUTS, running several chains started around the encoder's guess so that R-hat
and ESS (computed by the ``convergence`` function the caller passes; ``ppvae diagnose`` passes
ArviZ's, :func:`ppvae.analysis.diagnostics.arviz_io.rhat_ess`) say whether the chains agree.
:func:`compare_to_q` then sets the encoder's loc and scale beside the NUTS moments.

A Pyro run is first converted to the NumPyro form (``vae``, ``params``) elsewhere; this
module only ever sees a NumPyro-backend :class:`~ppvae.backends.numpyro.model.VAE`.
"""

from __future__ import annotations

import copy
from typing import Callable
import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS

from ppvae.errors import UsageError
from ppvae.model.priors import prior_distribution

__all__ = ["compare_to_q", "nuts_reference"]


def _frozen_model(vae, params):
    """The VAE's own model with ``params`` substituted and no dataset scaling.

    ``vae.model`` scales every term by N / B when the VAE was built with a dataset size
    (a minibatch stands for the whole dataset during training). For the posterior of the
    points actually given that factor would temper the target (it multiplies the whole
    log density), so a shallow copy with ``dataset_size=None`` is used: its plate has
    scale 1 and the target is exactly log p(z) + log p(x | z) per point.
    """
    unscaled = copy.copy(vae)
    unscaled.dataset_size = None
    return handlers.substitute(unscaled.model, data=params)


def nuts_reference(
    vae,
    params,
    x,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    progress: bool = False,
    chain_method: str = "vectorized",
    init_spread: float = 1.0,
    convergence: Callable[[np.ndarray], dict] | None = None,
) -> dict:
    """Sample p(z | x_i) for every point by NUTS, the decoder, prior and likelihood frozen.

    The n points share one NUTS run over the (n, Z) latent array: the model puts them in a
    plate, so the target factorizes over points and the diagonal mass matrix adapts a
    separate scale for every point and dimension. Chains start at
    ``loc + init_spread * scale * eps`` (eps ~ N(0, 1) per chain) from the encoder, so they
    are dispersed on the scale of the posterior and R-hat can detect chains that have not
    mixed.

    Parameters
    ----------
    vae : ppvae.backends.numpyro.model.VAE
        The NumPyro-backend VAE.
    params : dict
        Its parameters (``"<part>$params"`` -> pytree), e.g. ``run.trained.params``.
    x : array_like, shape (n, *event_shape)
        The datapoints.
    num_chains : int, default 4
        Number of chains (at least 4 is advised for R-hat).
    num_warmup, num_samples : int, default 500
        Warm-up (adaptation) and kept draws per chain.
    seed : int, default 0
        Seeds the initial dispersion and the sampler.
    progress : bool, default False
        Show NumPyro's progress bar.
    chain_method : {"vectorized", "sequential"}, default "vectorized"
        How the chains share the one CPU device. ``"vectorized"`` compiles one program
        that advances all chains in lockstep (each step waits for the deepest tree among
        them); ``"sequential"`` runs them one after another. On ppvae's 2-core CPU the
        fixed cost (mostly compilation) dominates small models and is lower vectorized
        (pPCA, 4 chains x 1000 iterations: ~6 s against ~11 s); on the mlp-400 MNIST VAE
        (5 points, Z = 20) the two tied (22 s against 23 s, ~10 s of it sampling).
    init_spread : float, default 1.0
        Width of the initial dispersion, in units of the encoder's scale.
    convergence : callable, optional
        Maps the draws (chains, draws, n, Z) to ``{"rhat", "ess_bulk", "ess_tail"}``, each
        (n, Z). The backend does not compute them itself: R-hat and ESS are ArviZ's job, and
        the ArviZ boundary lives in the analysis layer above the backends.

    Returns
    -------
    dict
        ``"z"``: draws, shape (chains, draws, n, Z), float64; ``"rhat"``, ``"ess_bulk"``,
        ``"ess_tail"``: shape (n, Z), present when ``convergence`` is given; ``"divergences"``: number of divergent transitions
        after warm-up (all chains); ``"seconds"``: wall time of the run, compilation
        included; ``"init"``: the chains' starting points (chains, n, Z).
    """
    if vae.hierarchical:  # written for the one site "z": a hierarchical VAE's z1 alone is not its posterior
        raise UsageError(
            f"the NUTS reference samples the posterior of one latent site; this VAE has {len(vae.sites)} "
            f"({', '.join(vae.sites)})"
        )
    x = jnp.asarray(np.asarray(x, dtype=np.float32))
    modules = vae.with_params(params)
    loc, scale = modules["encoder"](x)[:2]  # the encoder's Normal, whatever the guide family
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    eps = jax.random.normal(key_init, (num_chains, *loc.shape))
    z0 = loc + init_spread * scale * eps
    # NUTS works in unconstrained space; for the usual real-valued priors this is the
    # identity, but a prior with a constrained support needs its inverse bijection.
    support = prior_distribution(modules["prior"], modules["encoder"]).support
    init = {"z": biject_to(support).inv(z0)}

    kernel = NUTS(_frozen_model(vae, params))
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    start = time.perf_counter()
    mcmc.run(key_run, x, 1.0, init_params=init, extra_fields=("diverging",))
    z = mcmc.get_samples(group_by_chain=True)["z"]
    z = np.asarray(jax.block_until_ready(z), dtype=np.float64)
    seconds = time.perf_counter() - start
    diverging = np.asarray(mcmc.get_extra_fields()["diverging"])
    found = {
        "z": z,
        "divergences": int(diverging.sum()),
        "seconds": float(seconds),
        "init": np.asarray(z0, dtype=np.float64),
    }
    if convergence is not None:
        stats = convergence(z)
        found.update(rhat=stats["rhat"], ess_bulk=stats["ess_bulk"], ess_tail=stats["ess_tail"])
    return found


def compare_to_q(z_ref, loc, scale) -> dict:
    """Compare the encoder's Normal q(z|x) with reference draws, per point and dimension.

    Parameters
    ----------
    z_ref : array_like, shape (chains, draws, n, Z)
        Reference draws, e.g. ``nuts_reference(...)["z"]``.
    loc, scale : array_like, shape (n, Z)
        The encoder's posterior loc and scale for the same points.

    Returns
    -------
    dict
        Per point and dimension (n, Z): ``"nuts_mean"``, ``"nuts_sd"``, ``"mean_error"``
        (loc - NUTS mean), ``"standardized_error"`` (mean error / NUTS sd), ``"sd_ratio"``
        (scale / NUTS sd; below 1 means q is too narrow, the usual failure of a
        mean-field reverse-KL fit). Summaries: ``"mean_abs_standardized_error"`` (mean of
        |mean error| / NUTS sd over points and dimensions), ``"median_sd_ratio"``,
        ``"min_sd_ratio"``, ``"max_sd_ratio"``.
    """
    z = np.asarray(z_ref, dtype=np.float64)
    z = z.reshape(-1, *z.shape[2:])  # pool chains: the moments are of the posterior, not a chain
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    mean = z.mean(0)
    sd = z.std(0, ddof=1)
    error = loc - mean
    standardized = error / sd
    ratio = scale / sd
    return {
        "nuts_mean": mean,
        "nuts_sd": sd,
        "q_loc": loc,
        "q_scale": scale,
        "mean_error": error,
        "standardized_error": standardized,
        "sd_ratio": ratio,
        "mean_abs_standardized_error": float(np.abs(standardized).mean()),
        "median_sd_ratio": float(np.median(ratio)),
        "min_sd_ratio": float(ratio.min()),
        "max_sd_ratio": float(ratio.max()),
    }
