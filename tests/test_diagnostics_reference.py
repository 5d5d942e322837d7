"""Reference posteriors (NUTS) and inference gaps, checked on probabilistic PCA.

With a linear decoder, a Normal likelihood of fixed scale sigma and a N(0, I) prior, the
posterior is Gaussian in closed form: precision L = I + W^T W / sigma^2, covariance
L^-1, mean L^-1 W^T (x - b) / sigma^2. Everything below is compared with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")
eqx = pytest.importorskip("equinox")
pytest.importorskip("arviz")

import jax.numpy as jnp  # noqa: E402

from ppvae.backends import numpyro as npb  # noqa: E402
from ppvae.backends.numpyro.evaluation import exact_log_px  # noqa: E402
from ppvae.backends.numpyro.nets import MIN_SCALE  # noqa: E402
from ppvae.spec.config import ModelSpec  # noqa: E402
from ppvae.backends.numpyro.gaps import local_gaps  # noqa: E402
from ppvae.backends.numpyro.reference import compare_to_q, nuts_reference  # noqa: E402
from ppvae.analysis.diagnostics import arviz_io  # noqa: E402

D, Z, SIGMA = 5, 2, 0.5
# Tolerances in standard errors: with a handful of coordinates per check, a 4-sigma
# deviation has a chance below 1e-3 (and the seeds are fixed, so the tests are stable).
N_SE = 4.0


def ppca(W, b, seed=0):
    """A pPCA VAE with decoder W z + b and noise SIGMA; the encoder keeps its random init.

    It is built with a dataset size, as a trained run's VAE is: its model then scales the
    log density of a batch by N / B, which the diagnostics must not apply to the points
    they are given (the NUTS target would be tempered 250-fold here).
    """
    spec = ModelSpec(
        latent_dim=Z,
        likelihood="normal",
        decoder="linear",
        encoder_options={"hidden": []},
        likelihood_options={"scale_mode": "fixed", "scale": SIGMA},
    )
    vae = npb.build_vae(spec, (D,), jax.random.PRNGKey(seed), dataset_size=1000)
    params = npb.initial_params(vae)
    params["decoder$params"] = eqx.tree_at(
        lambda m: (m.linear.weight, m.linear.bias),
        params["decoder$params"],
        (jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32)),
    )
    return vae, params


def posterior(W, b, x):
    """The analytic posterior: means (n, Z), covariance (Z, Z), precision (Z, Z), in float64."""
    W = np.asarray(W, np.float64)
    precision = np.eye(Z) + W.T @ W / SIGMA**2
    cov = np.linalg.inv(precision)
    mean = (np.asarray(x, np.float64) - b) @ (cov @ W.T / SIGMA**2).T
    return mean, cov, precision


def set_encoder(params, W, b, scale_factor=1.0):
    """A linear encoder giving the analytic posterior mean and the marginal sds times ``scale_factor``.

    loc = A x + c with A = cov W^T / sigma^2 and c = -A b; the scale is
    softplus(raw_scale(x)) + MIN_SCALE, so raw_scale gets zero weights and the bias
    softplus^-1(sd - MIN_SCALE).
    """
    _, cov, _ = posterior(W, b, np.zeros((1, D)))
    A = cov @ np.asarray(W, np.float64).T / SIGMA**2
    sd = scale_factor * np.sqrt(np.diag(cov))
    raw = np.log(np.expm1(sd - MIN_SCALE))
    enc = eqx.tree_at(
        lambda m: (m.head.loc.weight, m.head.loc.bias, m.head.raw_scale.weight, m.head.raw_scale.bias),
        params["encoder$params"],
        tuple(jnp.asarray(a, jnp.float32) for a in (A, -A @ b, np.zeros((Z, D)), raw)),
    )
    return {**params, "encoder$params": enc}


def orthogonal_W(seed=0):
    """W with orthogonal columns: W^T W is diagonal, so the posterior is a diagonal Normal."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, Z)))
    return (q * np.array([2.0, 0.7])).astype(np.float32), rng.normal(size=D).astype(np.float32)


def general_W(seed=1):
    """W with strongly aligned columns: the posterior correlation is about -0.8."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=D)
    w2 = 0.9 * w1 + 0.45 * rng.normal(size=D)
    return (0.7 * np.stack([w1, w2], 1)).astype(np.float32), rng.normal(size=D).astype(np.float32)


def data(W, b, n=4, seed=2):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, Z))
    return (z @ W.T + b + SIGMA * rng.normal(size=(n, D))).astype(np.float32)


# ------------------------------------------------------------------------------- NUTS
@pytest.fixture(scope="module")
def nuts_run():
    W, b = general_W()  # correlated posterior: NUTS must get the full (non-diagonal) Gaussian
    x = data(W, b)
    vae, params = ppca(W, b)
    ref = nuts_reference(
        vae, params, x, num_chains=4, num_warmup=300, num_samples=300, seed=0, convergence=arviz_io.rhat_ess
    )
    return W, b, x, ref


def test_nuts_reference_has_the_documented_shapes_and_no_divergences(nuts_run):
    _, _, x, ref = nuts_run
    assert ref["z"].shape == (4, 300, len(x), Z) and ref["z"].dtype == np.float64
    for name in ("rhat", "ess_bulk", "ess_tail"):
        assert ref[name].shape == (len(x), Z), name
    assert ref["divergences"] == 0
    assert ref["seconds"] > 0
    # Chains start dispersed, not at one point: otherwise R-hat would check nothing.
    assert np.all(ref["init"].std(0) > 0)


def test_nuts_converges_and_matches_the_analytic_posterior(nuts_run):
    W, b, x, ref = nuts_run
    mean, cov, _ = posterior(W, b, x)
    sd = np.sqrt(np.diag(cov))
    assert ref["rhat"].max() < 1.01
    z = ref["z"].reshape(-1, len(x), Z)
    # Monte-Carlo standard error of a posterior mean: sd / sqrt(ESS_bulk).
    ess = ref["ess_bulk"]
    assert np.all(np.abs(z.mean(0) - mean) < N_SE * sd / np.sqrt(ess))
    # Standard error of a sample sd of a Normal: sd / sqrt(2 ESS); the smaller of the
    # bulk and tail ESS, since the sd depends on the tails as much as on the bulk.
    ess_sd = np.minimum(ref["ess_bulk"], ref["ess_tail"])
    assert np.all(np.abs(z.std(0, ddof=1) / sd - 1) < N_SE / np.sqrt(2 * ess_sd))


def test_compare_to_q_scores_exact_and_shrunk_posteriors(nuts_run):
    W, b, x, ref = nuts_run
    mean, cov, _ = posterior(W, b, x)
    sd = np.broadcast_to(np.sqrt(np.diag(cov)), mean.shape)
    exact = compare_to_q(ref["z"], mean, sd)
    assert exact["mean_error"].shape == exact["sd_ratio"].shape == (len(x), Z)
    # |mean error| / sd is z-score-like with standard error 1 / sqrt(ESS) per coordinate.
    assert exact["mean_abs_standardized_error"] < N_SE / np.sqrt(ref["ess_bulk"].min())
    assert abs(exact["median_sd_ratio"] - 1) < N_SE / np.sqrt(2 * ref["ess_bulk"].min())
    shrunk = compare_to_q(ref["z"], mean, sd / 10)
    assert shrunk["median_sd_ratio"] == pytest.approx(0.1, rel=0.1)
    np.testing.assert_allclose(shrunk["mean_error"], exact["mean_error"])


# ------------------------------------------------------------------------------- gaps
def test_an_exact_encoder_has_no_gaps():
    W, b = orthogonal_W()
    x = data(W, b)
    vae, params = ppca(W, b)
    params = set_encoder(params, W, b)
    g = local_gaps(vae, params, x, num_steps=100, elbo_samples=500, iwae_samples=1000)
    exact = exact_log_px(vae, params, x)
    # With q equal to the posterior every log-weight equals log p(x): the MC standard error
    # is ~0 and only float32 rounding is left, hence the small absolute floor.
    floor = 2e-3
    assert np.all(np.abs(g["amortization_gap"]) < N_SE * g["amortization_gap_se"] + floor)
    assert np.all(np.abs(g["approximation_gap"]) < N_SE * g["elbo_local_se"] + floor)
    assert np.all(np.abs(g["elbo_local"] - exact) < N_SE * g["elbo_local_se"] + floor)
    assert np.all(np.abs(g["log_px_amortized"] - exact) < floor)
    assert g["elbo_trace"].shape == (100,)


def test_a_poor_encoder_has_a_large_amortization_gap_that_local_svi_recovers():
    W, b = orthogonal_W()
    x = data(W, b)
    vae, params = ppca(W, b)
    params = set_encoder(params, W, b, scale_factor=0.1)
    g = local_gaps(vae, params, x, num_steps=300, elbo_samples=1000, iwae_samples=2000)
    exact = exact_log_px(vae, params, x)
    mean, cov, _ = posterior(W, b, x)
    sd = np.sqrt(np.diag(cov))
    # Shrinking a Normal posterior's sds by 10 costs KL = Z * (log 10 + (0.01 - 1) / 2) nats.
    expected_gap = Z * (math.log(10) + (0.01 - 1) / 2)
    assert np.all(np.abs(g["inference_gap"] - expected_gap) < N_SE * g["elbo_amortized_se"] + 0.05)
    assert np.all(g["amortization_gap"] > 0.9 * expected_gap)  # local optimization recovers most of it
    assert np.all(np.abs(g["elbo_local"] - exact) < N_SE * g["elbo_local_se"] + 0.02)
    # q* reaches the analytic posterior: its KL to it is the approximation gap, which is
    # about 0.5 * sum((dmu / sd)^2 + (ds / sd)^2 * 2) to second order; 0.02 nats of slack
    # leaves a few per cent of an sd.
    np.testing.assert_allclose(g["local_loc"], mean, atol=0.05 * sd.min())
    np.testing.assert_allclose(g["local_scale"], np.broadcast_to(sd, mean.shape), rtol=0.05)
    # The IWAE bound with q* as proposal is the tight one here; log_px takes the larger.
    assert np.all(g["log_px"] >= g["log_px_amortized"])
    assert np.all(np.abs(g["log_px"] - exact) < 0.01)


def gaussian_kl(loc, scale, mean, precision):
    """KL(N(loc, diag(scale^2)) || N(mean, precision^-1)) for every row."""
    d = loc - mean
    return 0.5 * (
        (np.diag(precision) * scale**2).sum(1)
        + np.einsum("ni,ij,nj->n", d, precision, d)
        - loc.shape[1]
        - np.linalg.slogdet(precision)[1]
        - 2 * np.log(scale).sum(1)
    )


def test_approximation_gap_of_a_correlated_posterior_is_the_mean_field_kl():
    """A diagonal q cannot fit a correlated Gaussian: the gap is KL(q* || p) in closed form.

    The best diagonal Normal under reverse KL has the posterior mean and variances
    1 / L_jj (L the precision), and KL = (sum_j log L_jj - log det L) / 2.
    """
    W, b = general_W()
    x = data(W, b)
    vae, params = ppca(W, b)  # the random initial encoder: the optimization starts far away,
    # hence more steps than the default 300 (enough from an encoder's nearby guess).
    g = local_gaps(vae, params, x, num_steps=1000, elbo_samples=1000, iwae_samples=2000)
    mean, _, precision = posterior(W, b, x)
    kl_mf = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    exact = exact_log_px(vae, params, x)
    assert kl_mf > 0.3  # the check below means something
    assert np.all(np.abs((exact - g["elbo_local"]) - kl_mf) < N_SE * g["elbo_local_se"] + 0.02)
    # q* itself, judged by its exact KL to the posterior: within 0.01 nats of the optimum.
    # (The loc can stray further along the posterior's long, nearly flat diagonal, where
    # the gradient noise of a mismatched q never vanishes; it costs almost no ELBO there.)
    excess = gaussian_kl(g["local_loc"], g["local_scale"], mean, precision) - kl_mf
    assert np.all(excess < 0.01)
    sd_mf = 1 / np.sqrt(np.diag(precision))
    np.testing.assert_allclose(g["local_scale"], np.broadcast_to(sd_mf, mean.shape), rtol=0.05)
    np.testing.assert_allclose(g["local_loc"], mean, atol=0.25 * sd_mf.min())
    assert g["amortization_gap"].min() > 0  # the untrained encoder is worse than q*
    assert set(g["mean"]) >= {"log_px", "elbo_amortized", "elbo_local", "approximation_gap", "amortization_gap"}
