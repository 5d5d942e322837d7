"""Hierarchical latents (model.latent_layers): the contract, the estimators' identities over
every latent site, and the exact two-layer linear-Gaussian model as the oracle of the bounds."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from click.testing import CliRunner
from pyro import poutine
from pyro.infer import Trace_ELBO

import linear_chain
import ppvae
from conftest import FAST, fit_two_layer
from ppvae.backends.pyro import VAEObjective, build_vae, log_weights, terms
from ppvae.backends.pyro.evaluation import elbo_terms, log_px_iwae
from ppvae.backends.pyro.objectives import elbo_parts, log_densities
from ppvae.cli import cli
from ppvae.errors import UsageError
from ppvae.model.hierarchy import analytic_sites
from ppvae.spec.config import ModelSpec

N_DATA = 1000  # dataset size the plate scales to


def binary_batch(batch=16, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, d, generator=g) < 0.4).float()


def two_layer(d=12, **spec):
    torch.manual_seed(1)
    spec = ModelSpec(
        latent_dim=4,
        latent_layers=(3,),
        encoder_options={"hidden": [16]},
        decoder_options={"hidden": [16]},
        latent_layer_options={"hidden": [8]},
        **spec,
    )
    return build_vae(spec, (d,), dataset_size=N_DATA, register_params=False)


def seeded(fn, seed=7):
    torch.manual_seed(seed)
    return fn()


# ------------------------------------------------------------------------------------- contract
def test_sites_plate_and_beta_scale_around_every_latent_site_in_model_and_guide():
    vae, x = two_layer(), binary_batch()
    guide = poutine.trace(vae.guide).get_trace(x, beta=0.25)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, beta=0.25)
    scale = N_DATA / len(x)
    for tr, order in ((guide, ["z1", "z2"]), (model, ["z2", "z1", "x"])):
        sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"]
        assert sites == order
        for name in order:
            assert "data" in [f.name for f in tr.nodes[name]["cond_indep_stack"]]
            expected = scale if name == "x" else 0.25 * scale
            assert tr.nodes[name]["scale"] == pytest.approx(expected)
    # z_1 of the model is drawn from p(z_1 | z_2) at the guide's z_2: replayed, not fresh.
    assert torch.equal(model.nodes["z1"]["value"], guide.nodes["z1"]["value"])
    assert model.nodes["z1"]["fn"].batch_shape == (len(x),)


def test_closed_form_kl_only_where_the_guide_drew_the_models_parents_first():
    assert analytic_sites(["z2", "z1"], ["z1", "z2"]) == {"z2"}  # bottom-up
    assert analytic_sites(["z2", "z1"], ["z2", "z1"]) == {"z1", "z2"}  # top-down
    assert analytic_sites(["z3", "z2", "z1"], ["z1", "z2", "z3"]) == {"z3"}


# ----------------------------------------------------------------------------------- identities
def test_beta_one_reproduces_the_unscaled_loss_exactly():
    vae, x = two_layer(), binary_batch()

    def plain_model(x):
        with pyro.plate("data", N_DATA, subsample=torch.arange(len(x))):
            z2 = pyro.sample("z2", vae.prior())
            z1 = pyro.sample("z1", vae._layer(vae.down[0], z2))
            pyro.sample("x", vae.observation(z1), obs=x)

    def plain_guide(x):
        with pyro.plate("data", N_DATA, subsample=torch.arange(len(x))):
            z1 = pyro.sample("z1", vae.posterior(x))
            pyro.sample("z2", vae._layer(vae.up[0], z1))

    for estimator in ("trace", "meanfield", "iwae"):
        objective = VAEObjective(estimator, num_particles=3 if estimator == "iwae" else 1)
        ours = seeded(lambda: objective.differentiable_loss(vae.model, vae.guide, x, beta=1.0))
        plain = seeded(lambda: objective.differentiable_loss(plain_model, plain_guide, x))
        assert torch.equal(ours, plain), estimator
    # Pyro's own Trace_ELBO on the same draws: the same dataset-scaled loss.
    pyro_loss = seeded(lambda: Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta=1.0))
    ours = seeded(lambda: VAEObjective("trace").differentiable_loss(vae.model, vae.guide, x, beta=1.0))
    assert ours.item() == pytest.approx(pyro_loss.item(), rel=1e-5)


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
@pytest.mark.parametrize("estimator", ["trace", "meanfield"])
@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_loss_is_reconstruction_plus_beta_kl_over_all_sites(estimator, beta, inference):
    vae, x = two_layer(inference=inference), binary_batch()
    t = seeded(lambda: terms(vae.model, vae.guide, x, beta=beta, estimator=estimator))
    assert t.loss.item() == pytest.approx(t.reconstruction.item() + beta * t.kl.item(), rel=1e-6)
    # The KL is both layers': log q(z1|x) + log q(z2|z1) - log p(z2) - log p(z1|z2) on the draw.
    if estimator == "trace":
        torch.manual_seed(7)
        guide = poutine.trace(vae.guide).get_trace(x, beta=beta)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, beta=beta)
        kl = sum(guide.nodes[s]["fn"].log_prob(guide.nodes[s]["value"]) for s in ("z1", "z2")) - sum(
            model.nodes[s]["fn"].log_prob(model.nodes[s]["value"]) for s in ("z1", "z2")
        )
        assert t.kl.item() == pytest.approx(kl.mean().item(), rel=1e-5)
    # Pyro's Trace_ELBO with the β scale in model and guide: N (reconstruction + β KL).
    pyro_loss = seeded(lambda: Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta=beta))
    if estimator == "trace":
        assert (t.loss * t.batch * t.data_scale).item() == pytest.approx(pyro_loss.item(), rel=1e-5)


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
def test_iwae_with_one_sample_equals_the_elbo_on_the_same_draw(inference):
    vae, x = two_layer(inference=inference), binary_batch()
    iwae = seeded(lambda: terms(vae.model, vae.guide, x, beta=1.0, estimator="iwae", num_particles=1))
    elbo = seeded(lambda: terms(vae.model, vae.guide, x, beta=1.0, estimator="trace"))
    assert torch.equal(iwae.loss, elbo.loss)


def test_closed_form_and_sampled_kl_agree_in_expectation():
    """Bottom-up meanfield takes only p(z2)'s KL in closed form: unbiased, so its mean is trace's."""
    vae, x = two_layer(), binary_batch(batch=8)
    torch.manual_seed(0)
    with torch.no_grad():
        mf = elbo_parts(vae.model, vae.guide, x, beta=1.0, num_particles=4000)[1]  # (K, B)
        d = log_densities(vae.model, vae.guide, x, beta=1.0, num_particles=4000)
        tr = d["log_q"] - d["log_prior"]
    # 4 standard errors of the difference of the two means (independent draws).
    se = math.sqrt(mf.mean(1).var().item() / 4000 + tr.mean(1).var().item() / 4000)
    assert abs(mf.mean().item() - tr.mean().item()) < 4 * se


def test_the_ladder_guide_draws_top_down_and_takes_every_kl_in_closed_form():
    """Sønderby et al.'s guide: z2 from the bottom-up pass, then z1 from the precision-weighted
    combination of its bottom-up Normal with the model's p(z1 | z2)."""
    vae, x = two_layer(inference="ladder"), binary_batch()
    torch.manual_seed(3)
    guide = poutine.trace(vae.guide).get_trace(x, beta=0.5)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, beta=0.5)
    assert [n for n, s in guide.nodes.items() if s["type"] == "sample" and n != "data"] == ["z2", "z1"]
    assert all(guide.nodes[n]["scale"] == pytest.approx(0.5 * N_DATA / len(x)) for n in ("z1", "z2"))
    # q(z1 | z2, x): precisions of the bottom-up estimate and of p(z1 | z2) add.
    loc1, scale1 = vae.encoder(x)
    prior = model.nodes["z1"]["fn"].base_dist
    q = guide.nodes["z1"]["fn"].base_dist
    assert torch.allclose(q.scale**-2, scale1**-2 + prior.scale**-2, rtol=1e-4)
    assert torch.allclose(q.loc * q.scale**-2, loc1 * scale1**-2 + prior.loc * prior.scale**-2, rtol=1e-4, atol=1e-5)
    # meanfield: both sites' KL in closed form on the same draw (the guide draws z2 first).
    torch.manual_seed(3)
    t = terms(vae.model, vae.guide, x, beta=0.5, estimator="meanfield")
    from pyro.distributions.kl import kl_divergence

    closed = sum(kl_divergence(guide.nodes[n]["fn"], model.nodes[n]["fn"]) for n in ("z1", "z2"))
    assert t.kl.item() == pytest.approx(closed.mean().item(), rel=1e-5)
    assert [lc.shape for lc, _ in vae.encode_layers(x)] == [(len(x), 4), (len(x), 3)]


def test_dreg_with_several_latent_sites_is_refused_in_one_line():
    vae, x = two_layer(), binary_batch()
    with pytest.raises(UsageError, match="estimator 'dreg' trains a model with one latent site; this one has 2"):
        terms(vae.model, vae.guide, x, estimator="dreg", num_particles=4)


# ------------------------------------------------------------------ the exact two-layer oracle
def linear_two_layer(d=6, inference="bottom_up"):
    """The two-layer linear-Gaussian model of :mod:`linear_chain` on the Pyro backend."""
    torch.manual_seed(2)
    spec = ModelSpec(**linear_chain.SPEC, inference=inference)
    vae = build_vae(spec, (d,), dataset_size=2000, register_params=False)
    # p(z1 | z2)'s scale must not depend on z2 for the model to stay linear-Gaussian.
    vae.down[0].head.raw_scale.weight.data.zero_()
    vae.down[0].head.raw_scale.weight.requires_grad_(False)
    return vae


def exact_two_layer_log_px(vae, x):
    def np_(t):
        return t.detach().double().numpy()

    head = vae.down[0].head
    return linear_chain.exact_log_px(
        np_(x),
        np_(vae.prior.loc),
        np_(vae.prior.scale),
        np_(head.loc.weight),
        np_(head.loc.bias),
        np_(torch.nn.functional.softplus(head.raw_scale.bias) + 1e-5),
        np_(vae.decoder.linear.weight),
        np_(vae.decoder.linear.bias),
        np_(vae.likelihood.log_scale.exp()),
    )


@pytest.fixture(scope="module", params=["bottom_up", "ladder"])
def trained_linear(request):
    x = torch.as_tensor(linear_chain.chain_data())
    vae = linear_two_layer(inference=request.param)
    opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=0.02)
    for _ in range(500):
        idx = torch.randint(0, len(x), (256,))
        loss = terms(vae.model, vae.guide, x[idx], beta=1.0, estimator="iwae", num_particles=8).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae, x


def test_every_bound_sits_below_the_exact_log_px_of_the_two_layer_linear_model(trained_linear):
    vae, x = trained_linear
    x = x[:1000]
    exact = torch.as_tensor(exact_two_layer_log_px(vae, x))
    torch.manual_seed(3)
    with torch.no_grad():
        # The ELBO of each point, averaged over 20 draws: closed-form KL where meanfield takes it, and sampled.
        meanfield = [torch.sub(*elbo_parts(vae.model, vae.guide, x, beta=1.0)[:2]) for _ in range(20)]
        bounds = {
            "meanfield": torch.stack(meanfield).mean(0),
            "trace": log_weights(vae.model, vae.guide, x, beta=1.0, num_particles=20).double().mean(0),
        }
        for k in (1, 10, 1000):
            bounds[f"iwae{k}"] = log_px_iwae(vae, x, k)

    def se(v):  # standard error of a mean over the datapoints
        return v.std().item() / math.sqrt(len(v))

    for name, bound in bounds.items():
        gap = exact - bound.double()
        assert gap.mean().item() > -4 * se(gap), name  # below log p(x), up to 4 standard errors
    # The IWAE bounds rise with K (paired over the same points, 4 standard errors) and K = 1000
    # comes within 1 % of log p(x).
    for lower, upper in (("iwae1", "iwae10"), ("iwae10", "iwae1000")):
        diff = bounds[upper] - bounds[lower]
        assert diff.mean().item() > -4 * se(diff)
    assert (exact - bounds["iwae1000"]).mean().item() < 0.01 * abs(exact.mean().item())


def test_elbo_terms_sum_both_layers_and_report_z1_codes(trained_linear):
    vae, x = trained_linear
    t = elbo_terms(vae, x[:50])
    assert t["loc"].shape == (50, 3) and torch.isnan(t["kl_per_dim"]).all()
    # One draw's KL of z1 is sampled (it can be negative for a point); its mean over points is not.
    assert t["kl"].mean() > 0 and torch.isfinite(t["reconstruction"]).all()


# ------------------------------------------------------------------------------ fit and its use
@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory, digits_npy):
    return fit_two_layer(tmp_path_factory.mktemp("hier") / "run", digits_npy)


def test_fit_samples_encodes_and_evaluates_a_two_layer_model(tmp_path, two_layer_run):
    run = two_layer_run
    assert run.config.model.latent_layers == (3,)
    # Each epoch records every layer's KL (summing to the KL) and the active units above z1.
    record = run.metrics()[-1]
    assert record["heldout_kl_z1"] + record["heldout_kl_z2"] == pytest.approx(record["heldout_kl"])
    assert 0 <= record["heldout_active_units_z2"] <= 3
    loaded = ppvae.load(run.path)
    x = loaded.heldout()[:20]
    loc, scale = loaded.encode(x)
    assert loc.shape == (20, 6)
    layers = loaded.encode_layers(x)
    assert [lc.shape for lc, _ in layers] == [(20, 6), (20, 3)] and all((s > 0).all() for _, s in layers)
    assert loaded.sample(5).shape == (5, *x.shape[1:])
    # The CLI's latents: z1 as loc and scale (what decode reads), the layer above beside it.
    result = CliRunner().invoke(cli, ["encode", str(run.path), "--out", str(tmp_path / "latents.npz")])
    assert result.exit_code == 0, result.output
    assert "(6 + 3 latent dimensions)" in result.output
    with np.load(tmp_path / "latents.npz") as f:
        assert f["loc"].shape[1] == 6 and f["loc_z2"].shape == f["scale_z2"].shape == (len(f["loc"]), 3)
    ev = loaded.evaluate(x, num_samples=20)
    assert math.isfinite(ev["heldout_log_px"]) and ev["heldout_log_px"] >= ev["heldout_elbo"] - 1.0


def test_draws_carry_the_densities_of_every_layer_so_scores_match_the_iwae_estimate(two_layer_run):
    run = ppvae.load(two_layer_run.path)
    x = run.heldout()[:10]
    d = run.trained.draws(x, 30, seed=1, predictive_draws=2)
    assert d["z"].shape == (30, 10, 6) and d["x_mean"].shape == (2, 10, *x.shape[1:])
    # log p(z2) + log p(z1|z2) - log q(z1|x) - log q(z2|z1), from the traces: the IWAE estimate
    # from these draws is the same estimator as evaluate's (different draws: 4 standard errors).
    lw = d["log_lik"] + d["log_prior"] - d["log_q"]
    from_draws = (np.logaddexp.reduce(lw, axis=0) - math.log(30)).mean()
    ev = run.trained.per_point_log_px(x, 30, seed=2)
    spread = np.std(lw, axis=0).mean() / math.sqrt(30 * 10)
    assert abs(from_draws - ev.mean()) < 4 * spread + 1.0
    scores = run.score(x, num_samples=30)
    assert np.isfinite(scores["neg_log_px"]).all()


def test_a_ladder_model_fits_samples_and_encodes_every_layer(tmp_path, digits_npy):
    run = fit_two_layer(tmp_path / "run", digits_npy, **{"model.inference": "ladder"})
    loaded = ppvae.load(run.path)
    assert loaded.config.model.inference == "ladder"
    x = loaded.heldout()[:10]
    layers = loaded.encode_layers(x)
    assert [lc.shape for lc, _ in layers] == [(10, 6), (10, 3)]
    np.testing.assert_allclose(loaded.encode(x)[0], layers[0][0], rtol=1e-6)  # z1's q, not the bottom-up estimate
    assert loaded.sample(4).shape == (4, *x.shape[1:])
    assert math.isfinite(loaded.evaluate(x, num_samples=10)["heldout_log_px"])
    # The diagnostics' draws are z1's although the ladder's guide draws z2 first.
    assert loaded.trained.draws(x, 5, seed=0)["z"].shape == (5, 10, 6)


def test_diagnose_covers_every_layer_and_refuses_a_one_site_reference(two_layer_run, tmp_path):
    from ppvae.analysis.diagnostics.diagnose import diagnose

    run = ppvae.load(two_layer_run.path)
    messages = []
    report = diagnose(run, num_points=8, num_draws=40, out=tmp_path / "diag", echo=messages.append)
    assert len(report.numbers["psis"]["khat"]) == 8
    assert any("skipping the inference gaps" in m for m in messages)
    with pytest.raises(UsageError, match="--reference nuts samples the posterior of one latent site; this run has 2"):
        diagnose(run, num_points=2, num_draws=40, reference="nuts", out=tmp_path / "diag2")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--elbo", "dreg", "--num-particles", "4"], "estimator 'dreg' trains a model with one latent site"),
        (["--prior", "vamp"], "prior 'vamp' cannot be the top layer of a hierarchical VAE"),
        (["--guide", "lowrank"], "model.guide = 'lowrank' cannot be combined with model.latent_layers yet"),
    ],
)
def test_what_a_hierarchical_model_cannot_do_yet_is_one_line(tmp_path, digits_npy, args, message):
    out = tmp_path / "r"
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            "--data",
            str(digits_npy),
            "--set",
            "model.latent_layers=[3]",
            "--epochs",
            "1",
            "--out",
            str(out),
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_bad_latent_layers_are_one_line():
    for overrides, message in (
        ({"model.latent_layers": [0]}, "model.latent_layers must be a list of positive layer sizes"),
        ({"model.latent_layer_options.hidden": [8]}, "model.latent_layers is empty"),
        (
            {"model.inference": "ladder"},
            "model.inference = 'ladder' orders the latent layers, but model.latent_layers is empty",
        ),
        (
            {"model.inference": "sideways"},
            "model.inference = 'sideways' is not valid; choose one of: bottom_up, ladder",
        ),
    ):
        from ppvae.spec.config import Config
        from ppvae.spec.plan import build_parts

        with pytest.raises(UsageError, match=message):
            build_parts(Config().with_overrides(overrides).model, (4,), "pyro")


def test_compare_runs_a_hierarchical_spec_on_both_backends(tmp_path, digits_npy):
    pytest.importorskip("numpyro")
    from ppvae.analysis.compare import compare

    result = compare(
        {"model": {"latent_dim": 4, "latent_layers": [2]}},
        backends="pyro,numpyro",
        elbos="iwae",
        epochs=1,
        out=tmp_path / "cmp",
        overrides={**FAST, "data.source": str(digits_npy), "model.latent_layer_options.hidden": [8]},
    )
    assert [(r["backend"], r["elbo"]) for r in result.rows] == [("pyro", "iwae"), ("numpyro", "iwae")]
    for row in result.rows:
        assert math.isfinite(row["metrics"]["heldout_log_px"]["mean"]), row["backend"]


@pytest.mark.parametrize("prior,likelihood", [("laplace", "normal"), ("mog", "continuous_bernoulli")])
def test_priors_and_likelihoods_of_the_zoo_plug_into_the_top_and_bottom(tmp_path, digits_npy, prior, likelihood):
    overrides = {"model.prior": prior, "model.likelihood": likelihood, "data.binarize": "none"}
    run = fit_two_layer(tmp_path / "run", digits_npy, epochs=1, **overrides)
    record = run.metrics()[-1]
    assert math.isfinite(record["heldout_elbo"]) and math.isfinite(record["heldout_kl_z2"])
