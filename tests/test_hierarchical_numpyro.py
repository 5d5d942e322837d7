"""Hierarchical latents (model.latent_layers) on the NumPyro backend: the same contract,
identities and exact two-layer linear-Gaussian oracle as tests/test_hierarchical.py (Pyro),
the weights shared with the Pyro backend, and a fit that samples, encodes and evaluates."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import optax  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.distributions.kl import kl_divergence  # noqa: E402

import linear_chain  # noqa: E402
import ppvae  # noqa: E402
from conftest import fit_two_layer  # noqa: E402
from ppvae.backends.numpyro import build_vae, initial_params, log_weights, params_from_torch, terms  # noqa: E402
from ppvae.backends.numpyro.evaluation import Evaluator  # noqa: E402
from ppvae.backends.numpyro.objectives import elbo_parts  # noqa: E402
from ppvae.errors import UsageError  # noqa: E402
from ppvae.model.hierarchy import precision_weighted  # noqa: E402
from ppvae.model.priors import prior_distribution  # noqa: E402
from ppvae.spec.config import Config, ModelSpec  # noqa: E402

N_DATA = 1000  # dataset size the plate scales to

SPEC = dict(
    latent_dim=4,
    latent_layers=(3,),
    encoder_options={"hidden": [16]},
    decoder_options={"hidden": [16]},
    latent_layer_options={"hidden": [8]},
)


def binary_batch(batch=16, d=12, seed=0):
    return (np.random.default_rng(seed).random((batch, d)) < 0.4).astype(np.float32)


@pytest.fixture(scope="module")
def two_layer():
    """A small two-layer VAE, its initial params, and the model and guide with them substituted."""
    vae = build_vae(ModelSpec(**SPEC), (12,), jax.random.PRNGKey(1), dataset_size=N_DATA)
    params = initial_params(vae)
    model = handlers.substitute(vae.model, data=params)
    guide = handlers.substitute(vae.guide, data=params)
    return vae, params, model, guide


KEY = jax.random.PRNGKey(7)


# ------------------------------------------------------------------------------------- contract
def test_sites_plate_and_beta_scale_around_every_latent_site_and_the_parts_are_named(two_layer):
    vae, params, model, guide = two_layer
    x = binary_batch()
    assert sorted(params) == ["decoder$params", "down1$params", "encoder$params", "prior$params", "up1$params"]
    guide_tr = handlers.trace(handlers.seed(guide, 0)).get_trace(x, 0.25)
    model_tr = handlers.trace(handlers.replay(handlers.seed(model, 1), guide_tr)).get_trace(x, 0.25)
    scale = N_DATA / len(x)
    for tr, order in ((guide_tr, ["z1", "z2"]), (model_tr, ["z2", "z1", "x"])):
        assert [n for n, s in tr.items() if s["type"] == "sample"] == order
        for name in order:
            assert "data" in [f.name for f in tr[name]["cond_indep_stack"]]
            assert tr[name]["scale"] == pytest.approx(scale if name == "x" else 0.25 * scale)
    # z_1 of the model is scored under p(z_1 | z_2) at the guide's z_2: replayed, not fresh.
    assert np.array_equal(model_tr["z1"]["value"], guide_tr["z1"]["value"])
    assert model_tr["z1"]["fn"].batch_shape == (len(x),)


def test_a_hierarchical_spec_leaves_the_one_layer_parts_initial_weights_alone():
    """The networks between layers take folded-in keys: encoder and decoder start as in a one-layer VAE."""
    one = initial_params(build_vae(ModelSpec(**{**SPEC, "latent_layers": (), "latent_layer_options": {}}), (12,), KEY))
    two = initial_params(build_vae(ModelSpec(**SPEC), (12,), KEY))
    for part in ("encoder$params", "decoder$params"):
        for a, b in zip(jax.tree_util.tree_leaves(one[part]), jax.tree_util.tree_leaves(two[part])):
            assert np.array_equal(a, b), part
    up, down = (jax.tree_util.tree_leaves(two[p])[0] for p in ("up1$params", "down1$params"))
    assert not np.array_equal(up[: min(up.shape[0], down.shape[0])], down[: min(up.shape[0], down.shape[0])])


# ----------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_loss_is_reconstruction_plus_beta_kl_over_all_sites(two_layer, beta):
    vae, params, model, guide = two_layer
    x = binary_batch()
    ts = {e: terms(model, guide, KEY, x, beta, estimator=e) for e in ("trace", "meanfield")}
    for estimator, t in ts.items():
        assert float(t.loss) == pytest.approx(float(t.reconstruction) + beta * float(t.kl), rel=1e-6), estimator
    # trace's KL is both layers': log q(z1|x) + log q(z2|z1) - log p(z2) - log p(z1|z2) on the
    # draw (the keys are the ones terms' seeding derives from KEY).
    guide_key, model_key = jax.random.split(KEY)
    guide_tr = handlers.trace(handlers.seed(guide, guide_key)).get_trace(x, beta)
    model_tr = handlers.trace(handlers.replay(handlers.seed(model, model_key), guide_tr)).get_trace(x, beta)
    kl = sum(
        guide_tr[s]["fn"].log_prob(guide_tr[s]["value"]) - model_tr[s]["fn"].log_prob(model_tr[s]["value"])
        for s in ("z1", "z2")
    )
    assert float(ts["trace"].kl) == pytest.approx(float(kl.mean()), rel=1e-5)
    # meanfield takes z2's KL (whose model parents the guide drew first: none) in closed form,
    # z1's sampled: the same draw of z1 and the same reconstruction, another KL.
    assert float(ts["meanfield"].reconstruction) == float(ts["trace"].reconstruction)
    assert float(ts["meanfield"].kl) != float(ts["trace"].kl)


def test_iwae_with_one_sample_equals_the_elbo_on_the_same_draw(two_layer):
    _, _, model, guide = two_layer
    x = binary_batch()
    iwae = terms(model, guide, KEY, x, 1.0, estimator="iwae", num_particles=1)
    elbo = terms(model, guide, KEY, x, 1.0, estimator="trace")
    assert float(iwae.loss) == float(elbo.loss)


def test_beta_one_reproduces_an_unscaled_hand_written_model_and_guide_exactly(two_layer):
    vae, params, _, _ = two_layer
    x = binary_batch()
    m = vae.with_params(params)

    def plate():
        return numpyro.plate("data", N_DATA, subsample_size=len(x))

    def plain_model(x):
        with handlers.substitute(data={"data": jnp.arange(len(x))}), plate():
            z2 = numpyro.sample("z2", prior_distribution(m["prior"], None))
            z1 = numpyro.sample("z1", vae.layer(m["down1"], z2))
            numpyro.sample("x", m["likelihood"](m["decoder"](z1)), obs=x)

    def plain_guide(x):
        with handlers.substitute(data={"data": jnp.arange(len(x))}), plate():
            z1 = numpyro.sample("z1", m["guide"](*m["encoder"](x)))
            numpyro.sample("z2", vae.layer(m["up1"], z1))

    ours_model = handlers.substitute(vae.model, data=params)
    ours_guide = handlers.substitute(vae.guide, data=params)
    for estimator in ("trace", "meanfield", "iwae"):
        k = 3 if estimator == "iwae" else 1
        ours = terms(ours_model, ours_guide, KEY, x, 1.0, estimator=estimator, num_particles=k)
        plain = terms(plain_model, plain_guide, KEY, x, estimator=estimator, num_particles=k)
        assert float(ours.loss) == float(plain.loss), estimator
        assert float(ours.kl) == float(plain.kl) and ours.data_scale == plain.data_scale, estimator


def test_dreg_with_several_latent_sites_is_refused_in_one_line(two_layer):
    _, _, model, guide = two_layer
    with pytest.raises(UsageError, match="estimator 'dreg' trains a model with one latent site; this one has 2"):
        terms(model, guide, KEY, binary_batch(), estimator="dreg", num_particles=4)
    # And with the rest of a configuration, before any run folder is written; the backend is
    # no longer refused.
    base = {"train.backend": "numpyro", "model.latent_layers": [3], "train.num_particles": 4}
    Config().with_overrides({**base, "train.elbo": "iwae"})
    with pytest.raises(UsageError, match="estimator 'dreg' trains a model with one latent site") as err:
        Config().with_overrides({**base, "train.elbo": "dreg"})
    assert len(str(err.value).splitlines()) == 1


def test_pyro_weights_convert_with_the_networks_between_layers():
    """A Pyro two-layer VAE's up/down weights land in the NumPyro parts up1/down1: the same functions."""
    import torch

    from ppvae.backends.pyro import build_vae as build_pyro

    torch.manual_seed(0)
    spec = ModelSpec(**SPEC)
    pyro_vae = build_pyro(spec, (12,), register_params=False)
    state = {k: v.detach().numpy() for k, v in pyro_vae.state_dict().items()}
    vae = build_vae(spec, (12,), jax.random.PRNGKey(0))
    m = vae.with_params(params_from_torch(vae, state))
    x = binary_batch()
    torch_layers = pyro_vae.encode_layers(torch.as_tensor(x))
    loc = m["encoder"](x)[0]
    jax_layers = [m["encoder"](x)[:2], *vae.bottom_up(m, loc)]
    z2 = np.asarray(torch_layers[1][0])
    down = m["down1"](z2)[:2]
    with torch.no_grad():
        torch_down = pyro_vae.down[0](torch.as_tensor(z2))[:2]
    for (a, b), (c, d) in zip(torch_layers, jax_layers):
        np.testing.assert_allclose(np.asarray(c), a.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(d), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(torch_down, down):
        np.testing.assert_allclose(np.asarray(b), a.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the exact two-layer oracle
def _frozen_raw_scale(params):
    """Where p(z1 | z2)'s scale would depend on z2: held at zero for the model to stay linear-Gaussian."""
    return params["down1$params"].head.raw_scale.weight


def exact_two_layer_log_px(vae, params, x):
    """The exact log p(x) of :mod:`linear_chain` at the NumPyro model's weights."""
    m = vae.with_params(params)
    head = m["down1"].head
    return linear_chain.exact_log_px(
        np.asarray(x, np.float64),
        m["prior"].loc,
        m["prior"].scale,
        head.loc.weight,
        head.loc.bias,
        jax.nn.softplus(head.raw_scale.bias) + 1e-5,
        m["decoder"].linear.weight,
        m["decoder"].linear.bias,
        np.exp(np.asarray(m["likelihood"].log_scale, np.float64)),
    )


@pytest.fixture(scope="module", params=["bottom_up", "ladder"])
def trained_linear(request):
    """The linear chain trained with each guide order (the ladder's guide uses down1 too)."""
    x = jnp.asarray(linear_chain.chain_data())
    spec = ModelSpec(**linear_chain.SPEC, inference=request.param)
    vae = build_vae(spec, (6,), jax.random.PRNGKey(2), dataset_size=2000)
    params = initial_params(vae)
    params = eqx.tree_at(_frozen_raw_scale, params, jnp.zeros_like(_frozen_raw_scale(params)))
    optimizer = optax.adam(0.02)

    def loss(p, key, xb):
        model = handlers.substitute(vae.model, data=p)
        guide = handlers.substitute(vae.guide, data=p)
        return terms(model, guide, key, xb, 1.0, estimator="iwae", num_particles=8).loss

    def step(carry, key):
        p, state = carry
        idx = jax.random.randint(jax.random.fold_in(key, 1), (256,), 0, x.shape[0])
        grads = jax.grad(loss)(p, key, x[idx])
        grads = eqx.tree_at(_frozen_raw_scale, grads, jnp.zeros_like(_frozen_raw_scale(grads)))
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    # 500 Adam steps in one compiled scan, as the Pyro test trains its model.
    run = jax.jit(lambda p, keys: jax.lax.scan(step, (p, optimizer.init(p)), keys)[0][0])
    params = run(params, jax.random.split(jax.random.PRNGKey(3), 500))
    assert not np.asarray(_frozen_raw_scale(params)).any()
    return vae, params, x


def test_every_bound_sits_below_the_exact_log_px_of_the_two_layer_linear_model(trained_linear):
    vae, params, x = trained_linear
    x = x[:1000]
    exact = exact_two_layer_log_px(vae, params, x)
    model = handlers.substitute(vae.model, data=params)
    guide = handlers.substitute(vae.guide, data=params)

    @jax.jit
    def meanfield(key):  # the ELBO of each point averaged over 20 draws, closed-form KLs where allowed
        log_px, kl, _ = elbo_parts(model, guide, key, x, 1.0, num_particles=20)
        return (log_px - kl).mean(0)

    # 1000 importance weights per point: their mean is the ELBO with both KLs sampled
    # (trace), groups of 10 give IWAE with K = 10; K = 1000 goes through the evaluator's
    # chunked estimate. (One compiled program for each, rather than one per K.)
    lw = jax.jit(lambda k: log_weights(model, guide, k, x, 1.0, num_particles=1000))(jax.random.PRNGKey(5))
    groups = lw.reshape(100, 10, -1)
    bounds = {
        "meanfield": meanfield(jax.random.PRNGKey(4)),
        "trace": lw.mean(0),
        "iwae10": (jax.scipy.special.logsumexp(groups, 1) - math.log(10)).mean(0),
        "iwae1000": Evaluator(vae).log_px(params, x, 1000, jax.random.PRNGKey(6), batch_size=1000),
    }
    bounds = {name: np.asarray(b, np.float64) for name, b in bounds.items()}

    def se(v):  # standard error of a mean over the datapoints
        return v.std() / math.sqrt(len(v))

    # Tolerance: 4 standard errors of the mean gap over the 1000 points (as the Pyro test).
    for name, bound in bounds.items():
        gap = exact - bound
        assert gap.mean() > -4 * se(gap), name  # below log p(x), up to 4 standard errors
    # The IWAE bounds rise with K (paired over the same points, 4 standard errors) and K = 1000
    # comes within 1 % of log p(x).
    for lower, upper in (("trace", "iwae10"), ("iwae10", "iwae1000")):
        diff = bounds[upper] - bounds[lower]
        assert diff.mean() > -4 * se(diff)
    assert (exact - bounds["iwae1000"]).mean() < 0.01 * abs(exact.mean())


def test_elbo_terms_sum_both_layers_and_report_z1_codes(trained_linear):
    vae, params, x = trained_linear
    t = Evaluator(vae).elbo_terms(params, x[:50], jax.random.PRNGKey(0))
    assert t["loc"].shape == (50, 3) and np.isnan(t["kl_per_dim"]).all()
    assert t["kl"].mean() > 0 and np.isfinite(t["reconstruction"]).all()


# ------------------------------------------------------------------------------ fit and its use
def test_fit_samples_encodes_and_evaluates_a_two_layer_model(tmp_path, digits_npy):
    run = fit_two_layer(tmp_path / "run", digits_npy, backend="numpyro")
    assert run.config.model.latent_layers == (3,) and run.config.train.backend == "numpyro"
    assert all(math.isfinite(r["loss"]) for r in run.metrics())
    # Each epoch records every layer's KL (summing to the KL) and the active units above z1, as on Pyro.
    record = run.metrics()[-1]
    assert record["heldout_kl_z1"] + record["heldout_kl_z2"] == pytest.approx(record["heldout_kl"])
    assert 0 <= record["heldout_active_units_z2"] <= 3
    loaded = ppvae.load(run.path)  # from the checkpoint: the params include up1 and down1
    assert sorted(loaded.trained.params) == sorted(run.trained.params)
    assert {"up1$params", "down1$params"} <= set(loaded.trained.params)
    x = loaded.heldout()[:20]
    loc, _ = loaded.encode(x)
    layers = loaded.encode_layers(x)
    assert [lc.shape for lc, _ in layers] == [(20, 6), (20, 3)] and all((s > 0).all() for _, s in layers)
    np.testing.assert_array_equal(layers[0][0], loc)
    assert loaded.sample(5).shape == (5, *x.shape[1:])
    ev = loaded.evaluate(x, num_samples=20)
    assert math.isfinite(ev["heldout_log_px"]) and ev["heldout_log_px"] >= ev["heldout_elbo"] - 1.0
    # draws carry z1 and the densities of both layers.
    d = loaded.trained.draws(x[:5], 8, seed=1, predictive_draws=2)
    assert d["z"].shape == (8, 5, 6) and d["x_mean"].shape == (2, 5, *x.shape[1:])
    assert np.isfinite(d["log_prior"]).all() and np.isfinite(d["log_q"]).all()


# ======================================================================= the ladder guide
# model.inference = "ladder" (Sønderby et al. 2016): its top-down order and β scale, closed-form
# KL for every site, the estimators' identities and a fit that samples, encodes and evaluates.
LADDER_SPEC = dict(
    latent_dim=4,
    latent_layers=(3,),
    inference="ladder",
    encoder_options={"hidden": [16]},
    decoder_options={"hidden": [16]},
    latent_layer_options={"hidden": [8]},
)


@pytest.fixture(scope="module")
def ladder():
    """A small two-layer ladder VAE, its initial params, and the model and guide with them substituted."""
    vae = build_vae(ModelSpec(**LADDER_SPEC), (12,), jax.random.PRNGKey(1), dataset_size=N_DATA)
    params = initial_params(vae)
    return vae, params, handlers.substitute(vae.model, data=params), handlers.substitute(vae.guide, data=params)


def traces(model, guide, key, x, beta):
    """The guide's and the replayed model's traces on the keys :func:`terms` derives from ``key``."""
    guide_key, model_key = jax.random.split(key)
    guide_tr = handlers.trace(handlers.seed(guide, guide_key)).get_trace(x, beta)
    model_tr = handlers.trace(handlers.replay(handlers.seed(model, model_key), guide_tr)).get_trace(x, beta)
    return guide_tr, model_tr


# ------------------------------------------------------------------------------------- contract
def test_the_guide_draws_top_down_inside_the_plate_and_the_beta_scale(ladder):
    vae, params, model, guide = ladder
    assert vae.inference == "ladder"
    # The ladder adds no networks: it shares the model's down1 (same params as bottom-up).
    assert sorted(params) == ["decoder$params", "down1$params", "encoder$params", "prior$params", "up1$params"]
    x = binary_batch()
    guide_tr, model_tr = traces(model, guide, KEY, x, 0.25)
    scale = N_DATA / len(x)
    for tr, order in ((guide_tr, ["z2", "z1"]), (model_tr, ["z2", "z1", "x"])):
        assert [n for n, s in tr.items() if s["type"] == "sample"] == order
        for name in order:
            assert "data" in [f.name for f in tr[name]["cond_indep_stack"]]
            assert tr[name]["scale"] == pytest.approx(scale if name == "x" else 0.25 * scale)
    # The guide's Normals are the ladder's: z2's the bottom-up estimate, z1's its estimate
    # combined with the model's p(z1 | z2) at the guide's z2.
    m = vae.with_params(params)
    loc1, scale1 = m["encoder"](x)[:2]
    loc2, scale2 = m["up1"](loc1)[:2]
    z2 = guide_tr["z2"]["value"]
    prior_loc, prior_scale = m["down1"](z2)[:2]
    want = {"z2": (loc2, scale2), "z1": precision_weighted(loc1, scale1, prior_loc, prior_scale, jnp.sqrt)}
    for site, (loc, sd) in want.items():
        np.testing.assert_allclose(guide_tr[site]["fn"].base_dist.loc, loc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(guide_tr[site]["fn"].base_dist.scale, sd, rtol=1e-5, atol=1e-6)
    # ... and the same numbers the model scores z1 with: the guide's down1 is the model's.
    np.testing.assert_allclose(model_tr["z1"]["fn"].base_dist.loc, prior_loc, rtol=1e-6)
    np.testing.assert_array_equal(model_tr["z1"]["value"], guide_tr["z1"]["value"])
    # posterior_layers (behind encode_layers) follows the ladder with z2 at its loc.
    layers = vae.posterior_layers(m, loc1, scale1)
    at_loc = precision_weighted(loc1, scale1, *m["down1"](loc2)[:2], jnp.sqrt)
    for got, expected in zip(layers, [at_loc, (loc2, scale2)]):
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-6)


# ----------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_meanfield_is_reconstruction_plus_beta_kl_with_both_sites_in_closed_form(ladder, beta):
    _, _, model, guide = ladder
    x = binary_batch()
    mf = terms(model, guide, KEY, x, beta, estimator="meanfield")
    tr = terms(model, guide, KEY, x, beta, estimator="trace")
    for t in (mf, tr):
        assert float(t.loss) == pytest.approx(float(t.reconstruction) + beta * float(t.kl), rel=1e-6)
    # The guide draws z2 before z1, as the model does, so both KLs have the closed form
    # (analytic_sites), each at the guide's draw of the layer above.
    guide_tr, model_tr = traces(model, guide, KEY, x, beta)
    closed = sum(kl_divergence(guide_tr[s]["fn"], model_tr[s]["fn"]) for s in ("z1", "z2"))
    assert float(mf.kl) == pytest.approx(float(closed.mean()), rel=1e-5)
    sampled = sum(
        guide_tr[s]["fn"].log_prob(guide_tr[s]["value"]) - model_tr[s]["fn"].log_prob(model_tr[s]["value"])
        for s in ("z1", "z2")
    )
    assert float(tr.kl) == pytest.approx(float(sampled.mean()), rel=1e-5)
    assert float(mf.reconstruction) == float(tr.reconstruction) and float(mf.kl) != float(tr.kl)


def test_the_ladders_iwae_with_one_sample_equals_its_elbo_on_the_same_draw(ladder):
    _, _, model, guide = ladder
    x = binary_batch()
    iwae = terms(model, guide, KEY, x, 1.0, estimator="iwae", num_particles=1)
    elbo = terms(model, guide, KEY, x, 1.0, estimator="trace")
    assert float(iwae.loss) == float(elbo.loss)


# (The exact two-layer oracle runs for the ladder guide above: trained_linear is parametrized
# over both inference orders.)


# ------------------------------------------------------------------------------ fit and its use
def test_fit_samples_encodes_and_evaluates_a_two_layer_ladder_model(tmp_path, digits_npy):
    run = fit_two_layer(tmp_path / "run", digits_npy, backend="numpyro", **{"model.inference": "ladder"})
    assert run.config.model.inference == "ladder" and run.config.train.backend == "numpyro"
    assert all(math.isfinite(r["loss"]) for r in run.metrics())
    record = run.metrics()[-1]
    assert record["heldout_kl_z1"] + record["heldout_kl_z2"] == pytest.approx(record["heldout_kl"])
    # The checkpoint's VAE is rebuilt with the ladder guide (the spec carries the inference).
    assert ppvae.load(run.path).trained.vae.inference == "ladder"
    # The rest on the fitted run itself, all held-out points: the programs fit's own final
    # evaluation compiled are reused (a reload would compile them again, ~5 s).
    x = run.heldout()
    layers = run.encode_layers(x)
    assert [lc.shape for lc, _ in layers] == [(len(x), 6), (len(x), 3)] and all((s > 0).all() for _, s in layers)
    # z1's pair is the ladder's precision-weighted one (what encode returns, as on Pyro): tighter
    # than the encoder's estimate alone.
    np.testing.assert_allclose(run.encode(x)[0], layers[0][0], rtol=1e-6)
    modules = run.trained.vae.with_params(run.trained.params)
    _, encoder_scale = modules["encoder"](jnp.asarray(x))[:2]
    assert (layers[0][1] < np.asarray(encoder_scale)).all()
    assert run.sample(5).shape == (5, *x.shape[1:])
    ev = run.evaluate(x, num_samples=20)
    assert math.isfinite(ev["heldout_log_px"]) and ev["heldout_log_px"] >= ev["heldout_elbo"] - 1.0
    # draws carry z1 (drawn last by the ladder guide) and the densities of both layers.
    d = run.trained.draws(x[:5], 8, seed=1, predictive_draws=2)
    assert d["z"].shape == (8, 5, 6) and d["x_mean"].shape == (2, 5, *x.shape[1:])
    assert np.isfinite(d["log_prior"]).all() and np.isfinite(d["log_q"]).all()
