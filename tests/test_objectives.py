"""The estimators' exact identities, and their Monte-Carlo properties on an exact model."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Importance, Predictive, Trace_ELBO, TraceMeanField_ELBO

from ppvae.backends.pyro import VAEObjective, build_vae, log_weights, terms
from ppvae.backends.pyro.evaluation import exact_log_px, log_px_iwae
from ppvae.spec.config import ModelSpec
from ppvae.errors import UsageError

N_DATA = 1000  # dataset size the plate scales to


def binary_batch(batch=16, shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, *shape, generator=g) < 0.4).float()


def make_vae(shape=(6, 5), latent_dim=3, **spec):
    torch.manual_seed(1)
    spec = ModelSpec(latent_dim=latent_dim, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]}, **spec)
    return build_vae(spec, shape, dataset_size=N_DATA, register_params=False)


def seeded(fn, seed=7):
    torch.manual_seed(seed)
    return fn()


# ---------------------------------------------------------------------------------- identities
def test_beta_one_reproduces_the_unscaled_loss_exactly():
    """β = 1 through poutine.scale gives bit-for-bit the loss of a model with no scale at all."""
    vae, x = make_vae(), binary_batch()

    def plain_model(x):
        with pyro.plate("data", N_DATA, subsample=torch.arange(len(x))):
            z = pyro.sample("z", vae.prior())
            pyro.sample("x", vae.observation(z), obs=x)

    def plain_guide(x):
        with pyro.plate("data", N_DATA, subsample=torch.arange(len(x))):
            pyro.sample("z", vae.posterior(x))

    for estimator, reference in (("trace", Trace_ELBO()), ("meanfield", TraceMeanField_ELBO())):
        objective = VAEObjective(estimator)
        ours = seeded(lambda: objective.differentiable_loss(vae.model, vae.guide, x, beta=1.0))
        plain = seeded(lambda: objective.differentiable_loss(plain_model, plain_guide, x))
        assert torch.equal(ours, plain), estimator
        # And Pyro's own ELBO sees no difference between scale 1 and no scale at all.
        pyro_scaled = seeded(lambda: reference.differentiable_loss(vae.model, vae.guide, x, beta=1.0))
        pyro_plain = seeded(lambda: reference.differentiable_loss(plain_model, plain_guide, x))
        assert torch.equal(pyro_scaled, pyro_plain), estimator


@pytest.mark.parametrize("estimator,reference", [("trace", Trace_ELBO), ("meanfield", TraceMeanField_ELBO)])
@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_loss_is_reconstruction_plus_beta_kl_and_matches_pyro(estimator, reference, beta):
    vae, x = make_vae(), binary_batch()
    t = seeded(lambda: terms(vae.model, vae.guide, x, beta=beta, estimator=estimator))
    assert t.beta.item() == pytest.approx(beta, rel=1e-7)
    # Same draws, so the identity holds to float rounding (rel 1e-6 of float32 sums).
    assert t.loss.item() == pytest.approx(t.reconstruction.item() + beta * t.kl.item(), rel=1e-6)
    # Pyro's own ELBO on the same β-scaled model/guide agrees: β sits in both model and guide.
    pyro_loss = seeded(lambda: reference().differentiable_loss(vae.model, vae.guide, x, beta=beta))
    ours = t.loss * t.batch * t.data_scale
    assert ours.item() == pytest.approx(pyro_loss.item(), rel=1e-6)
    assert t.data_scale == N_DATA / x.shape[0]


def test_scaling_only_the_model_site_is_refused():
    vae, x = make_vae(), binary_batch()

    def guide_without_beta(x, beta=None):
        with vae._plate(x):
            pyro.sample("z", vae.posterior(x))

    with pytest.raises(UsageError, match="both"):
        terms(vae.model, guide_without_beta, x, beta=0.5)


def test_iwae_with_one_sample_equals_the_elbo_on_the_same_draw():
    vae, x = make_vae(), binary_batch()
    for beta in (1.0, 0.3):
        iwae = seeded(lambda: terms(vae.model, vae.guide, x, beta=beta, estimator="iwae", num_particles=1))
        elbo = seeded(lambda: terms(vae.model, vae.guide, x, beta=beta, estimator="trace", num_particles=1))
        assert torch.equal(iwae.loss, elbo.loss)


def test_iwae_is_the_per_datapoint_bound_not_a_batch_bound():
    """Computed by hand from the same draws: mean over points of log mean_k w_kn."""
    vae, x = make_vae(), binary_batch(batch=8)
    K = 50
    t = seeded(lambda: terms(vae.model, vae.guide, x, beta=1.0, estimator="iwae", num_particles=K))
    # The same draws, by hand, without Pyro: z_k ~ q(z|x), w = p(x|z) p(z) / q(z|x).
    torch.manual_seed(7)
    q = vae.posterior(x)
    z = q.rsample((K,))
    lw = (vae.observation(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)).double()
    per_point = torch.logsumexp(lw, 0) - math.log(K)
    assert t.loss.item() == pytest.approx(-per_point.mean().item(), rel=1e-5)
    batch_bound = (torch.logsumexp(lw.sum(1), 0) - math.log(K)) / x.shape[0]
    assert abs(batch_bound.item() - per_point.mean().item()) > 1e-3  # the two really differ here
    lw_ppvae = seeded(lambda: log_weights(vae.model, vae.guide, x, beta=1.0, num_particles=K))
    assert torch.allclose(lw_ppvae.double(), lw, rtol=1e-5, atol=1e-4)


def test_particles_average_the_elbo():
    vae, x = make_vae(), binary_batch()
    t = seeded(lambda: terms(vae.model, vae.guide, x, beta=1.0, estimator="trace", num_particles=4))
    # max_plate_nesting given, so Pyro does not run the guide once to guess it (that would
    # consume random draws and desynchronize the comparison).
    pyro_loss = seeded(
        lambda: Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(
            vae.model, vae.guide, x, beta=1.0
        )
    )
    assert (t.loss * t.batch * t.data_scale).item() == pytest.approx(pyro_loss.item(), rel=1e-6)


def test_analytic_and_sampled_kl_agree_within_monte_carlo_error():
    vae, x = make_vae(), binary_batch(batch=4)
    analytic = terms(vae.model, vae.guide, x, beta=1.0, estimator="meanfield").kl.item()
    draws = torch.stack([terms(vae.model, vae.guide, x, beta=1.0, estimator="trace").kl for _ in range(2000)])
    stderr = draws.std().item() / math.sqrt(len(draws))
    # 4 standard errors: a false alarm about once in 16,000 runs.
    assert abs(draws.mean().item() - analytic) < 4 * stderr


# ------------------------------------------------------------------------------ Pyro interop
def test_model_and_guide_work_with_pyro_svi_predictive_and_importance():
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = build_vae(ModelSpec(latent_dim=2, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]}), (6, 5))
    x = binary_batch(batch=64)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.02}), VAEObjective("iwae", num_particles=3))
    losses = [svi.step(x) for _ in range(60)]
    assert len(pyro.get_param_store()) > 0  # parameters reached Pyro's param store
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    pred = Predictive(vae.model, guide=vae.guide, num_samples=5, return_sites=["z"])(x)
    assert pred["z"].shape == (5, 64, 2)
    imp = Importance(vae.model, guide=vae.guide, num_samples=20).run(x[:4])
    assert math.isfinite(imp.get_log_normalizer().item())


# --------------------------------------------------------------- the exact linear-Gaussian oracle
def ppca_data(n=2000, d=6, z=2, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, z))
    b = rng.normal(size=d)
    latent = rng.normal(size=(n, z))
    return (latent @ W.T + b + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def test_exact_log_px_matches_an_independent_computation():
    from scipy.stats import multivariate_normal

    spec = ModelSpec(
        latent_dim=2, likelihood="normal", decoder="linear", likelihood_options={"scale_mode": "per_dim", "scale": 0.7}
    )
    torch.manual_seed(3)
    vae = build_vae(spec, (5,))
    x = torch.randn(10, 5)
    W = vae.decoder.linear.weight.detach().double().numpy()
    b = vae.decoder.linear.bias.detach().double().numpy()
    sigma = vae.likelihood.log_scale.exp().detach().double().numpy()  # 0.7 as stored (float32)
    cov = W @ W.T + np.diag(np.broadcast_to(sigma**2, (5,)))
    expected = multivariate_normal(b, cov).logpdf(x.double().numpy())
    np.testing.assert_allclose(exact_log_px(vae, x).numpy(), expected, rtol=1e-10)


@pytest.fixture(scope="module")
def trained_ppca():
    """Probabilistic PCA fitted by SVI (linear encoder and decoder, learned noise)."""
    torch.manual_seed(0)
    x = torch.as_tensor(ppca_data())
    spec = ModelSpec(
        latent_dim=2,
        likelihood="normal",
        decoder="linear",
        encoder_options={"hidden": []},
        likelihood_options={"scale_mode": "shared"},
    )
    vae = build_vae(spec, (6,), dataset_size=len(x), register_params=False)
    opt = torch.optim.Adam(vae.parameters(), lr=0.02)
    for step in range(1500):
        idx = torch.randint(0, len(x), (256,))
        loss = terms(vae.model, vae.guide, x[idx], beta=1.0, estimator="meanfield").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae, x


def test_bounds_are_ordered_below_exact_log_px_on_ppca(trained_ppca):
    vae, x = trained_ppca
    torch.manual_seed(11)
    exact = exact_log_px(vae, x)
    with torch.no_grad():
        elbo_pts = -torch.stack([terms(vae.model, vae.guide, x, beta=1.0, estimator="trace").loss for _ in range(1)])
    elbo_per_point = []
    with torch.no_grad():
        q = vae.posterior(x)
        for _ in range(20):
            z = q.sample()
            elbo_per_point.append((vae.observation(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)).double())
    elbo = torch.stack(elbo_per_point).mean(0)
    iwae10 = log_px_iwae(vae, x, 10)
    iwae1000 = log_px_iwae(vae, x, 1000)
    n = len(x)

    def se(v):  # standard error of a mean over the datapoints
        return v.std().item() / math.sqrt(n)

    # Paired differences over 2,000 points; tolerance 4 standard errors of each difference.
    for lower, upper in ((elbo, iwae10), (iwae10, iwae1000)):
        diff = upper - lower
        assert diff.mean().item() > -4 * se(diff)
    gap = exact - iwae1000
    assert gap.mean().item() > -4 * se(gap)  # IWAE(1000) <= exact log p(x) + MC error
    assert (exact - elbo).mean().item() > 0
    # IWAE(K=1000) within 0.5 % of exact log p(x)
    assert abs(gap.mean().item()) < 0.005 * abs(exact.mean().item())
    assert math.isfinite(elbo_pts.item())


def test_iwae_rises_toward_exact_log_px_as_k_grows(trained_ppca):
    vae, x = trained_ppca
    x = x[:500]
    torch.manual_seed(5)
    exact = exact_log_px(vae, x).mean().item()
    estimates = [log_px_iwae(vae, x, k).mean().item() for k in (1, 10, 100)]
    assert estimates[0] < estimates[1] < estimates[2] < exact + 0.01


def test_chunking_does_not_change_the_estimate(trained_ppca):
    vae, x = trained_ppca
    x = x[:50]
    torch.manual_seed(2)
    whole = log_px_iwae(vae, x, 64, max_elements=10**9)
    torch.manual_seed(2)
    chunked = log_px_iwae(vae, x, 64, max_elements=6 * 50 * 8)  # chunks of 8 samples
    # Chunks of 8 samples draw 800 normals each, a multiple of the 16 that torch's CPU sampler
    # fills at once, so the chunked and whole draws are the same numbers.
    assert torch.allclose(whole, chunked, rtol=1e-10, atol=1e-8)


def test_poutine_scale_wraps_z_in_model_and_guide():
    vae, x = make_vae(), binary_batch()
    g = poutine.trace(vae.guide).get_trace(x, beta=0.25)
    m = poutine.trace(poutine.replay(vae.model, trace=g)).get_trace(x, beta=0.25)
    s = N_DATA / x.shape[0]
    assert g.nodes["z"]["scale"] == pytest.approx(0.25 * s)
    assert m.nodes["z"]["scale"] == pytest.approx(0.25 * s)
    assert m.nodes["x"]["scale"] == pytest.approx(s)
    assert set(m.nodes["x"]["cond_indep_stack"][0].name for _ in [0]) == {"data"}
